//! Command-line interface. Every flag of `run` can also be set through an
//! environment variable, which is how the Helm chart configures it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::worker::limits::{self, Limits};

/// Reverse GitOps: mirrors live Kubernetes objects into Git.
#[derive(Debug, Parser)]
#[command(name = "gitops-reverser", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions of all four kinds as YAML.
    Crd {
        /// Write one file per CRD into this folder instead of printing.
        #[arg(long)]
        output_dir: Option<std::path::PathBuf>,
    },
    /// Run the operator.
    Run(Box<RunArgs>),
    /// Apply a mirrored folder back to a cluster (server-side apply;
    /// Namespaces and CRDs first).
    Restore(crate::restore::RestoreArgs),
}

/// Settings of the `run` command.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Address that serves /healthz, /readyz and /metrics.
    #[arg(long, env = "GITOPS_REVERSER_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Log line format.
    #[arg(long, env = "GITOPS_REVERSER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info` or `info,gitops_reverser=debug`.
    #[arg(long, env = "GITOPS_REVERSER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Only handle GitTargets, GitProviders and WatchRules of this namespace
    /// (and ClusterWatchRules whose sink is in it). Empty: every namespace.
    #[arg(long, env = "GITOPS_REVERSER_NAMESPACE", default_value = "")]
    pub namespace: String,

    /// Folder for the local git repositories (one per branch); an emptyDir in a pod.
    #[arg(long, env = "GITOPS_REVERSER_DATA_DIR", default_value = "/tmp/gitops-reverser")]
    pub data_dir: std::path::PathBuf,

    /// Name of the committer of every commit, and the author of those no
    /// single field manager made (syncs, repairs, deletes).
    #[arg(long, env = "GITOPS_REVERSER_COMMITTER_NAME", default_value = "gitops-reverser")]
    pub committer_name: String,

    /// Email of the committer of every commit (and author, as the name).
    #[arg(long, env = "GITOPS_REVERSER_COMMITTER_EMAIL", default_value = "gitops-reverser@configbutler.ai")]
    pub committer_email: String,

    /// This replica's name, unique among the replicas (the pod name in a
    /// cluster): it holds the Leases and is shown in Events, status and the
    /// `Replica:` commit trailer. Empty: `<hostname>-<process id>`.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub replica: String,

    /// How often each GitTarget's write access is verified again.
    #[arg(long, env = "GITOPS_REVERSER_ACCESS_CHECK_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub access_check_interval: Duration,

    /// How often each branch compares the remote's files with the cluster
    /// and repairs what differs (hand edits, lost changes); the first
    /// comparison of each branch falls somewhere in its first interval.
    #[arg(long, env = "GITOPS_REVERSER_AUDIT_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub audit_interval: Duration,

    /// Whether the SSH fetches and pushes of one repository and identity
    /// share one connection (OpenSSH ControlMaster, one handshake instead of
    /// one per git command). Turn it off for a server or proxy that must see
    /// every command as a connection of its own.
    #[arg(long, env = "GITOPS_REVERSER_SSH_CONNECTION_SHARING", default_value_t = true, action = clap::ArgAction::Set)]
    pub ssh_connection_sharing: bool,

    /// Whether each shard's next-in-line replica keeps its branches on warm
    /// standby: it receives and commits every change locally, never pushes,
    /// and drops what the owner pushed every 30 s. When the owner is
    /// killed, what it had not pushed is written by the standby instead of
    /// lost (the final state is restored either way). It costs a second
    /// watch and local commit of every change; turn it off to halve that.
    #[arg(long, env = "GITOPS_REVERSER_WARM_SUCCESSORS", default_value_t = true, action = clap::ArgAction::Set)]
    pub warm_successors: bool,

    /// Most pushes this replica runs at once, across all its branches.
    /// Beyond it, branches wait their turn and push larger batches: a git
    /// server past its ceiling slows every push down until they all time
    /// out. A push timeout halves the limit until pushes are answered again.
    #[arg(long, env = "GITOPS_REVERSER_MAX_CONCURRENT_PUSHES", default_value_t = DEFAULT_MAX_CONCURRENT_PUSHES, value_parser = parse_push_slots)]
    pub max_concurrent_pushes: usize,

    /// How watches read the objects that exist when they start: `streaming`
    /// (from the API server's watch cache; needs the WatchList feature,
    /// on by default in Kubernetes 1.32 and 1.34+), `paged` (pages of 500
    /// from etcd), or `auto` (streaming on those versions, with a fallback
    /// to pages if the server refuses).
    #[arg(long, env = "GITOPS_REVERSER_INITIAL_LIST", value_enum, default_value_t = crate::watch::InitialList::Auto)]
    pub initial_list: crate::watch::InitialList,

    /// Hosts the operator may send credentials and commits to, as globs
    /// (`*.example.com,git.internal`; `*` matches any run of characters).
    /// A GitTarget whose provider names another host is refused with a
    /// condition. Empty: any host.
    #[arg(long, env = "GITOPS_REVERSER_ALLOWED_GIT_HOSTS", value_delimiter = ',', num_args = 0..)]
    pub allowed_git_hosts: Vec<String>,

    /// The ServiceAccount that bounds every WatchRule and ClusterWatchRule
    /// that names none (Flux's `--default-service-account` lockdown): a rule
    /// mirrors only what this account, in the rule's namespace (a
    /// ClusterWatchRule: its GitTarget's), may list and watch. Unset: such
    /// rules mirror what the operator itself may read.
    #[arg(long, env = "GITOPS_REVERSER_DEFAULT_SERVICE_ACCOUNT", value_parser = parse_service_account)]
    pub default_service_account: Option<String>,

    /// The Secret, in the Lease namespace, that holds the key of the
    /// digests written into encrypted Secret files (so an unchanged Secret
    /// makes no commit). Made with a random key on first use; every replica
    /// reads the same one.
    #[arg(long, env = "GITOPS_REVERSER_DIGEST_KEY_SECRET", default_value = "gitops-reverser-sops-digest")]
    pub digest_key_secret: String,

    /// Also write (encrypted, for targets with `spec.encryption`) the
    /// Secrets skipped by default: the operator's own credentials (the
    /// Secrets GitProviders and Flux GitRepositories name, signing keys,
    /// the digest key) and Helm release records (`helm.sh/release.v1`).
    #[arg(long, env = "GITOPS_REVERSER_WRITE_ALL_SECRETS")]
    pub write_all_secrets: bool,

    /// How long the controller or the shard coordinator may go without
    /// finishing a pass before `/healthz` fails and the replica hands its
    /// shards over and exits non-zero (a hung task leaves the process up
    /// otherwise). Both turn every few seconds, an API server outage
    /// included. `0s` switches it off.
    #[arg(long, env = "GITOPS_REVERSER_STALL_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    /// How long to wait for in-flight work after SIGTERM before exiting:
    /// workers push what they hold and shards are handed over in this time.
    /// Must exceed the push timeout by more than two seconds (the time left
    /// to release the shard Leases); keep the pod's grace period longer.
    #[arg(long, env = "GITOPS_REVERSER_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Namespace of the member and shard Leases (the release namespace).
    /// Empty: the `--namespace` if set, else `default`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub lease_namespace: String,

    /// Lease names start with this (the Helm release name): `<prefix>-member-<replica>`, `<prefix>-shard-<i>`.
    #[arg(long, env = "GITOPS_REVERSER_LEASE_PREFIX", default_value = "gitops-reverser")]
    pub lease_prefix: String,

    /// Number of shards that branches are spread over; the same on every
    /// replica, and about 10× the replica count or more for an even spread.
    #[arg(long, env = "GITOPS_REVERSER_SHARDS", default_value_t = 32)]
    pub shards: u32,

    /// Others may take a shard this long after its holder's last renewal;
    /// about the failover time after a crash.
    #[arg(long, env = "GITOPS_REVERSER_LEASE_DURATION", default_value = "8s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// A replica that could not renew a shard for this long stops its work
    /// (shorter than the lease duration, so it stops before others start).
    #[arg(long, env = "GITOPS_REVERSER_RENEW_DEADLINE", default_value = "5s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// How often Leases are renewed (renew deadline > 1.2 × this).
    #[arg(long, env = "GITOPS_REVERSER_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,

    /// Bound on one push. The shard Lease bounds when a push may start, not
    /// how long it takes, so this fits the git server, not the Lease.
    #[arg(long, env = "GITOPS_REVERSER_PUSH_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub push_timeout: Duration,

    /// Most bytes one fetch may receive (`256Mi`, `1Gi`, or bytes). A
    /// server that sends more is cut off, what it sent is removed, and its
    /// GitTargets are `Available=False`, reason `RemoteTooLarge`. Every
    /// branch of the replica shares one data volume.
    #[arg(long, env = "GITOPS_REVERSER_MAX_FETCH_SIZE", default_value = "256Mi", value_parser = parse_bytes)]
    pub max_fetch_size: u64,

    /// Most objects in the pack one fetch receives (git holds about 100
    /// bytes of memory per object while it indexes them).
    #[arg(long, env = "GITOPS_REVERSER_MAX_PACK_OBJECTS", default_value_t = limits::DEFAULT_MAX_PACK_OBJECTS)]
    pub max_pack_objects: u64,

    /// Most files and folders a worker walks when it lists its branch; a
    /// tree bomb (trees naming one subtree many times over) stops here.
    #[arg(long, env = "GITOPS_REVERSER_MAX_TREE_ENTRIES", default_value_t = limits::DEFAULT_MAX_TREE_ENTRIES)]
    pub max_tree_entries: u64,

    /// Most bytes in one path of a branch.
    #[arg(long, env = "GITOPS_REVERSER_MAX_PATH_LENGTH", default_value_t = limits::DEFAULT_MAX_PATH_LENGTH)]
    pub max_path_length: u64,

    /// Most bytes in one file (or folder listing) of a branch, read from
    /// its header before its content (`16Mi`, or bytes).
    #[arg(long, env = "GITOPS_REVERSER_MAX_FILE_SIZE", default_value = "16Mi", value_parser = parse_bytes)]
    pub max_file_size: u64,
}

