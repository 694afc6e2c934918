//! Issue 4, acceptance 6 (scaling): 1 → 3 → 5 → 2 replicas under load. After
//! each step, within 2 × the lease duration every shard is held by a live
//! replica and every live replica holds shards; then the shards settle on
//! their desired owners (bounded-load rendezvous), and the shards that moved are reported against
//! the ideal fraction. Scaling down is SIGTERM, as in a Deployment. Ends
//! with acceptance 8.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::replicas::completeness::{Completeness, handover_windows};
use support::replicas::fleet::{Fleet, FleetSpec};
use support::replicas::load::{Load, check_record};
use support::replicas::stats::between;
use support::replicas::{LeaseSettings, Replicas, SHARDS, leases, now_ns};
use support::wait_for;

const SPEC: FleetSpec = FleetSpec { repos: 2, branches: 8, targets: 8, objects: 2 };
const NAMES: [&str; 5] =
    ["gitops-reverser-0", "gitops-reverser-1", "gitops-reverser-2", "gitops-reverser-3", "gitops-reverser-4"];
const SETTINGS: LeaseSettings = LeaseSettings::SHORT;
const STEPS: [usize; 3] = [3, 5, 2];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_leaves_no_shard_unowned() {
    let started = Instant::now();
    let fleet = Fleet::create("ha-scaling", SPEC).await;
    let mut replicas = Replicas::new(&fleet.client, fleet.namespace(), SETTINGS);
    replicas.start(NAMES[0]);
    let mut holders = replicas.wait_settled(&NAMES[..1], Duration::from_secs(90)).await;
    fleet.wait_converged(Duration::from_secs(120)).await;
    let load = Load::start(
        fleet.client.clone(),
        fleet.namespace(),
        fleet.target_names(),
        fleet.initial_objects(SPEC.objects),
        6.0,
    );

    let mut report = Vec::new();
    let mut current = 1;
    for target in STEPS {
        let members = &NAMES[..target];
        let begun = now_ns();
        if target > current {
            for name in &NAMES[current..target] {
                replicas.start(name);
            }
        } else {
            for name in &NAMES[target..current] {
                replicas.send_sigterm(name);
            }
            for name in &NAMES[target..current] {
                let status = replicas.wait_exit(name).await;
                assert!(status.success(), "{name} exited with {status} after SIGTERM");
            }
        }
        let live: BTreeSet<&str> = members.iter().copied().collect();
        // A new replica waits out its warm-up before any shard is its.
        let warmup = if target > current {
            gitops_reverser::shard::settings::warmup(SETTINGS.duration)
        } else {
            Duration::ZERO
        };
        let bound = SETTINGS.duration * 2 + warmup;
        let what = format!(
            "{current} → {target}: every shard held by a live replica, every live replica holding shards"
        );
        wait_for(&what, bound.saturating_sub(between(begun, now_ns())), || async {
            let now = replicas.holders().await;
            let all_live = now.iter().all(|h| h.as_deref().is_some_and(|h| live.contains(h)));
            (all_live && leases::counts(&now).len() == live.len()).then_some(())
        })
        .await;
        let covered = between(begun, now_ns());
        let after = replicas.wait_settled(members, Duration::from_secs(60)).await;
        let settled = between(begun, now_ns());
        for name in members {
            let what = format!("{name} to see no unowned shards");
            wait_for(&what, Duration::from_secs(20), || async {
                (replicas.metrics(name).await.get("gitops_reverser_unowned_shards") == Some(0.0))
                    .then_some(())
            })
            .await;
        }
        let moved = (0..SHARDS as usize).filter(|&s| after[s] != holders[s]).count();
        let ideal = f64::from(SHARDS) * (target as f64 - current as f64).abs() / target.max(current) as f64;
        report.push(format!(
            "{current} → {target}: all shards live-owned after {:.1}s (bound {:.0}s), settled after {:.1}s; \
             moved {moved} of {SHARDS} shards (ideal {ideal:.1}, {:.2} vs {:.2}); per replica {:?}",
            covered.as_secs_f64(),
            bound.as_secs_f64(),
            settled.as_secs_f64(),
            moved as f64 / f64::from(SHARDS),
            ideal / f64::from(SHARDS),
            leases::counts(&after)
        ));
        holders = after;
        current = target;
    }

    let record = load.stop().await;
    let files = fleet.wait_converged(Duration::from_secs(120)).await;
    let sealed = fleet.assert_secrets_sealed_unchurned_unleaked(&replicas.all_logs()).await;
    check_record(&fleet.client, fleet.namespace(), &record).await;
    // Scaling down is SIGTERM (drain, push, exit; the counters of the
    // replicas that left are kept from their last scrape): every value must
    // be in some commit, unless coalesced.
    // Planned handovers lose nothing; their windows only locate a loss in the report.
    let handovers = handover_windows(&fleet, &replicas, SETTINGS);
    let completeness = Completeness::measure(&fleet, &record, &replicas.coalesced());
    for line in &report {
        println!("ha_scaling: {line}");
    }
    println!(
        "ha_scaling: {} changes, {files} files equal, {sealed} sealed Secrets unchurned; {:?} in all",
        record.changes,
        started.elapsed()
    );
    println!("{}", completeness.report("ha_scaling", &[], &handovers));
    completeness.assert_explained("ha_scaling", &[], &handovers, &replicas);
}
