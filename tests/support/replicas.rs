//! Several operator replicas as OS processes sharing one set of Leases (the
//! test's namespace, a unique prefix), with the faults of the HA tests:
//! kill -9, SIGSTOP/SIGCONT, SIGTERM, restart. Also reads each replica's
//! logs and metrics, the shard Lease holders, and who pushed what.

pub mod completeness;
pub mod fleet;
pub mod leases;
pub mod load;
pub mod mirror;
pub mod process;
pub mod pushes;
pub mod stats;

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use process::{Launch, Metrics, Replica};

/// The counter of changes merged into a pending change of the same file.
pub const COALESCED: &str = "gitops_reverser_events_coalesced_total";

/// `gitops_reverser_events_coalesced_total`, summed over replicas.
#[derive(Debug, Clone, Default)]
pub struct Coalesced {
    /// By (repository label, branch).
    pub by_branch: BTreeMap<(String, String), f64>,
    /// By replica incarnation, `<name>.<n>`, over every branch.
    pub by_incarnation: BTreeMap<String, f64>,
}

/// The number of shard Leases (the operator's default).
pub const SHARDS: u32 = 32;

/// Now as unix ns, the push log's and the Leases' time base.
pub fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128
}

/// Lease timing flags of every replica.
#[derive(Clone, Copy, Debug)]
pub struct LeaseSettings {
    pub duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub push_timeout: Duration,
}

impl LeaseSettings {
    /// The operator's defaults (not passed as flags, so the defaults are tested).
    pub const DEFAULT: Self = Self::secs(8, 5, 2, 20);
    /// Shorter, for tests that are not about the default figures. The push
    /// timeout stays at the default: it bounds a push, not the Lease.
    pub const SHORT: Self = Self::secs(6, 4, 1, 20);

    const fn secs(duration: u64, renew_deadline: u64, retry_period: u64, push_timeout: u64) -> Self {
        Self {
            duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(renew_deadline),
            retry_period: Duration::from_secs(retry_period),
            push_timeout: Duration::from_secs(push_timeout),
        }
    }

    fn args(&self) -> Vec<String> {
        if self.duration == Self::DEFAULT.duration
            && self.renew_deadline == Self::DEFAULT.renew_deadline
            && self.retry_period == Self::DEFAULT.retry_period
            && self.push_timeout == Self::DEFAULT.push_timeout
        {
            return Vec::new();
        }
        let s = |d: Duration| format!("{}ms", d.as_millis());
        vec![
            "--lease-duration".into(),
            s(self.duration),
            "--renew-deadline".into(),
            s(self.renew_deadline),
            "--retry-period".into(),
            s(self.retry_period),
            "--push-timeout".into(),
            s(self.push_timeout),
        ]
    }
}

pub struct Replicas {
    env: &'static super::Env,
    client: kube::Client,
    pub namespace: String,
    pub prefix: String,
    pub settings: LeaseSettings,
    extra: Vec<String>,
    /// The namespace the replicas handle (`--namespace`); empty: every one.
    watch_namespace: String,
    binary: std::path::PathBuf,
    // Before `scratch`: fields drop in order, and the processes must die before their files go.
    replicas: BTreeMap<String, Replica>,
    incarnations: BTreeMap<String, u32>,
    /// The last /metrics each incarnation answered, kept after it stopped:
    /// counters of a replica that is gone still count.
    scrapes: Mutex<BTreeMap<(String, u32), Metrics>>,
    scratch: tempfile::TempDir,
}

impl Replicas {
    /// No replica runs yet; the Leases live in `namespace`.
    pub fn new(client: &kube::Client, namespace: &str, settings: LeaseSettings) -> Self {
        let scratch = tempfile::tempdir().unwrap();
        // A copy: other worktrees share the target directory and may rebuild
        // the binary while a test restarts replicas for minutes.
        let binary = scratch.path().join("gitops-reverser");
        std::fs::copy(env!("CARGO_BIN_EXE_gitops-reverser"), &binary).expect("copy the operator binary");
        Self {
            binary,
            env: super::env(),
            client: client.clone(),
            namespace: namespace.to_owned(),
            prefix: super::unique_name("ha"),
            settings,
            extra: settings.args(),
            watch_namespace: namespace.to_owned(),
            replicas: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            scrapes: Mutex::new(BTreeMap::new()),
            scratch,
        }
    }

    /// Passes `args` to every replica started from now on.
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Replicas started from now on handle every namespace, as a cluster-wide
    /// install does; the Leases stay in the fixture's namespace.
    pub fn cluster_wide(mut self) -> Self {
        self.watch_namespace.clear();
        self
    }

    /// Arms `fault` (a word of `src/fault.rs`) in the running replica `name`.
    pub fn inject(&self, name: &str, fault: &str) {
        std::fs::write(process::fault_file(self.scratch.path(), name), fault).expect("write the fault file");
    }

