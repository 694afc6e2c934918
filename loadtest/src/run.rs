//! One measured run: set up the cluster side, start the replicas, write
//! the objects, drive the load while injecting faults, check the final
//! state, and collect everything a report needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::apiserver;
use crate::cluster::{Cluster, branch_of};
use crate::completeness::{self, Completeness};
use crate::env::Env;
use crate::histogram::Histogram;
use crate::load::{self, Change, Profile};
use crate::measure::{self, Disruption, FinalCheck};
use crate::remote::{Mirror, PushInfo};
use crate::replicas::Fleet;
use crate::sampler::{self, LastScrapes, Sample, Scraped, now};

#[derive(Debug, Clone, Copy)]
pub enum Faults {
    None,
    /// Every `every` s a random replica is killed (and restarted after
    /// `restart_after` s under a new name) or frozen for `freeze_for` s.
    Chaos {
        every: f64,
        freeze_for: f64,
        restart_after: f64,
        seed: u64,
    },
    /// Every `every` s the next replica gets SIGTERM and a replacement.
    Rolling {
        every: f64,
    },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: String,
    pub replicas: usize,
    pub targets: usize,
    pub objects: usize,
    pub profile: Profile,
    pub seconds: f64,
    pub interval: String,
    pub max_commits: u32,
    pub parallel: usize,
    /// Objects exist before the replicas start (initial sync); no load.
    pub initial_sync: bool,
    pub faults: Faults,
    pub shards: usize,
    pub operator_args: Vec<String>,
    pub settle_timeout: f64,
}

pub struct Outcome {
    pub plan: Plan,
    pub dir: PathBuf,
    pub started_at: f64,
    /// When the load (or, for an initial sync, the replicas) started.
    pub load_started_at: f64,
    pub load_seconds: f64,
    pub changes: Vec<Change>,
    pub errors: usize,
    pub pushes: Vec<PushInfo>,
    pub samples: Vec<Sample>,
    /// The operator's event → commit lag over the load, all replicas.
    pub commit_lag: Histogram,
    /// The operator's push attempts over the load, all replicas.
    pub push_duration: Histogram,
    pub disruptions: Vec<Disruption>,
    pub final_check: FinalCheck,
    /// Summed RSS of the idle replicas before the objects existed (initial sync).
    pub baseline_rss_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub create_seconds: Option<f64>,
    /// The API server's requests per second over the load (for an initial
    /// sync: from the replicas' start until the branches equal the cluster).
    pub api_server_requests: apiserver::Measured,
    /// Every accepted change looked up in the full history of its branch.
    pub completeness: Completeness,
}

/// A histogram (`pick`) observed during the load, summed over replicas.
fn observed_since(
    end: &BTreeMap<String, Scraped>,
    start: &BTreeMap<String, Scraped>,
    pick: fn(&Scraped) -> &Histogram,
) -> Histogram {
    let mut total = Histogram::default();
    for (name, last) in end {
        let last = pick(last);
        total.add(&start.get(name).map_or_else(|| last.clone(), |first| last.since(pick(first))));
    }
    total
}

/// The changes coalesced during the load per replica, summed over branches.
fn coalesced_since(
    end: &BTreeMap<String, Scraped>,
    start: &BTreeMap<String, Scraped>,
) -> BTreeMap<String, f64> {
    let mut by_replica = BTreeMap::new();
    for (name, last) in end {
        for (branch, value) in &last.coalesced {
            let before = start.get(name).and_then(|s| s.coalesced.get(branch)).copied().unwrap_or(0.0);
            *by_replica.entry(name.clone()).or_insert(0.0) += value - before;
        }
    }
    by_replica
}

/// The `--push-timeout` among the operator flags (the operator's default 20 s if absent).
fn push_timeout(operator_args: &[String]) -> Duration {
    let mut args = operator_args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--push-timeout") {
            Some(rest) if rest.starts_with('=') => Some(rest[1..].to_owned()),
            Some("") => args.next().cloned(),
            _ => None,
        };
        if let Some(duration) = value.and_then(|v| gitops_reverser::cli::parse_duration(&v).ok()) {
            return duration;
        }
    }
    Duration::from_secs(20)
}

