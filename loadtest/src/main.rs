//! Load tests for gitops-reverser against the local environment of real
//! parts (`tests/env/up`). Each scenario runs the operator as N replica
//! processes sharing one Lease set, measures, and writes `report.json`,
//! `report.md` and PNG plots into `<out>/<run>/`; the JSON is also printed.

mod apiserver;
mod cluster;
mod completeness;
mod env;
mod exposition;
mod histogram;
mod inprocess;
mod load;
mod measure;
mod plot;
mod remote;
mod replicas;
mod report;
mod run;
mod sampler;
mod scale;
mod stats;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::load::Profile;
use crate::run::{Faults, Plan};

#[derive(Parser)]
struct Cli {
    /// The operator binary to run (build it with --release first).
    #[arg(long, default_value = "target/release/gitops-reverser")]
    operator: PathBuf,
    /// Folder for the runs' reports, plots and operator logs.
    #[arg(long, default_value = "target/loadtest")]
    out: PathBuf,
    /// The git server of the run's repository: soft-serve, or the reference
    /// OpenSSH sshd with git-shell (measures the operator apart from soft-serve's cost).
    #[arg(long, value_enum, default_value_t = env::GitServer::SoftServe)]
    git_server: env::GitServer,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Settings every scenario shares.
#[derive(Args, Clone)]
struct Common {
    /// Operator replicas.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// GitTargets, each on its own branch of one repository.
    #[arg(long, default_value_t = 1)]
    targets: usize,
    /// ConfigMaps the changes are spread over (round-robin over the targets).
    #[arg(long, default_value_t = 100)]
    objects: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// push.interval of the GitProvider.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// push.maxCommits of the GitProvider.
    #[arg(long, default_value_t = 20)]
    max_commits: u32,
    /// Writes to the API server in flight at most.
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// Shards (`--shards` of every replica).
    #[arg(long, default_value_t = 32)]
    shards: usize,
    /// How long to wait after the load for the branches to equal the cluster.
    #[arg(long, default_value_t = 180.0)]
    settle: f64,
    /// Further `gitops-reverser run` flags, e.g. `--operator-arg=--lease-duration=8s`.
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
}

#[derive(Subcommand)]
enum Scenario {
    /// `rate` changes per second for `seconds`.
    Steady {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
    },
    /// A base rate plus `spike` changes at once every `every` seconds.
    Burst {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 5.0)]
        base: f64,
        #[arg(long, default_value_t = 500)]
        spike: usize,
        #[arg(long, default_value_t = 10.0)]
        every: f64,
    },
    /// `objects` ConfigMaps exist before the replicas start; time to push them all, RSS per object.
    InitialSync {
        #[command(flatten)]
        common: Common,
    },
    /// The same steady load on each replica count in `counts`.
    ScaleOut {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, value_delimiter = ',', default_value = "1,2,3,5")]
        counts: Vec<usize>,
    },
    /// Steady load; every `every` s a random replica is SIGKILLed (restarted
    /// after `restart_after` s) or SIGSTOPped for `freeze_for` s.
    Chaos {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 20.0)]
        every: f64,
        #[arg(long, default_value_t = 12.0)]
        freeze_for: f64,
        #[arg(long, default_value_t = 2.0)]
        restart_after: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Steady load; every `every` s the next replica gets SIGTERM and a replacement.
    RollingUpdate {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        every: f64,
    },
    /// The operator's pipeline in this process, no API server: synthetic
    /// ConfigMap events → route, sanitize, commit, push to the loopback server.
    InProcess {
        /// Branch workers (GitTargets `t<i>` on branches `b<i>`).
        #[arg(long, default_value_t = 1)]
        branches: usize,
        /// Repositories the branches are spread over: `b<i>` in repository
        /// `i mod repositories` (1 to `branches`).
        #[arg(long, default_value_t = 1)]
        repositories: usize,
        /// ConfigMaps, listed once first; the changes go round-robin over them.
        #[arg(long, default_value_t = 1000)]
        objects: usize,
        /// Changes to feed after the initial sync.
        #[arg(long, default_value_t = 20_000)]
        changes: usize,
        /// Changes per second; 0: as fast as the workers' queues accept.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// push.interval (the GitProvider's default).
        #[arg(long, default_value = "5s", value_parser = gitops_reverser::cli::parse_duration)]
        interval: std::time::Duration,
        /// push.maxCommits (the GitProvider's default).
        #[arg(long, default_value_t = gitops_reverser::worker::policy::DEFAULT_MAX_COMMITS)]
        max_commits: usize,
        /// Seconds to wait after the last change was fed for it to be pushed.
        #[arg(long, default_value_t = 120.0)]
        settle: f64,
        /// The pipeline's log filter (stderr), as the operator's `--log-level`.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
}