impl RunArgs {
    pub fn replica_name(&self) -> String {
        if !self.replica.is_empty() {
            return self.replica.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String = host
            .trim()
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
            .collect();
        let host = host.trim_matches('-');
        let host = if host.is_empty() { "gitops-reverser" } else { host };
        format!("{host}-{}", std::process::id())
    }

    /// How long a stopping or handed-over worker may take to push what it
    /// holds: the shutdown timeout less the time kept for the releases.
    pub fn drain_timeout(&self) -> Duration {
        self.shutdown_timeout.saturating_sub(RELEASE_MARGIN)
    }

    /// The limits on what a remote may make a worker receive and read.
    pub fn limits(&self) -> Limits {
        Limits {
            fetch_size: self.max_fetch_size,
            pack_objects: self.max_pack_objects,
            tree_entries: self.max_tree_entries,
            path_length: self.max_path_length,
            file_size: self.max_file_size,
        }
    }

    pub fn shard_settings(&self) -> crate::shard::ShardSettings {
        let namespace = [&self.lease_namespace, &self.namespace]
            .into_iter()
            .find(|ns| !ns.is_empty())
            .map_or_else(|| "default".to_owned(), Clone::clone);
        crate::shard::ShardSettings {
            shards: self.shards,
            namespace,
            prefix: self.lease_prefix.clone(),
            identity: self.replica_name(),
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
            push_timeout: self.push_timeout,
        }
    }
}

/// A size in bytes: a whole number, optionally with a binary unit
/// (`Ki`, `Mi`, `Gi`), as Kubernetes quantities write them.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let invalid =
        || format!("invalid size {text:?}: expected bytes, or a number with Ki, Mi or Gi, like 256Mi");
    let text = text.trim();
    let (number, shift) = match text.len().checked_sub(2).map(|at| text.split_at(at)) {
        Some((number, "Ki")) => (number, 10),
        Some((number, "Mi")) => (number, 20),
        Some((number, "Gi")) => (number, 30),
        _ => (text, 0),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let value: u64 = number.parse().map_err(|_| invalid())?;
    value.checked_mul(1 << shift).filter(|v| *v > 0).ok_or_else(|| format!("size {text:?} is out of range"))
}

fn parse_push_slots(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!("{value:?} is not a number of pushes from 1 to 256")),
    }
}