/// The longest push to soft-serve seen on the 2-core machine (3–7 s under
/// load): a push still in flight at a fault began at most this long ago,
/// whatever the (longer) push timeout allows.
const LONGEST_PUSH: Duration = Duration::from_secs(8);

/// Every accepted change looked up in the history of its branch, with the
/// fault windows of kills and freezes (see `completeness::FaultWindow`) and
/// the handover windows of planned handovers (`completeness::handover_windows`).
fn completeness_of(
    plan: &Plan,
    cluster: &Cluster,
    mirror: &Mirror<'_>,
    outcome: (&[Change], &[PushInfo], &[Disruption]),
    dir: &Path,
    coalesced_by_replica: BTreeMap<String, f64>,
    t0: f64,
) -> Completeness {
    let coalesced = coalesced_by_replica.values().sum();
    let (changes, pushes, disruptions) = outcome;
    let history: Result<BTreeMap<_, _>, String> =
        (0..plan.targets).map(|t| Ok((branch_of(t), mirror.history(&branch_of(t))?))).collect();
    let history = match mirror.fetch().and(history) {
        Ok(history) => history,
        Err(e) => {
            return Completeness {
                error: Some(e),
                coalesced,
                coalesced_by_replica,
                ..Completeness::default()
            };
        }
    };
    let interval = gitops_reverser::cli::parse_duration(&plan.interval).unwrap_or(Duration::from_secs(5));
    let faults = completeness::Faults {
        disruptions,
        logs: dir,
        url: &cluster.url,
        targets: plan.targets,
        shards: plan.shards,
        interval,
        push_timeout: push_timeout(&plan.operator_args).min(LONGEST_PUSH),
    };
    let windows = completeness::fault_windows(&faults, pushes);
    // Planned handovers lose nothing; their windows only locate a loss (`completeness::handover_windows`).
    let handovers = completeness::handover_windows(&faults, pushes);
    let checked = completeness::check(changes, plan.targets, &history, coalesced, &windows, &handovers, t0);
    Completeness { coalesced_by_replica, ..checked }
}

/// A small deterministic generator (xorshift64*), so a seed replays a run's faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % below.max(1)
    }
}

fn stamp(scenario: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("lt-{scenario}-{}-{n}-{:x}", std::process::id(), (now() * 1000.0) as u64 % 0xfffff)
}

fn summed_rss(fleet: &Fleet) -> u64 {
    let tps = crate::replicas::ticks_per_second();
    fleet.live().filter_map(|r| crate::replicas::proc_usage(r.pid(), tps)).map(|u| u.0).sum()
}

async fn record(log: &Mutex<Vec<Disruption>>, kind: &str, replica: Option<String>) {
    if let Some(replica) = replica {
        eprintln!("{kind} {replica}");
        log.lock().await.push(Disruption { at: now(), kind: kind.into(), replica });
    }
}

/// Reads the replica in `slot` once more, right before a fault strikes it.
async fn scrape_slot(fleet: &Mutex<Fleet>, slot: usize, last: &LastScrapes) {
    let target = fleet.lock().await.live_in(slot).map(|r| (r.name.clone(), r.http_addr.clone()));
    if let Some((name, addr)) = target {
        sampler::scrape_one(&name, &addr, last).await;
    }
}

