//! Issue 4, acceptance 5 (rolling restart): every replica in turn gets
//! SIGTERM (drain, release, exit 0), starts again and gets its shards back,
//! under load → zero lost changes (acceptance 8 plus the load driver's
//! record), and no shard waits for a Lease to expire: the longest ownership
//! gap of every shard (holders polled every 100 ms; a shard its replica
//! exited holding counts from the exit to the next acquire) stays below the lease
//! duration.

mod support;

use std::time::{Duration, Instant};

use support::replicas::completeness::{Completeness, handover_windows};
use support::replicas::fleet::{Fleet, FleetSpec};
use support::replicas::load::{Load, check_record};
use support::replicas::process::{line_time_ns, log_events, shard_field};
use support::replicas::stats::{between, median_worst};
use support::replicas::{LeaseSettings, Replicas, now_ns};
use support::wait_for;

const SPEC: FleetSpec = FleetSpec { repos: 3, branches: 12, targets: 16, objects: 2 };
const NAMES: [&str; 3] = ["gitops-reverser-0", "gitops-reverser-1", "gitops-reverser-2"];
const SETTINGS: LeaseSettings = LeaseSettings::SHORT;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_loses_nothing() {
    let started = Instant::now();
    let fleet = Fleet::create("ha-rolling", SPEC).await;
    let mut replicas = Replicas::new(&fleet.client, fleet.namespace(), SETTINGS);
    for name in NAMES {
        replicas.start(name);
    }
    replicas.wait_settled(&NAMES, Duration::from_secs(90)).await;
    fleet.wait_converged(Duration::from_secs(120)).await;
    let poller = replicas.poll_holders();
    let load = Load::start(
        fleet.client.clone(),
        fleet.namespace(),
        fleet.target_names(),
        fleet.initial_objects(SPEC.objects),
        6.0,
    );
    wait_for("changes before the rollout", Duration::from_secs(30), || async {
        (load.changes() >= 16).then_some(())
    })
    .await;

    let mut steps = Vec::new();
    let mut unreleased = Vec::new();
    let mut left: Vec<(u64, i128)> = Vec::new();
    for name in NAMES {
        let before = replicas.holders().await;
        let held: Vec<u64> =
            (0..before.len()).filter(|&s| before[s].as_deref() == Some(name)).map(|s| s as u64).collect();
        let owned = held.len();
        let begun = now_ns();
        let status = replicas.sigterm(name).await;
        let exit_ns = now_ns();
        let exited = between(begun, exit_ns);
        assert!(status.success(), "{name} exited with {status} after SIGTERM");
        let logs = replicas.logs(name);
        let warnings: std::collections::BTreeSet<String> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["level"] == "WARN" && line_time_ns(e).is_some_and(|t| t >= begun))
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect();
        let released_shards: std::collections::BTreeSet<u64> = log_events(&logs, "released shard")
            .iter()
            .filter(|e| line_time_ns(e).is_some_and(|t| t >= begun))
            .filter_map(shard_field)
            .collect();
        let released = released_shards.len();
        // A shard left held by the exited process has no live owner until someone acquires it.
        left.extend(held.iter().filter(|s| !released_shards.contains(s)).map(|&s| (s, exit_ns)));
        eprintln!(
            "ha_rolling: SIGTERM {name}: held {owned} shards, released {released}, exited after {:.1}s; warnings {warnings:?}",
            exited.as_secs_f64()
        );
        // The contract: drain, release every shard, then exit 0 (no Lease left to expire).
        // Checked at the end, so the end check runs (and reports) either way.
        if released < owned {
            unreleased.push(format!("{name} held {owned} shards but released {released} before exiting"));
        }
        replicas.start(name);
        replicas.wait_settled(&NAMES, Duration::from_secs(60)).await;
        steps.push(format!(
            "{name}: held {owned} shards, exit after {:.1}s, settled again after {:.1}s",
            exited.as_secs_f64(),
            between(begun, now_ns()).as_secs_f64()
        ));
    }

    let more = load.changes() + 16;
    wait_for("changes after the rollout", Duration::from_secs(30), || async {
        (load.changes() >= more).then_some(())
    })
    .await;
    let record = load.stop().await;
    let timeline = poller.stop().await;
    let files = fleet.wait_converged(Duration::from_secs(120)).await;
    let sealed = fleet.assert_secrets_sealed_unchurned_unleaked(&replicas.all_logs()).await;
    check_record(&fleet.client, fleet.namespace(), &record).await;
    // SIGTERM drains and pushes before the replica exits (its counters are
    // kept from its last scrape): every value must be in some commit, unless coalesced.
    // Planned handovers lose nothing; their windows only locate a loss in the report.
    let planned = handover_windows(&fleet, &replicas, SETTINGS);
    let completeness = Completeness::measure(&fleet, &record, &replicas.coalesced());
    println!("{}", completeness.report("ha_rolling", &[], &planned));

    let mut gaps = timeline.longest_gaps_ms();
    // Shards a replica exited holding: from its exit to the next acquire.
    for &(shard, exit_ns) in &left {
        if let Some((_, at)) = replicas.acquired_since(exit_ns).get(&shard) {
            let gap = between(exit_ns, *at).as_millis() as u64;
            gaps[shard as usize] = gaps[shard as usize].max(gap);
        }
    }
    let logged: Vec<Duration> = replicas.handover_gaps().into_iter().map(|(_, gap)| gap).collect();
    let (logged_median, logged_worst) = median_worst(&logged);
    let handovers: usize = timeline.handovers().iter().sum();
    let longest = gaps.iter().copied().max().unwrap_or(0);
    for step in &steps {
        eprintln!("ha_rolling: {step}");
    }
    println!(
        "ha_rolling: {} planned handovers in the logs (released → acquired): median {} ms, worst {} ms",
        logged.len(),
        logged_median.as_millis(),
        logged_worst.as_millis()
    );
    println!(
        "ha_rolling: longest ownership gap per shard (ms) {gaps:?}; worst {longest} ms over {handovers} handovers \
         ({} samples; {} shards left held by an exited replica); {} changes ({} retried), {files} files equal, {sealed} sealed Secrets unchurned; {:?} in all",
        timeline.samples(),
        left.len(),
        record.changes,
        record.retries,
        started.elapsed()
    );
    assert!(handovers >= NAMES.len(), "the rollout moved no shards? {handovers} handovers");
    assert!(unreleased.is_empty(), "SIGTERM left shard Leases to expire: {unreleased:?}");
    assert!(
        u128::from(longest) < SETTINGS.duration.as_millis(),
        "a shard was without an owner for {longest} ms, as long as a lease expiry: the handover was not planned"
    );
    completeness.assert_explained("ha_rolling", &[], &planned, &replicas);
}