/// Default `--max-concurrent-pushes`.
pub const DEFAULT_MAX_CONCURRENT_PUSHES: usize = 4;

/// Part of the shutdown timeout kept for releasing the shard Leases after
/// the workers drained (one second was too little for an API server under
/// load: a replica exited before its last release went through).
pub const RELEASE_MARGIN: Duration = Duration::from_secs(2);

/// The least time a stopping replica keeps for committing and pushing what
/// it holds (one push of a responsive server).
pub const MIN_DRAIN: Duration = Duration::from_secs(2);

/// Format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Parses a Go-style duration made of `ms`, `s`, `m` and `h` parts, the same
/// form the CRDs accept for `push.interval`.
/// A ServiceAccount name: a DNS-1123 subdomain.
fn parse_service_account(text: &str) -> Result<String, String> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if text.len() <= 253 && text.split('.').all(label_ok) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid ServiceAccount name {text:?}: expected a DNS-1123 subdomain, like tenant-mirror"
        ))
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid =
        || format!("invalid duration {text:?}: expected a number with a unit, like 500ms, 5s, 1m30s or 2h");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(invalid()),
        };
        total = Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|part| total.checked_add(part))
            .filter(|total| *total <= MAX_DURATION)
            .ok_or_else(|| {
                format!("duration {text:?} is too long: at most {}h", MAX_DURATION.as_secs() / 3600)
            })?;
        rest = tail;
    }
    Ok(total)
}

