//! One replica: the real operator binary as an OS process, with a JSON log
//! file per incarnation, and signals sent to its whole process tree (a
//! crashed or frozen pod takes its git children with it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use super::super::http::{self, free_local_addr};
use super::now_ns;

/// What every replica of one fixture shares.
pub struct Launch<'a> {
    pub binary: &'a Path,
    pub env: &'a super::super::Env,
    /// Where the Leases live.
    pub namespace: &'a str,
    /// `--namespace`: the namespace handled (empty: every one).
    pub watch_namespace: &'a str,
    pub prefix: &'a str,
    pub extra: &'a [String],
}

pub struct Replica {
    pub name: String,
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    /// Unix ns of the last spawn.
    pub started_ns: i128,
    pub incarnation: u32,
}

/// Where replica `name` looks for an injected fault (`src/fault.rs`).
pub fn fault_file(scratch: &Path, name: &str) -> PathBuf {
    scratch.join(format!("{name}.fault"))
}

impl Replica {
    /// Spawns incarnation `incarnation` of replica `name`; the data dir
    /// below `scratch` survives restarts, like a pod's emptyDir.
    pub fn spawn(launch: &Launch<'_>, scratch: &Path, name: &str, incarnation: u32) -> Self {
        let log_path = scratch.join(format!("{name}.{incarnation}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let addr = free_local_addr();
        let child = Command::new(launch.binary)
            .arg("run")
            .args(["--namespace", launch.watch_namespace, "--lease-namespace", launch.namespace])
            .args(["--lease-prefix", launch.prefix, "--replica", name, "--log-format", "json"])
            // Every replica checks every target; the default interval keeps 40 targets cheap.
            .args(["--access-check-interval", "5m"])
            .arg("--http-addr")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(scratch.join(format!("{name}.data")))
            .args(launch.extra)
            .env("KUBECONFIG", launch.env.var("KUBECONFIG"))
            // Test-only: the operator acts out the fault a test writes here.
            .env("GITOPS_REVERSER_FAULT_FILE", fault_file(scratch, name))
            .env("GITOPS_REVERSER_LOG_LEVEL", "info,gitops_reverser=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start gitops-reverser");
        Self { name: name.to_owned(), child: Some(child), addr, log_path, started_ns: now_ns(), incarnation }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited (a stopped process is running).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// The exit status once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().unwrap()
    }

    /// SIGKILL to the operator and every descendant.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.pid() {
            // Stopped first, so it spawns nothing while its tree is listed.
            signal(&[pid], "STOP");
            let mut tree = descendants(pid);
            tree.push(pid);
            signal(&tree, "KILL");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    pub fn sigstop(&self) {
        let pid = self.pid().expect("the replica runs");
        signal(&[pid], "STOP");
        // Children of the stopped parent can no longer change; list them now.
        let tree = descendants(pid);
        signal(&tree, "STOP");
    }

    pub fn sigcont(&self) {
        let pid = self.pid().expect("the replica runs");
        let mut tree = descendants(pid);
        tree.push(pid);
        signal(&tree, "CONT");
    }

    pub fn sigterm(&self) {
        signal(&[self.pid().expect("the replica runs")], "TERM");
    }

    /// The exit status once it has exited; the process is forgotten then.
    pub fn reap(&mut self) -> Option<ExitStatus> {
        let status = self.exit_status()?;
        self.child = None;
        Some(status)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Parsed /metrics, or None if the endpoint did not answer.
    pub fn metrics(&self) -> Option<Metrics> {
        let (code, body) = http::get(self.addr, "/metrics")?;
        (code == 200).then(|| Metrics::parse(&body))
    }

    /// The last non-DEBUG lines, for a failing test's output.
    pub fn log_tail(&self, lines: usize) -> Vec<String> {
        let logs = self.logs();
        let mut tail: Vec<String> = logs
            .lines()
            .rev()
            .filter(|l| !l.contains("\"level\":\"DEBUG\""))
            .take(lines)
            .map(String::from)
            .collect();
        tail.reverse();
        tail
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One `kill -s SIG pid...`; errors for vanished pids are expected.
fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let _ = Command::new("kill").args(["-s", sig]).args(&pids).stderr(Stdio::null()).status();
}

/// Every descendant of `root`, from /proc (parents before children).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The command name may hold spaces and parentheses; the fields after the last ')' do not.
        let Some(ppid) =
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        else {
            continue;
        };
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

/// Prometheus text: series (`name` or `name{labels}`) → value.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub Vec<(String, f64)>);

impl Metrics {
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The value of one exact series, e.g. `x_total{direction="lost"}`.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
    }

    /// Every series of metric `name`: the values of labels `keys` (empty
    /// when missing) → value.
    pub fn by_labels(&self, name: &str, keys: &[&str]) -> Vec<(Vec<String>, f64)> {
        self.0
            .iter()
            .filter_map(|(series, value)| {
                let labels = series.strip_prefix(name)?;
                let labels = labels.strip_prefix('{')?.strip_suffix('}')?;
                let values = keys.iter().map(|key| label(labels, key).unwrap_or_default()).collect();
                Some((values, *value))
            })
            .collect()
    }

    /// The sum over every series of metric `name`, None if it has none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .0
            .iter()
            .filter(|(s, _)| s == name || s.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))
            .map(|(_, v)| *v)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }
}

/// The value of label `key` in `a="x",key="y"` (values without escaped quotes).
fn label(labels: &str, key: &str) -> Option<String> {
    let mut rest = labels;
    while let Some((name, after)) = rest.split_once("=\"") {
        let (value, tail) = after.split_once('"')?;
        if name.trim_start_matches(',').trim() == key {
            return Some(value.to_owned());
        }
        rest = tail;
    }
    None
}

/// Unix ns of a JSON log line's `timestamp`.
pub fn line_time_ns(line: &serde_json::Value) -> Option<i128> {
    let ts: k8s_openapi::jiff::Timestamp = line["timestamp"].as_str()?.parse().ok()?;
    Some(ts.as_nanosecond())
}

/// The `shard` field of a log line, logged as a number or as text.
pub fn shard_field(line: &serde_json::Value) -> Option<u64> {
    line["shard"].as_u64().or_else(|| line["shard"].as_str()?.parse().ok())
}

/// The JSON log lines whose `message` is `message`.
pub fn log_events(logs: &str, message: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter(|l| l.contains(message))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series_by_label() {
        let metrics = Metrics::parse(
            "# TYPE x counter\n\
             x_total{repository=\"ssh://h:1/r.git\",branch=\"b01\"} 3\n\
             x_total{branch=\"b02\",repository=\"ssh://h:1/r.git\"} 1\n\
             x_created{repository=\"ssh://h:1/r.git\",branch=\"b01\"} 17\n",
        );
        let mut found = metrics.by_labels("x_total", &["repository", "branch"]);
        found.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            found,
            [
                (vec!["ssh://h:1/r.git".to_owned(), "b01".to_owned()], 3.0),
                (vec!["ssh://h:1/r.git".to_owned(), "b02".to_owned()], 1.0),
            ]
        );
        assert_eq!(label("a=\"1\",b=\"2\"", "c"), None);
    }
}