    /// Starts (or starts again) replica `name`.
    pub fn start(&mut self, name: &str) {
        // A fault is for the incarnation it was injected into.
        let _ = std::fs::remove_file(process::fault_file(self.scratch.path(), name));
        let incarnation = self.incarnations.entry(name.to_owned()).or_insert(0);
        *incarnation += 1;
        let launch = Launch {
            binary: &self.binary,
            env: self.env,
            namespace: &self.namespace,
            watch_namespace: &self.watch_namespace,
            prefix: &self.prefix,
            extra: &self.extra,
        };
        let replica = Replica::spawn(&launch, self.scratch.path(), name, *incarnation);
        self.replicas.insert(name.to_owned(), replica);
    }

    pub fn replica(&self, name: &str) -> &Replica {
        self.replicas.get(name).unwrap_or_else(|| panic!("no replica {name}"))
    }

    fn replica_mut(&mut self, name: &str) -> &mut Replica {
        self.replicas.get_mut(name).unwrap_or_else(|| panic!("no replica {name}"))
    }

    /// Names of the replicas whose process has not exited.
    pub fn running(&mut self) -> Vec<String> {
        self.replicas.iter_mut().filter_map(|(n, r)| r.is_running().then(|| n.clone())).collect()
    }

    /// Reads the replica's /metrics now and keeps it as its incarnation's
    /// last scrape (None, and the previous scrape kept, if it did not answer).
    pub fn scrape(&self, name: &str) -> Option<Metrics> {
        let replica = self.replica(name);
        let metrics = replica.metrics()?;
        self.scrapes.lock().unwrap().insert((name.to_owned(), replica.incarnation), metrics.clone());
        Some(metrics)
    }

    /// Scrapes (so its counters survive it), then SIGKILLs; returns the
    /// unix ns just before the signal.
    pub fn kill9(&mut self, name: &str) -> i128 {
        self.scrape(name);
        let at = now_ns();
        self.replica_mut(name).kill9();
        at
    }

    /// Scrapes (a frozen process does not answer), then SIGSTOPs; returns
    /// the unix ns just before the signal.
    pub fn sigstop(&self, name: &str) -> i128 {
        self.scrape(name);
        let at = now_ns();
        self.replica(name).sigstop();
        at
    }

    pub fn sigcont(&self, name: &str) {
        self.replica(name).sigcont();
    }

    /// Scrapes, then sends SIGTERM without waiting (see [`Self::wait_exit`]).
    pub fn send_sigterm(&self, name: &str) {
        self.scrape(name);
        self.replica(name).sigterm();
    }

    /// SIGTERM and the exit status (with a deadline well past the drain).
    pub async fn sigterm(&mut self, name: &str) -> ExitStatus {
        self.send_sigterm(name);
        self.wait_exit(name).await
    }