fn plan(name: &str, c: Common, profile: Profile, faults: Faults) -> Plan {
    Plan {
        scenario: name.to_owned(),
        replicas: c.replicas,
        targets: c.targets,
        objects: c.objects,
        profile,
        seconds: c.seconds,
        interval: c.interval,
        max_commits: c.max_commits,
        parallel: c.parallel,
        initial_sync: false,
        faults,
        shards: c.shards,
        operator_args: c.operator_args,
        settle_timeout: c.settle,
    }
}

fn main() -> Result<(), String> {
    // The operator's heap settings (`gitops-reverser run` sets them before
    // its runtime starts): `in-process` measures the operator's RSS, and
    // glibc's default arenas per blocking thread kept 1.7× the heap there.
    gitops_reverser::memory::limit_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run_scenario())
}

async fn run_scenario() -> Result<(), String> {
    let cli = Cli::parse();
    let root = std::env::current_dir().map_err(|e| e.to_string())?;
    let env = env::Env::up(&root)?.with_server(cli.git_server);
    let operator = root.join(&cli.operator);
    let out = root.join(&cli.out);
    let plan = match cli.scenario {
        Scenario::Steady { common, rate } => plan("steady", common, Profile::Steady { rate }, Faults::None),
        Scenario::Burst { common, base, spike, every } => {
            plan("burst", common, Profile::Burst { base, spike, every }, Faults::None)
        }
        Scenario::InitialSync { common } => Plan {
            initial_sync: true,
            ..plan("initial-sync", common, Profile::Steady { rate: 0.0 }, Faults::None)
        },
        Scenario::Chaos { common, rate, every, freeze_for, restart_after, seed } => {
            let faults = Faults::Chaos { every, freeze_for, restart_after, seed };
            plan("chaos", common, Profile::Steady { rate }, faults)
        }
        Scenario::RollingUpdate { common, rate, every } => {
            plan("rolling-update", common, Profile::Steady { rate }, Faults::Rolling { every })
        }
        Scenario::InProcess {
            branches,
            repositories,
            objects,
            changes,
            rate,
            interval,
            max_commits,
            settle,
            log_level,
        } => {
            // The operator's own log setup, so the workers' warnings show and cost what they cost there.
            let _exporter = gitops_reverser::telemetry::init(
                gitops_reverser::cli::LogFormat::Human,
                &log_level,
                "in-process",
            )?;
            // And its periodic return of freed heap pages.
            let _trimmer = AbortOnDrop(tokio::spawn(gitops_reverser::memory::trim_periodically()));
            let push =
                gitops_reverser::worker::policy::PushPolicy { interval, max_commits: max_commits.max(1) };
            let settings = inprocess::Settings {
                branches: branches.max(1),
                repositories,
                objects,
                changes,
                rate,
                push,
                settle,
            };
            let report = inprocess::run(&env, &out, settings).await?;
            println!("{report}");
            eprintln!(
                "report: {}",
                out.join(report["run"].as_str().unwrap_or_default()).join("report.md").display()
            );
            if report["lost"] != 0 {
                return Err(format!("{} changes lost", report["lost"]));
            }
            return Ok(());
        }
        Scenario::ScaleOut { common, rate, counts } => {
            let base = plan("scale-out", common, Profile::Steady { rate }, Faults::None);
            return scale::run(&env, &operator, &out, base, &counts).await;
        }
    };
    let outcome = run::execute(&env, &operator, &out, plan).await?;
    let report = report::write(&outcome)?;
    println!("{report}");
    eprintln!("report: {}", outcome.dir.join("report.md").display());
    if report["lost"] != 0 {
        return Err(format!("{} changes lost", report["lost"]));
    }
    Ok(())
}

/// Aborts the task when dropped (the trimmer runs for the scenario only).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
