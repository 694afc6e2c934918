//! Issue 20, acceptance 1 (supervision): a replica that is half dead hands
//! its shards over and exits, under load, losing nothing.
//!
//! Three replicas mirror a fleet under load. Through the test-only fault
//! file (`src/fault.rs`), one replica's controller panics; later another
//! replica's watch manager hangs, which only the progress deadline
//! (`--stall-timeout`) can find. Each time: the victim's shards are owned
//! by the others within the lease duration + 2 s (counted from the panic,
//! and from the detection of the hang), the victim exits non-zero and is
//! started again (the test plays the kubelet), and no other replica exits.
//! At the end every value the load wrote is in some commit, unless the
//! operator coalesced it: the handovers were planned, so nothing is excused.

mod support;

use std::time::{Duration, Instant};

use support::replicas::completeness::{Completeness, handover_windows};
use support::replicas::fleet::{Fleet, FleetSpec};
use support::replicas::load::{Load, check_record};
use support::replicas::process::{line_time_ns, log_events, shard_field};
use support::replicas::stats::between;
use support::replicas::{LeaseSettings, Replicas, now_ns};
use support::wait_for;

const SPEC: FleetSpec = FleetSpec { repos: 2, branches: 8, targets: 8, objects: 2 };
const NAMES: [&str; 3] = ["gitops-reverser-0", "gitops-reverser-1", "gitops-reverser-2"];
/// The defaults: the bound is the one users get.
const SETTINGS: LeaseSettings = LeaseSettings::DEFAULT;
/// The progress deadline: well above a pass on the busy test machine.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
const FAILED: &str = "a vital task failed: handing the shards over, then exiting";

struct Fault {
    word: &'static str,
    /// What the victim's log must give as the cause.
    cause: &'static str,
}

const FAULTS: [Fault; 2] = [
    Fault {
        word: "panic-controller",
        cause: "the controller panicked: fault injection: the controller panics",
    },
    Fault { word: "wedge-watch-manager", cause: "the controller has made no progress" },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_or_stalled_replica_hands_over_and_exits_losing_nothing() {
    let started = Instant::now();
    let fleet = Fleet::create("ha-supervision", SPEC).await;
    let stall = format!("{}s", STALL_TIMEOUT.as_secs());
    let mut replicas =
        Replicas::new(&fleet.client, fleet.namespace(), SETTINGS).with_args(&["--stall-timeout", &stall]);
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
        6.0,
    );
    wait_for("changes before the first fault", Duration::from_secs(30), || async {
        (load.changes() >= 16).then_some(())
    })
    .await;

    let bound = SETTINGS.duration + Duration::from_secs(2);
    let mut failures = Vec::new();
    for (fault, victim) in FAULTS.iter().zip(NAMES) {
        let holders = replicas.wait_settled(&NAMES, Duration::from_secs(90)).await;
        let held: Vec<usize> =
            (0..holders.len()).filter(|&s| holders[s].as_deref() == Some(victim)).collect();
        assert!(!held.is_empty(), "{victim} owns no shard to hand over: {holders:?}");
        let fault_ns = now_ns();
        replicas.inject(victim, fault.word);

        // Every shard of the victim held by another replica.
        let limit = bound + STALL_TIMEOUT + Duration::from_secs(5);
        let owned_ns = wait_for("the victim's shards owned elsewhere", limit, || async {
            let now = replicas.holders().await;
            held.iter().all(|&s| now[s].as_deref().is_some_and(|holder| holder != victim)).then(now_ns)
        })
        .await;
        let status = replicas.wait_exit(victim).await;
        let logs = replicas.logs(victim);
        let failed = log_events(&logs, FAILED);
        let detected_ns = failed.first().and_then(line_time_ns);
        let cause = failed.first().and_then(|e| e["cause"].as_str()).unwrap_or_default().to_owned();
        let released: Vec<u64> = log_events(&logs, "released shard")
            .iter()
            .filter(|e| line_time_ns(e).is_some_and(|t| t >= fault_ns))
            .filter_map(shard_field)
            .collect();
        let from_fault = between(fault_ns, owned_ns);
        let from_detection = detected_ns.map(|at| between(at, owned_ns));
        println!(
            "ha_supervision: {}: {victim} held {} shards, released {}; owned elsewhere {:.2} s after the fault, \
             {:?} after its detection; exit {status}; cause: {cause}",
            fault.word,
            held.len(),
            released.len(),
            from_fault.as_secs_f64(),
            from_detection,
        );
        assert!(
            !status.success(),
            "{victim} exited with {status} after {}: it must exit non-zero",
            fault.word
        );
        assert!(
            cause.contains(fault.cause),
            "{victim} logged the cause {cause:?}, expected {:?}",
            fault.cause
        );
        let since_detection = from_detection.expect("the detection is logged");
        if since_detection > bound {
            failures
                .push(format!("{}: shards owned elsewhere {since_detection:?} after detection", fault.word));
        }
        if released.len() < held.len() {
            failures.push(format!(
                "{}: {victim} held {} shards, released {}",
                fault.word,
                held.len(),
                released.len()
            ));
        }
        let mut running = replicas.running();
        running.push(victim.to_owned());
        running.sort();
        assert_eq!(running, NAMES, "a replica other than {victim} exited");
        replicas.start(victim);
    }
    replicas.wait_settled(&NAMES, Duration::from_secs(90)).await;

    let more = load.changes() + 16;
    wait_for("changes after the faults", Duration::from_secs(30), || async {
        (load.changes() >= more).then_some(())
    })
    .await;
    let record = load.stop().await;
    let files = fleet.wait_converged(Duration::from_secs(120)).await;
    let sealed = fleet.assert_secrets_sealed_unchurned_unleaked(&replicas.all_logs()).await;
    check_record(&fleet.client, fleet.namespace(), &record).await;
    let planned = handover_windows(&fleet, &replicas, SETTINGS);
    let completeness = Completeness::measure(&fleet, &record, &replicas.coalesced());
    println!("{}", completeness.report("ha_supervision", &[], &planned));
    println!(
        "ha_supervision: {} changes ({} retried), {files} files equal, {sealed} sealed Secrets unchurned; {:?} in all",
        record.changes,
        record.retries,
        started.elapsed()
    );
    assert!(failures.is_empty(), "{failures:?}");
    completeness.assert_explained("ha_supervision", &[], &planned, &replicas);
}
