//! Issue 4, acceptance 4 (freeze): SIGSTOP a replica that owns branches (and
//! its git children) for longer than the lease duration while changes
//! continue, then SIGCONT → others took its shards, and after resuming it
//! pushes nothing on the strength of the Leases it lost: every push it makes
//! after SIGCONT follows a fresh acquire of that branch's shard. Ends with
//! acceptance 8, and with the per-change completeness check: every value the
//! load wrote is in some commit, except what the operator coalesced and,
//! rarely, what the frozen owner had not pushed: its warm successor writes
//! that, unless the placement gave the shard to another member (issue 21).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::replicas::completeness::{Completeness, fault_windows, handover_windows, standby_windows};
use support::replicas::fleet::{Fleet, FleetSpec};
use support::replicas::load::{Load, check_record};
use support::replicas::process::{line_time_ns, log_events, shard_field};
use support::replicas::stats::between;
use support::replicas::{LeaseSettings, Replicas, SHARDS, now_ns, pushes};
use support::wait_for;

const SPEC: FleetSpec = FleetSpec { repos: 2, branches: 8, targets: 8, objects: 2 };
const NAMES: [&str; 3] = ["gitops-reverser-0", "gitops-reverser-1", "gitops-reverser-2"];
const SETTINGS: LeaseSettings = LeaseSettings::SHORT;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_owner_pushes_nothing_after_it_resumes() {
    let started = Instant::now();
    let fleet = Fleet::create("ha-freeze", SPEC).await;
    let mut replicas = Replicas::new(&fleet.client, fleet.namespace(), SETTINGS);
    for name in NAMES {
        replicas.start(name);
    }
    let holders = replicas.wait_settled(&NAMES, Duration::from_secs(90)).await;
    fleet.wait_converged(Duration::from_secs(120)).await;
    let load = Load::start(
        fleet.client.clone(),
        fleet.namespace(),
        fleet.target_names(),
        fleet.initial_objects(SPEC.objects),
        6.0,
    );
    let victim = *NAMES.iter().max_by_key(|n| fleet.branches_of(&holders, n).len()).unwrap();
    let branches = fleet.branches_of(&holders, victim);
    let shards: Vec<usize> = (0..holders.len()).filter(|&s| holders[s].as_deref() == Some(victim)).collect();
    wait_for("some changes before the freeze", Duration::from_secs(30), || async {
        (load.changes() >= 16).then_some(())
    })
    .await;

    let stopped = replicas.sigstop(victim);
    // Frozen until others hold all its shards and pushed on all its branches.
    wait_for(&format!("others to take over from the frozen {victim}"), Duration::from_secs(60), || async {
        let now = replicas.holders().await;
        let taken = shards.iter().all(|&s| now[s].as_deref().is_some_and(|h| h != victim));
        let pushes = fleet.pushes(stopped);
        let resumed = branches.iter().all(|(repo, branch)| {
            let name = fleet.repo_name(*repo);
            pushes.iter().any(|p| {
                p.repo == name && &p.branch == branch && p.replica.as_deref().is_some_and(|r| r != victim)
            })
        });
        (taken && resumed).then_some(())
    })
    .await;
    let frozen_for = between(stopped, now_ns());
    assert!(frozen_for > SETTINGS.duration, "frozen only {frozen_for:?}");
    let resumed = now_ns();
    replicas.sigcont(victim);

    // It comes back as a member and gets its shards again; the load goes on meanwhile.
    replicas.wait_settled(&NAMES, Duration::from_secs(60)).await;
    let more = load.changes() + 24;
    wait_for("changes after the victim is back", Duration::from_secs(60), || async {
        (load.changes() >= more).then_some(())
    })
    .await;
    let record = load.stop().await;
    let files = fleet.wait_converged(Duration::from_secs(120)).await;
    let sealed = fleet.assert_secrets_sealed_unchurned_unleaked(&replicas.all_logs()).await;
    check_record(&fleet.client, fleet.namespace(), &record).await;
    // The frozen replica's commits that it had not pushed are never pushed
    // (its Leases are lost), but the replica the placement gives each of
    // its shards to next stood by warm and writes them: the freeze's
    // windows (see `fault_windows`) and those of the branches it was on
    // standby for (`standby_windows`) excuse no value, they only locate a
    // loss in the report. Every missing value must be one the operator
    // coalesced.
    let mut windows = fault_windows(&fleet, &replicas, "freeze", victim, stopped, &branches, SETTINGS);
    windows.extend(standby_windows(&fleet, &replicas, "freeze", victim, stopped));
    // Planned handovers lose nothing; their windows only locate a loss in the report.
    let handovers = handover_windows(&fleet, &replicas, SETTINGS);
    let completeness = Completeness::measure(&fleet, &record, &replicas.coalesced());
    println!("{}", completeness.report("ha_freeze", &windows, &handovers));

    // The victim's fresh acquires after SIGCONT, by shard (earliest).
    let logs = replicas.logs(victim);
    let mut reacquired: BTreeMap<u64, i128> = BTreeMap::new();
    for event in log_events(&logs, "acquired shard") {
        let (Some(at), Some(shard)) = (line_time_ns(&event), shard_field(&event)) else { continue };
        if at >= resumed {
            reacquired.entry(shard).and_modify(|t| *t = (*t).min(at)).or_insert(at);
        }
    }
    let lost_after = log_events(&logs, "lost shard")
        .iter()
        .filter(|e| line_time_ns(e).is_some_and(|t| t >= resumed))
        .count();
    let pushes = fleet.pushes(resumed);
    let by_victim: Vec<_> = pushes.iter().filter(|p| p.replica.as_deref() == Some(victim)).collect();
    let stale: Vec<_> = by_victim
        .iter()
        .filter(|p| {
            let shard = u64::from(fleet.shard_of(fleet.repo_index(&p.repo), &p.branch, SHARDS));
            reacquired.get(&shard).is_none_or(|&at| at >= p.at_ns)
        })
        .collect();
    let lost_metric =
        replicas.metrics(victim).await.get("gitops_reverser_shard_handovers_total{direction=\"lost\"}");
    println!(
        "ha_freeze: froze {victim} ({} shards, {} branches) for {:.1}s; after SIGCONT it logged {lost_after} \"lost shard\", \
         re-acquired {} shards, pushed {} times, {} of them without a fresh acquire; {} changes, {files} files equal, {sealed} sealed Secrets unchurned; {:?} in all",
        shards.len(),
        branches.len(),
        frozen_for.as_secs_f64(),
        reacquired.len(),
        by_victim.len(),
        stale.len(),
        record.changes,
        started.elapsed()
    );
    assert!(
        stale.is_empty(),
        "the frozen replica pushed on lost Leases after resuming: {stale:#?}\n{}",
        pushes::summary(&pushes)
    );
    assert!(lost_after > 0, "{victim} never logged \"lost shard\" after resuming");
    assert!(lost_metric.is_some_and(|n| n >= 1.0), "{victim}'s lost handovers: {lost_metric:?}");
    completeness.assert_explained("ha_freeze", &[], &handovers, &replicas);
}
