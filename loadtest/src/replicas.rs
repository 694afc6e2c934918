//! The operator replicas as OS processes sharing one Lease set, and the
//! faults a scenario injects into them: SIGKILL, SIGSTOP/SIGCONT, SIGTERM.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Prefix of the member and shard Leases of every run.
pub const LEASE_PREFIX: &str = "lt";

pub struct Replica {
    pub name: String,
    /// `host:port` of its probes and `/metrics`.
    pub http_addr: String,
    child: Child,
    pub frozen: bool,
}

impl Replica {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait for the exit (SIGKILL after `grace`); returns the
    /// name and how long the exit took.
    pub async fn terminate(mut self, grace: Duration) -> (String, f64) {
        if self.frozen {
            signal(self.pid(), "CONT");
        }
        signal(self.pid(), "TERM");
        let started = Instant::now();
        while started.elapsed() < grace {
            if self.child.try_wait().ok().flatten().is_some() {
                return (self.name, started.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.name, started.elapsed().as_secs_f64())
    }
}

pub struct Fleet {
    binary: PathBuf,
    kubeconfig: String,
    namespace: String,
    dir: PathBuf,
    extra: Vec<String>,
    /// Live replicas (running or frozen), by slot.
    pub slots: Vec<Option<Replica>>,
    generation: usize,
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args(["-s", sig, &pid.to_string()]).status();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

impl Fleet {
    pub fn new(binary: PathBuf, kubeconfig: &str, namespace: &str, dir: PathBuf, extra: Vec<String>) -> Self {
        Self {
            binary,
            kubeconfig: kubeconfig.to_owned(),
            namespace: namespace.to_owned(),
            dir,
            extra,
            slots: Vec::new(),
            generation: 0,
        }
    }

    /// Starts a new replica in `slot` (named `r<slot>-<generation>`).
    pub fn start(&mut self, slot: usize) -> Result<String, String> {
        self.generation += 1;
        let name = format!("r{slot}-{}", self.generation);
        let http_addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let child = Command::new(&self.binary)
            .arg("run")
            .args(["--replica", &name, "--namespace", &self.namespace, "--lease-namespace", &self.namespace])
            .args(["--lease-prefix", LEASE_PREFIX, "--log-format", "json"])
            .args(["--http-addr", &http_addr])
            .arg("--data-dir")
            .arg(self.dir.join(format!("data-{name}")))
            .args(&self.extra)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {:?}: {e}", self.binary))?;
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        self.slots[slot] = Some(Replica { name: name.clone(), http_addr, child, frozen: false });
        Ok(name)
    }

    /// The replica in `slot`, if one is live there.
    pub fn live_in(&self, slot: usize) -> Option<&Replica> {
        self.slots.get(slot)?.as_ref()
    }

    pub fn live(&self) -> impl Iterator<Item = &Replica> {
        self.slots.iter().flatten()
    }

    /// SIGKILL; the slot is empty afterwards.
    pub fn kill(&mut self, slot: usize) -> Option<String> {
        let mut replica = self.slots.get_mut(slot)?.take()?;
        let _ = replica.child.kill();
        let _ = replica.child.wait();
        Some(replica.name)
    }

    pub fn freeze(&mut self, slot: usize) -> Option<String> {
        let replica = self.slots.get_mut(slot)?.as_mut()?;
        signal(replica.pid(), "STOP");
        replica.frozen = true;
        Some(replica.name.clone())
    }

    pub fn thaw(&mut self, slot: usize) -> Option<String> {
        let replica = self.slots.get_mut(slot)?.as_mut()?;
        signal(replica.pid(), "CONT");
        replica.frozen = false;
        Some(replica.name.clone())
    }

    /// Removes the replica from its slot (to terminate it without holding the fleet).
    pub fn take(&mut self, slot: usize) -> Option<Replica> {
        self.slots.get_mut(slot)?.take()
    }

    pub async fn terminate(&mut self, slot: usize, grace: Duration) -> Option<(String, f64)> {
        Some(self.take(slot)?.terminate(grace).await)
    }

    pub async fn terminate_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.terminate(slot, Duration::from_secs(10)).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for replica in self.slots.iter_mut().flatten() {
            if replica.frozen {
                signal(replica.pid(), "CONT");
            }
            let _ = replica.child.kill();
            let _ = replica.child.wait();
        }
    }
}

/// Resident and peak memory (KiB) and CPU seconds (user + system) of a
/// process, from /proc.
pub fn proc_usage(pid: u32, ticks_per_second: f64) -> Option<(u64, u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
    Some((kib("VmRSS:"), kib("VmHWM:"), ticks / ticks_per_second))
}

pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