async fn inject(
    fleet: &Mutex<Fleet>,
    faults: Faults,
    until: f64,
    log: &Mutex<Vec<Disruption>>,
    last: &LastScrapes,
) {
    let sleep = |s: f64| tokio::time::sleep(Duration::from_secs_f64(s.max(0.0)));
    match faults {
        Faults::None => {}
        Faults::Chaos { every, freeze_for, restart_after, seed } => {
            let mut rng = Rng(seed.max(1));
            while now() + every < until {
                sleep(every).await;
                let slots = fleet.lock().await.slots.len();
                let slot = rng.next(slots);
                scrape_slot(fleet, slot, last).await;
                if rng.next(2) == 0 {
                    record(log, "kill", fleet.lock().await.kill(slot)).await;
                    sleep(restart_after).await;
                    let started = fleet.lock().await.start(slot).ok();
                    record(log, "start", started).await;
                } else {
                    record(log, "freeze", fleet.lock().await.freeze(slot)).await;
                    sleep(freeze_for).await;
                    record(log, "thaw", fleet.lock().await.thaw(slot)).await;
                }
            }
        }
        Faults::Rolling { every } => {
            let slots = fleet.lock().await.slots.len();
            for slot in 0..slots {
                if now() + every >= until {
                    break;
                }
                sleep(every).await;
                let Some(replica) = fleet.lock().await.take(slot) else { continue };
                let (name, addr) = (replica.name.clone(), replica.http_addr.clone());
                sampler::scrape_one(&name, &addr, last).await;
                record(log, "terminate", Some(name.clone())).await;
                // Read while it drains: its counters as of its last answer count.
                let terminating = replica.terminate(Duration::from_secs(15));
                tokio::pin!(terminating);
                let (_, exit) = loop {
                    tokio::select! {
                        done = &mut terminating => break done,
                        () = tokio::time::sleep(Duration::from_millis(200)) => {
                            sampler::scrape_one(&name, &addr, last).await;
                        }
                    }
                };
                eprintln!("exited after {exit:.2}s");
                let started = fleet.lock().await.start(slot).ok();
                record(log, "start", started).await;
            }
        }
    }
}

