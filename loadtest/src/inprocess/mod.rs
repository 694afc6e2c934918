//! `in-process`: the operator's pipeline in this process, no API server.
//! Synthetic ConfigMap watch events go through the watch's dispatch (route +
//! sanitize) into real branch workers, which commit (gix) and push (git
//! CLI over SSH) to new repositories on the loopback git server (branch
//! `b<i>` in repository `i mod --repositories`). Measures
//! changes and commits per second up to the last push, pushes, CPU and
//! peak RSS, and checks the branches against the last values afterwards.

mod check;
mod feed;
mod objects;
mod pipeline;
mod report;
mod repos;
mod usage;

use std::path::Path;
use std::time::{Duration, Instant};

use gitops_reverser::worker::policy::PushPolicy;
use serde_json::Value;

use self::pipeline::Pipeline;
use self::usage::{Counters, Cpu};
use crate::env::Env;
use crate::histogram::{COMMIT_LAG, Histogram};
use crate::sampler::now;

/// How often the run checks whether every change was pushed. The figures
/// come from the server's push log, so this only bounds how late it stops.
const COUNTER_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct Settings {
    pub branches: usize,
    /// Repositories the branches are spread over: `b<i>` in repository `i mod repositories`.
    pub repositories: usize,
    pub objects: usize,
    pub changes: usize,
    /// Changes per second; 0 = as fast as the queues accept.
    pub rate: f64,
    pub push: PushPolicy,
    /// How long to wait after the last change was fed for it to be pushed.
    pub settle: f64,
}

impl Settings {
    /// Every repository gets a branch.
    fn validate(&self) -> Result<(), String> {
        if (1..=self.branches).contains(&self.repositories) {
            return Ok(());
        }
        Err(format!(
            "--repositories must be between 1 and --branches ({}), not {}",
            self.branches, self.repositories
        ))
    }
}

/// Everything the report is made of.
pub struct Measured {
    pub settings: Settings,
    pub run: String,
    pub started_at: f64,
    pub sync_seconds: f64,
    pub fed: feed::Fed,
    /// Seconds from the first change fed to the server's last push.
    pub last_push_seconds: f64,
    /// Every change was pushed (or coalesced) within the settle time.
    pub complete: bool,
    pub counters: Counters,
    /// The workers' event → commit lag over the load.
    pub commit_lag: Histogram,
    pub cpu: Cpu,
    pub git_server_cpu: Option<Cpu>,
    pub memory: usage::Memory,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub pushes: Vec<crate::remote::PushInfo>,
    pub verified: check::Verified,
}