    /// The exit status of a replica that was sent SIGTERM. Scrapes it while
    /// it drains, so its counters are kept as they were at the last answer.
    pub async fn wait_exit(&mut self, name: &str) -> ExitStatus {
        let timeout = Duration::from_secs(30);
        let started = std::time::Instant::now();
        loop {
            self.scrape(name);
            if let Some(status) = self.replica_mut(name).reap() {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for replica {name} to exit"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `gitops_reverser_events_coalesced_total` over every incarnation of
    /// every replica: the last scrape of the ones that are gone, a fresh one
    /// of the running ones.
    pub fn coalesced(&mut self) -> Coalesced {
        for name in self.running() {
            self.scrape(&name);
        }
        let mut sum = Coalesced::default();
        for ((name, incarnation), metrics) in self.scrapes.lock().unwrap().iter() {
            for (labels, value) in metrics.by_labels(COALESCED, &["repository", "branch"]) {
                let [repository, branch] = <[String; 2]>::try_from(labels).expect("two labels");
                *sum.by_branch.entry((repository, branch)).or_insert(0.0) += value;
                *sum.by_incarnation.entry(format!("{name}.{incarnation}")).or_insert(0.0) += value;
            }
        }
        sum
    }

    /// A graceful restart: SIGTERM, wait for the exit, start again.
    pub async fn restart(&mut self, name: &str) -> ExitStatus {
        let status = self.sigterm(name).await;
        self.start(name);
        status
    }

    /// The log of the current incarnation of `name`.
    pub fn logs(&self, name: &str) -> String {
        self.replica(name).logs()
    }

    /// Every incarnation's log of every replica, by replica name.
    pub fn all_logs(&self) -> BTreeMap<String, String> {
        self.incarnations
            .iter()
            .map(|(name, &last)| {
                let logs = (1..=last)
                    .map(|n| std::fs::read_to_string(self.scratch.path().join(format!("{name}.{n}.log"))))
                    .filter_map(Result::ok)
                    .collect();
                (name.clone(), logs)
            })
            .collect()
    }

    /// Per shard, the first "acquired shard" logged at or after `since_ns`
    /// by any replica: (replica, unix ns).
    pub fn acquired_since(&self, since_ns: i128) -> BTreeMap<u64, (String, i128)> {
        let mut first: BTreeMap<u64, (String, i128)> = BTreeMap::new();
        for (name, logs) in self.all_logs() {
            for event in process::log_events(&logs, "acquired shard") {
                let (Some(at), Some(shard)) = (process::line_time_ns(&event), process::shard_field(&event))
                else {
                    continue;
                };
                if at >= since_ns && first.get(&shard).is_none_or(|(_, t)| at < *t) {
                    first.insert(shard, (name.clone(), at));
                }
            }
        }
        first
    }

    /// Planned handovers from the logs: per release ("released shard"), the
    /// time until the next "acquired shard" of that shard by any replica.
    pub fn handover_gaps(&self) -> Vec<(u64, Duration)> {
        let mut events: Vec<(i128, u64, bool)> = Vec::new();
        for logs in self.all_logs().values() {
            for (message, acquired) in [("released shard", false), ("acquired shard", true)] {
                for event in process::log_events(logs, message) {
                    if let (Some(at), Some(shard)) =
                        (process::line_time_ns(&event), process::shard_field(&event))
                    {
                        events.push((at, shard, acquired));
                    }
                }
            }
        }
        events.sort();
        let mut open: BTreeMap<u64, i128> = BTreeMap::new();
        let mut gaps = Vec::new();
        for (at, shard, acquired) in events {
            match (acquired, open.remove(&shard)) {
                (true, Some(released)) => gaps.push((shard, stats::between(released, at))),
                (false, _) => {
                    open.insert(shard, at);
                }
                (true, None) => {}
            }
        }
        gaps
    }

    /// The replica's metrics, waiting (with a deadline) for /metrics to answer.
    pub async fn metrics(&self, name: &str) -> Metrics {
        let replica = self.replica(name);
        super::wait_for(&format!("/metrics of {name}"), Duration::from_secs(30), || async {
            replica.metrics()
        })
        .await
    }

    /// The live holder of every shard, as the API server records it.
    pub async fn holders(&self) -> Vec<Option<String>> {
        leases::live_holders(&self.client, &self.namespace, &self.prefix, SHARDS).await
    }

    /// A poller of the shard holders every 100 ms.
    pub fn poll_holders(&self) -> leases::Poller {
        leases::Poller::start(self.client.clone(), self.namespace.clone(), self.prefix.clone(), SHARDS)
    }

    /// Waits until the placement among `members` is at rest: every shard
    /// held by one of them, and each holding ⌊S/n⌋ or ⌈S/n⌉ (the operator
    /// then moves nothing until the members change); returns the holders.
    pub async fn wait_settled(&self, members: &[&str], timeout: Duration) -> Vec<Option<String>> {
        let what = format!("every shard to be held by one of {members:?}, evenly");
        let started = std::time::Instant::now();
        let last = loop {
            let holders = self.holders().await;
            if is_settled(&holders, members) {
                return holders;
            }
            if started.elapsed() >= timeout {
                break holders;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        panic!("timed out after {timeout:?} waiting for {what}: holders {:?}", leases::counts(&last));
    }
}

/// Every shard held by one of `members`, and their loads within one of
/// each other, as the operator's placement keeps them at rest.
pub fn is_settled(holders: &[Option<String>], members: &[&str]) -> bool {
    let mut loads: BTreeMap<&str, usize> = members.iter().map(|m| (*m, 0)).collect();
    for holder in holders {
        match holder.as_deref().and_then(|h| loads.get_mut(h)) {
            Some(load) => *load += 1,
            None => return false,
        }
    }
    let floor = holders.len() / members.len().max(1);
    loads.values().all(|load| *load == floor || *load == floor + 1)
}

impl Drop for Replicas {
    fn drop(&mut self) {
        // GITOPS_REVERSER_KEEP_LOGS keeps them after a pass too, to study one.
        if std::thread::panicking() || std::env::var_os("GITOPS_REVERSER_KEEP_LOGS").is_some() {
            // Keep every incarnation's full log for the post-mortem; the scratch dir goes.
            let kept = std::env::temp_dir().join(format!("{}-logs", self.prefix));
            if std::fs::create_dir_all(&kept).is_ok() {
                for entry in std::fs::read_dir(self.scratch.path()).into_iter().flatten().flatten() {
                    if entry.path().extension().is_some_and(|e| e == "log") {
                        let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
                    }
                }
                eprintln!("--- full replica logs kept in {} ---", kept.display());
            }
            for (name, replica) in &self.replicas {
                let tail = replica.log_tail(40);
                eprintln!(
                    "--- replica {name} (incarnation {}) log, last {} lines ---",
                    replica.incarnation,
                    tail.len()
                );
                for line in tail {
                    eprintln!("{line}");
                }
            }
        }
    }
}