pub async fn execute(env: &Env, operator: &Path, out: &Path, plan: Plan) -> Result<Outcome, String> {
    let started_at = now();
    let stamp = stamp(&plan.scenario);
    let dir = out.join(&stamp);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    eprintln!("run {stamp}: {plan:?}");
    let cluster =
        Cluster::create(env, operator, &stamp, plan.targets, &plan.interval, plan.max_commits).await?;
    let mut args = vec!["--shards".to_owned(), plan.shards.to_string()];
    args.extend(plan.operator_args.iter().cloned());
    let fleet = Fleet::new(operator.to_owned(), env.var("KUBECONFIG"), &cluster.namespace, dir.clone(), args);
    let fleet = Arc::new(Mutex::new(fleet));
    let start_all = |fleet: &mut Fleet| (0..plan.replicas).try_for_each(|slot| fleet.start(slot).map(drop));
    let ready_timeout = Duration::from_secs(180);

    let mut baseline_rss_kib = None;
    let mut create_seconds = None;
    if plan.initial_sync {
        // The idle replicas with nothing selected: the memory baseline.
        start_all(&mut *fleet.lock().await)?;
        cluster.wait_ready(ready_timeout).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        baseline_rss_kib = Some(summed_rss(&*fleet.lock().await));
        fleet.lock().await.terminate_all().await;
        let t = now();
        cluster.create_objects(plan.objects, 32).await?;
        create_seconds = Some(now() - t);
        eprintln!("created {} objects in {:.1}s", plan.objects, now() - t);
    }
    let last: LastScrapes = Arc::new(Mutex::new(BTreeMap::new()));
    let (stop, sampling) =
        sampler::spawn(fleet.clone(), cluster.client.clone(), &cluster.namespace, plan.shards, last.clone());
    let mirror = Mirror::new(env, &cluster, &dir);
    let disruptions = Mutex::new(Vec::new());
    let load_started_at;
    let changes;
    let mut errors = 0;
    let load_seconds;
    let api_start;
    // Each replica's metrics before the load (the sync of the objects).
    let at_start = Mutex::new(BTreeMap::new());
    let mut api_end = None;
    if plan.initial_sync {
        api_start = apiserver::fetch(&cluster.client).await;
        load_started_at = now();
        start_all(&mut *fleet.lock().await)?;
        changes = (0..plan.objects)
            .map(|j| Change { object: j, seq: j as u64, accepted: load_started_at })
            .collect();
        load_seconds = 0.0;
    } else {
        start_all(&mut *fleet.lock().await)?;
        cluster.wait_ready(ready_timeout).await?;
        cluster.create_objects(plan.objects, 16).await?;
        let synced = measure::final_check(&cluster, &mirror, Duration::from_secs(180)).await?;
        if synced.lost > 0 {
            return Err(format!("the objects were not synced before the load: {synced:?}"));
        }
        eprintln!("{} objects synced; load starts", plan.objects);
        let offsets = load::schedule(plan.profile, plan.seconds);
        sampler::scrape_all(&fleet, &at_start).await;
        api_start = apiserver::fetch(&cluster.client).await;
        load_started_at = now();
        let until = load_started_at + plan.seconds;
        let parallel = plan.parallel.min(plan.objects);
        let (driven, ()) = tokio::join!(
            load::drive(&cluster, plan.objects, &offsets, plan.objects as u64, parallel),
            inject(&fleet, plan.faults, until, &disruptions, &last),
        );
        api_end = Some(apiserver::fetch(&cluster.client).await);
        eprintln!("{} changes in {:.1}s ({} failed)", driven.changes.len(), driven.seconds, driven.errors);
        changes = driven.changes;
        errors = driven.errors;
        load_seconds = driven.seconds;
    }
    let timeout = Duration::from_secs_f64(plan.settle_timeout);
    let final_check = measure::final_check(&cluster, &mirror, timeout).await?;
    // An initial sync's load ends when the branches equal the cluster.
    let api_end = match api_end {
        Some(end) => end,
        None => apiserver::fetch(&cluster.client).await,
    };
    let api_server_requests = apiserver::measured(&api_start, &api_end);
    if let Some(e) = &api_server_requests.error {
        eprintln!("API server requests not measured: {e}");
    }
    let mut rss_after_kib = None;
    if plan.initial_sync {
        // Let the sync's transient buffers go before reading RSS.
        tokio::time::sleep(Duration::from_secs(3)).await;
        rss_after_kib = Some(summed_rss(&*fleet.lock().await));
    }
    let _ = stop.send(());
    let sampled = sampling.await.map_err(|e| e.to_string())?;
    fleet.lock().await.terminate_all().await;
    let pushes = mirror.pushes()?;
    let at_start = at_start.into_inner();
    let scraped = last.lock().await.clone();
    let disruptions = disruptions.into_inner();
    let completeness = completeness_of(
        &plan,
        &cluster,
        &mirror,
        (&changes, &pushes, &disruptions),
        &dir,
        coalesced_since(&scraped, &at_start),
        load_started_at,
    );
    if final_check.lost == 0 {
        cluster.delete().await;
    }
    Ok(Outcome {
        plan,
        dir,
        started_at,
        load_started_at,
        load_seconds,
        changes,
        errors,
        pushes,
        samples: sampled.timeline,
        commit_lag: observed_since(&scraped, &at_start, |s| &s.commit_lag),
        push_duration: observed_since(&scraped, &at_start, |s| &s.push_duration),
        disruptions,
        final_check,
        baseline_rss_kib,
        rss_after_kib,
        create_seconds,
        api_server_requests,
        completeness,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_timeout_comes_from_the_operator_flags() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(push_timeout(&args(&["--push-timeout=2s"])), Duration::from_secs(2));
        assert_eq!(
            push_timeout(&args(&["--lease-duration=4s", "--push-timeout", "1500ms"])),
            Duration::from_millis(1500)
        );
        assert_eq!(push_timeout(&args(&["--push-timeouts=9s"])), Duration::from_secs(20));
        assert_eq!(push_timeout(&[]), Duration::from_secs(20));
    }
}
