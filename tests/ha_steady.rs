//! Issue 4, acceptance 2 (steady state): 3 replicas, 40 GitTargets on 30
//! branches of 3 repositories, continuous changes → every branch is pushed
//! by exactly one replica (the holder of its shard), every replica owns
//! shards, and max/avg shards per replica ≤ 1.25. Ends with acceptance 8.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::replicas::completeness::{Completeness, handover_windows};
use support::replicas::fleet::{Fleet, FleetSpec};
use support::replicas::load::{Load, check_record};
use support::replicas::{LeaseSettings, Replicas, SHARDS, leases, now_ns, pushes};
use support::wait_for;

const SPEC: FleetSpec = FleetSpec { repos: 3, branches: 30, targets: 40, objects: 2 };
const NAMES: [&str; 3] = ["gitops-reverser-0", "gitops-reverser-1", "gitops-reverser-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_branch_has_one_writer_and_shards_are_balanced() {
    let started = Instant::now();
    let fleet = Fleet::create("ha-steady", SPEC).await;
    let mut replicas = Replicas::new(&fleet.client, fleet.namespace(), LeaseSettings::SHORT);
    for name in NAMES {
        replicas.start(name);
    }
    let holders = replicas.wait_settled(&NAMES, Duration::from_secs(90)).await;
    fleet.wait_converged(Duration::from_secs(120)).await;
    eprintln!("settled and initially synced after {:?}", started.elapsed());

    let mark = now_ns();
    let load = Load::start(
        fleet.client.clone(),
        fleet.namespace(),
        fleet.target_names(),
        fleet.initial_objects(SPEC.objects),
        4.0,
    );
    wait_for("120 changes", Duration::from_secs(120), || async { (load.changes() >= 120).then_some(()) })
        .await;
    let record = load.stop().await;
    let files = fleet.wait_converged(Duration::from_secs(120)).await;
    let sealed = fleet.assert_secrets_sealed_unchurned_unleaked(&replicas.all_logs()).await;
    check_record(&fleet.client, fleet.namespace(), &record).await;
    // No replica stops: every value must be in some commit, unless coalesced.
    // Planned handovers lose nothing; their windows only locate a loss in the report.
    let handovers = handover_windows(&fleet, &replicas, LeaseSettings::SHORT);
    let completeness = Completeness::measure(&fleet, &record, &replicas.coalesced());
    println!("{}", completeness.report("ha_steady", &[], &handovers));
    assert_eq!(replicas.holders().await, holders, "ownership moved although no replica changed");

    // Every branch: pushed in the steady window, by one replica, the holder of its shard.
    let pushes = fleet.pushes(mark);
    let unattributed: Vec<_> = pushes.iter().filter(|p| p.replica.is_none()).collect();
    assert!(unattributed.is_empty(), "pushes without a Replica trailer: {unattributed:?}");
    let mut writers: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for push in &pushes {
        writers
            .entry((push.repo.clone(), push.branch.clone()))
            .or_default()
            .insert(push.replica.clone().unwrap());
    }
    for (repo, branch) in fleet.branches() {
        let owner = holders[fleet.shard_of(repo, &branch, SHARDS) as usize].clone().unwrap();
        let who = writers.get(&(fleet.repo_name(repo), branch.clone())).cloned().unwrap_or_default();
        assert_eq!(
            who,
            BTreeSet::from([owner.clone()]),
            "branch {branch} of repo {repo}: writers {who:?}, shard owner {owner}\n{}",
            pushes::summary(&pushes)
        );
    }

    // Balance, from the Leases and from each replica's own gauges.
    let counts = leases::counts(&holders);
    for name in NAMES {
        let metrics = replicas.metrics(name).await;
        let owned = metrics.get("gitops_reverser_shards_owned");
        assert_eq!(owned, Some(counts.get(name).copied().unwrap_or(0) as f64), "{name}'s shards_owned gauge");
        assert_eq!(metrics.get("gitops_reverser_unowned_shards"), Some(0.0), "{name} sees unowned shards");
    }
    assert_eq!(counts.len(), NAMES.len(), "every replica owns shards: {counts:?}");
    let max = *counts.values().max().unwrap() as f64;
    let ratio = max / (f64::from(SHARDS) / NAMES.len() as f64);
    let mut branches_per_replica: BTreeMap<String, usize> = BTreeMap::new();
    for (repo, branch) in fleet.branches() {
        let owner = holders[fleet.shard_of(repo, &branch, SHARDS) as usize].clone().unwrap();
        *branches_per_replica.entry(owner).or_insert(0) += 1;
    }
    println!(
        "ha_steady: {} changes ({} retried), {} pushes on {} branches, {files} files equal, {sealed} sealed Secrets unchurned; \
         shards per replica {counts:?}, max/avg {ratio:.3}; branches per replica {branches_per_replica:?}; {:?} in all",
        record.changes,
        record.retries,
        pushes.len(),
        writers.len(),
        started.elapsed()
    );
    assert!(ratio <= 1.25, "max/avg shards per replica {ratio:.3} > 1.25: {counts:?}");
    completeness.assert_explained("ha_steady", &[], &handovers, &replicas);
}