/// The longest duration accepted anywhere (a year): longer ones would
/// overflow the clock arithmetic (`Instant + Duration` panics) and mean
/// "never" anyway.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn rejects_durations_without_units_or_with_unknown_units() {
        for bad in ["", "5", "5d", "s", "1m30", "-1s", "1..5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    /// Issue 16: `9999999999h` passed, then overflowed `Instant + Duration`.
    #[test]
    fn durations_past_a_year_are_refused_not_overflowed() {
        assert_eq!(parse_duration("8784h"), Ok(MAX_DURATION));
        for long in ["8784h1s", "9999999999h", "99999999999999999999s", "8000h8000h"] {
            let error = parse_duration(long).expect_err(long);
            assert!(error.contains("too long"), "{long}: {error}");
        }
    }

    #[test]
    fn a_default_service_account_must_be_a_valid_name() {
        assert_eq!(parse_service_account("tenant-mirror").as_deref(), Ok("tenant-mirror"));
        assert!(parse_service_account("a.b-c").is_ok());
        for bad in ["", "Mirror", "-x", "x-", "a..b", "a_b", &"a".repeat(254)] {
            assert!(parse_service_account(bad).unwrap_err().contains("DNS-1123"), "{bad:?}");
        }
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("256Mi"), Ok(256 << 20));
        assert_eq!(parse_bytes("16Mi"), Ok(16 << 20));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("4Ki"), Ok(4096));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        for bad in ["", "Mi", "1.5Mi", "-1", "1MB", "1 Mi", "0", "99999999999999999999Gi"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn the_limit_flags_default_to_the_limits_defaults() {
        let cli = Cli::try_parse_from(["gitops-reverser", "run"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("run") };
        assert_eq!(args.limits(), Limits::default());
    }

    #[test]
    fn push_slots_are_bounded() {
        assert_eq!(parse_push_slots("4"), Ok(4));
        for bad in ["0", "257", "-1", "four"] {
            assert!(parse_push_slots(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn every_run_flag_has_an_environment_variable() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        for arg in run.get_arguments().filter(|a| a.get_long().is_some()) {
            if matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            assert!(arg.get_env().is_some(), "--{} has no env var", arg.get_long().unwrap());
        }
    }
}