/// Waits until every worker pushed its branch and holds nothing more,
/// twice in a row 100 ms apart (a worker publishes its state after each
/// item); returns the branches' tips.
async fn wait_synced(pipeline: &Pipeline, timeout: Duration) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + timeout;
    let mut calm = 0;
    loop {
        let states = pipeline.states();
        let idle = pipeline.in_channels() == 0
            && states.iter().all(|s| s.remote_tip.is_some() && s.queued == 0 && s.unpushed == 0);
        calm = if idle { calm + 1 } else { 0 };
        if calm >= 2 {
            return Ok(states.into_iter().filter_map(|s| s.remote_tip).collect());
        }
        if Instant::now() > deadline {
            return Err(format!("the initial sync was not pushed within {timeout:?}: {states:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn git_server_cpu(env: &Env, tps: f64) -> Option<Cpu> {
    let pid = std::fs::read_to_string(env.root.join(env.server().pid_file())).ok()?;
    Cpu::of(pid.trim(), tps)
}

pub async fn run(env: &Env, out: &Path, settings: Settings) -> Result<Value, String> {
    settings.validate()?;
    let started_at = now();
    let run = format!("lt-in-process-{}-{:x}", std::process::id(), (started_at * 1000.0) as u64 % 0xfffff);
    let dir = out.join(&run);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    eprintln!("run {run}: {settings:?}");
    let repos = repos::create(env, &run, settings.repositories)?;
    let tps = crate::replicas::ticks_per_second();
    let (branches, objects, changes) = (settings.branches, settings.objects.max(1), settings.changes);

    let mut pipeline = Pipeline::start(env, &repos, branches, settings.push, &dir).await?;
    let sync_started = Instant::now();
    feed::list(&mut pipeline, objects, branches).await?;
    let synced = wait_synced(&pipeline, Duration::from_secs(180)).await?;
    let sync_seconds = sync_started.elapsed().as_secs_f64();
    eprintln!("initial sync of {objects} objects pushed in {sync_seconds:.2}s; load starts");

    let metrics = pipeline.metrics.clone();
    let loadavg_before = usage::loadavg();
    let before = Counters::read(&metrics);
    let commit_lag_before = Histogram::read(&metrics.encode(), COMMIT_LAG);
    let cpu_before = Cpu::of("self", tps).unwrap_or_default();
    let server_before = git_server_cpu(env, tps);
    let rate = settings.rate;
    let mut feeding = tokio::spawn(async move {
        let fed = feed::load(&mut pipeline, objects, branches, changes, rate).await;
        (pipeline, fed)
    });
    let mut fed: Option<(Pipeline, feed::Fed)> = None;
    let mut deadline = None;
    let mut complete = true;
    // Every change ends as a pushed commit or merged into a later one.
    loop {
        tokio::select! {
            joined = &mut feeding, if fed.is_none() => {
                let (pipeline, result) = joined.map_err(|e| format!("the feeding task failed: {e}"))?;
                let done = result?;
                eprintln!("fed {} changes in {:.2}s", done.changes.len(), done.seconds);
                deadline = Some(Instant::now() + Duration::from_secs_f64(settings.settle));
                fed = Some((pipeline, done));
            }
            // Reading the counters encodes and parses the whole registry:
            // every 10 ms that took a fifth of the machine from the workers.
            _ = tokio::time::sleep(COUNTER_POLL) => {}
        }
        let c = Counters::read(&metrics).since(&before);
        if fed.is_some() && c.pushed_commits + c.coalesced + c.commit_failed >= changes as f64 {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            // Report what got through; the final check counts the rest as lost.
            eprintln!("not everything was pushed within {} s after feeding: {c:?}", settings.settle);
            complete = false;
            break;
        }
    }
    let counters = Counters::read(&metrics).since(&before);
    let commit_lag = Histogram::read(&metrics.encode(), COMMIT_LAG).since(&commit_lag_before);
    let cpu = Cpu::of("self", tps).unwrap_or_default().since(&cpu_before);
    let git_server_cpu =
        git_server_cpu(env, tps).zip(server_before).map(|(after, before)| after.since(&before));
    let memory = usage::memory_kib();
    let loadavg_after = usage::loadavg();
    let (pipeline, fed) = fed.expect("the loop ends only after feeding");
    pipeline.drain(Duration::from_secs(10)).await;

    let mirrors = repos::mirrors(env, &repos, &dir);
    let mut last: Vec<u64> = (0..objects as u64).collect();
    for change in &fed.changes {
        last[change.object] = change.seq;
    }
    let verified = check::verify(env, &mirrors, &last, &synced)?;
    let pushes = repos::pushes(&mirrors, fed.started_at)?;
    // The server's clock of its last ref update: the worker counts a change
    // pushed a little before it publishes the push in its state.
    let last_push = pushes.iter().map(|p| p.at).fold(fed.started_at, f64::max);
    let measured = Measured {
        last_push_seconds: last_push - fed.started_at,
        complete,
        settings,
        run,
        started_at,
        sync_seconds,
        fed,
        counters,
        commit_lag,
        cpu,
        git_server_cpu,
        memory,
        loadavg_before,
        loadavg_after,
        pushes,
        verified,
    };
    report::write(&dir, &measured)
}
