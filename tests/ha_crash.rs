//! Issue 4, acceptance 3 (crash): `kill -9` a replica that owns branches,
//! under load, with the default lease settings → its shards are owned
//! elsewhere and pushing resumes. Failover time = kill → first push by the
//! new owner, per branch of the victim; median and worst over 10 trials (the
//! victim is started again between trials). Ends with acceptance 8, and
//! with the per-change completeness check: every value the load wrote is in
//! some commit, except what the operator coalesced and, rarely, what a
//! killed owner had not pushed (see `FaultWindow`): its warm successor
//! writes that, unless the placement gave the shard to another member.

mod support;

use std::time::{Duration, Instant};

use support::replicas::completeness::{Completeness, fault_windows, handover_windows, standby_windows};
use support::replicas::fleet::{Fleet, FleetSpec};
use support::replicas::load::{Load, check_record};
use support::replicas::stats::{between, median_worst};
use support::replicas::{LeaseSettings, Replicas};
use support::wait_for;

const SPEC: FleetSpec = FleetSpec { repos: 2, branches: 8, targets: 8, objects: 2 };
const NAMES: [&str; 3] = ["gitops-reverser-0", "gitops-reverser-1", "gitops-reverser-2"];
const TRIALS: usize = 10;
/// Each branch changes about once a second, so a push follows a takeover soon.
const CHANGES_PER_SECOND: f64 = 6.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_owner_s_branches_fail_over() {
    let started = Instant::now();
    let fleet = Fleet::create("ha-crash", SPEC).await;
    let mut replicas = Replicas::new(&fleet.client, fleet.namespace(), LeaseSettings::DEFAULT);
    for name in NAMES {
        replicas.start(name);
    }
    replicas.wait_settled(&NAMES, Duration::from_secs(90)).await;
    fleet.wait_converged(Duration::from_secs(120)).await;
    let load = Load::start(
        fleet.client.clone(),
        fleet.namespace(),
        fleet.target_names(),
        fleet.initial_objects(SPEC.objects),
        CHANGES_PER_SECOND,
    );

    let mut per_branch = Vec::new();
    let mut per_trial = Vec::new();
    let mut takeovers = Vec::new();
    let mut windows = Vec::new();
    let mut kills = Vec::new();
    for trial in 0..TRIALS {
        let holders = replicas.wait_settled(&NAMES, Duration::from_secs(90)).await;
        // Rotate over the replicas that own branches.
        let owners: Vec<&str> =
            NAMES.iter().copied().filter(|n| !fleet.branches_of(&holders, n).is_empty()).collect();
        let victim = owners[trial % owners.len()];
        let branches = fleet.branches_of(&holders, victim);
        let shards: Vec<usize> =
            (0..holders.len()).filter(|&s| holders[s].as_deref() == Some(victim)).collect();

        let killed = replicas.kill9(victim);
        let failovers = wait_for(
            &format!("trial {trial}: pushes by new owners after killing {victim}"),
            Duration::from_secs(90),
            || async {
                let pushes = fleet.pushes(killed);
                branches
                    .iter()
                    .map(|(repo, branch)| {
                        let name = fleet.repo_name(*repo);
                        pushes
                            .iter()
                            .find(|p| {
                                p.repo == name
                                    && &p.branch == branch
                                    && p.replica.as_deref().is_some_and(|r| r != victim)
                            })
                            .map(|p| between(killed, p.at_ns))
                    })
                    .collect::<Option<Vec<Duration>>>()
            },
        )
        .await;
        let moved = wait_for(
            &format!("trial {trial}: {victim}'s shards held by others"),
            Duration::from_secs(30),
            || async {
                let now = replicas.holders().await;
                shards.iter().all(|&s| now[s].as_deref().is_some_and(|h| h != victim)).then_some(now)
            },
        )
        .await;
        let worst = failovers.iter().max().copied().unwrap_or_default();
        // The Lease part of the failover: kill → the last of its shards acquired by others.
        let acquired = replicas.acquired_since(killed);
        let takeover = shards
            .iter()
            .filter_map(|&s| acquired.get(&(s as u64)).map(|(_, at)| between(killed, *at)))
            .max()
            .unwrap_or_default();
        takeovers.push(takeover);
        let settings = LeaseSettings::DEFAULT;
        windows.extend(fault_windows(&fleet, &replicas, "kill", victim, killed, &branches, settings));
        kills.push((victim, killed));
        eprintln!(
            "trial {trial}: killed {victim} ({} shards, {} branches); its shards acquired by others after {:.1}s; \
             failover per branch {:?}; shards now {:?}",
            shards.len(),
            branches.len(),
            takeover.as_secs_f64(),
            failovers.iter().map(|d| format!("{:.1}s", d.as_secs_f64())).collect::<Vec<_>>(),
            support::replicas::leases::counts(&moved)
        );
        per_branch.extend(failovers);
        per_trial.push(worst);
        replicas.start(victim);
    }

    replicas.wait_settled(&NAMES, Duration::from_secs(90)).await;
    let record = load.stop().await;
    let files = fleet.wait_converged(Duration::from_secs(120)).await;
    let sealed = fleet.assert_secrets_sealed_unchurned_unleaked(&replicas.all_logs()).await;
    // A victim on standby for a shard held the only copy of its changes since it announced it.
    for (victim, killed) in &kills {
        windows.extend(standby_windows(&fleet, &replicas, "kill", victim, *killed));
    }
    check_record(&fleet.client, fleet.namespace(), &record).await;
    // A killed replica's commits that it had not pushed are gone with its
    // disk, but the replica the placement gives each of its shards to next
    // stood by warm (`balance::successors`, quotas included) and writes
    // them: a kill's window excuses no value. The windows only locate a
    // loss in the report. Every missing value must be one the operator
    // coalesced.
    // Planned handovers lose nothing; their windows only locate a loss in the report.
    let handovers = handover_windows(&fleet, &replicas, LeaseSettings::DEFAULT);
    let completeness = Completeness::measure(&fleet, &record, &replicas.coalesced());
    println!("{}", completeness.report("ha_crash", &windows, &handovers));
    let (median, worst) = median_worst(&per_branch);
    let (trial_median, trial_worst) = median_worst(&per_trial);
    let (takeover_median, takeover_worst) = median_worst(&takeovers);
    println!(
        "ha_crash: {TRIALS} trials, {} branch failovers: median {:.2}s, worst {:.2}s (per trial, slowest branch: median {:.2}s, worst {:.2}s); \
         kill → all its shards acquired by others: median {:.2}s, worst {:.2}s; {} changes, {files} files equal, {sealed} sealed Secrets unchurned; {:?} in all",
        per_branch.len(),
        median.as_secs_f64(),
        worst.as_secs_f64(),
        trial_median.as_secs_f64(),
        trial_worst.as_secs_f64(),
        takeover_median.as_secs_f64(),
        takeover_worst.as_secs_f64(),
        record.changes,
        started.elapsed()
    );
    assert!(per_branch.len() >= TRIALS, "every trial killed a replica with branches");
    // The hand-backs to each restarted victim are planned handovers to a
    // rejoining replica: they excuse no value either (once a known gap,
    // 1 to 3 of about 700 values in some runs before warm successors; 0 in
    // the 9 runs since).
    completeness.assert_explained("ha_crash", &[], &handovers, &replicas);
}
