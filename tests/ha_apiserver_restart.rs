//! Issue 4, acceptance 7 (API server restart): etcd and kube-apiserver stop
//! for longer than the lease duration under load, then start again →
//! every replica stops its workers before its Leases can expire (no push
//! lands after that), and all of them recover without a restart: they hold
//! their shards again and push. Ends with acceptance 8.
//!
//! This stops the shared API server, which every other test uses, so it
//! lives alone in its own test binary; run it sparingly.

mod support;

use std::time::{Duration, Instant};

use support::replicas::completeness::{Completeness, handover_windows};
use support::replicas::fleet::{Fleet, FleetSpec};
use support::replicas::load::{Load, check_record};
use support::replicas::stats::between;
use support::replicas::{LeaseSettings, Replicas, now_ns, pushes};
use support::wait_for;

const SPEC: FleetSpec = FleetSpec { repos: 2, branches: 6, targets: 6, objects: 2 };
const NAMES: [&str; 3] = ["gitops-reverser-0", "gitops-reverser-1", "gitops-reverser-2"];
const SETTINGS: LeaseSettings = LeaseSettings::SHORT;

fn apiserver(action: &str) {
    support::component(action, "apiserver");
}

/// Starts the API server again even if the test fails half-way.
struct Restart;
impl Drop for Restart {
    fn drop(&mut self) {
        apiserver("start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_recover_from_an_api_server_restart() {
    let started = Instant::now();
    let fleet = Fleet::create("ha-api", SPEC).await;
    let mut replicas = Replicas::new(&fleet.client, fleet.namespace(), SETTINGS);
    for name in NAMES {
        replicas.start(name);
    }
    replicas.wait_settled(&NAMES, Duration::from_secs(90)).await;
    fleet.wait_converged(Duration::from_secs(120)).await;
    let pids: Vec<Option<u32>> = NAMES.iter().map(|n| replicas.replica(n).pid()).collect();
    let load = Load::start(
        fleet.client.clone(),
        fleet.namespace(),
        fleet.target_names(),
        fleet.initial_objects(SPEC.objects),
        6.0,
    );
    wait_for("changes before the outage", Duration::from_secs(30), || async {
        (load.changes() >= 12).then_some(())
    })
    .await;

    let restart = Restart;
    let stop_begun = now_ns();
    apiserver("stop");
    // The API server is gone by now; the Leases were renewed at most this late.
    let stopped = now_ns();
    // Within the renew deadline (plus slack for a loaded machine) every replica gives up its shards.
    let deadline = SETTINGS.renew_deadline + Duration::from_secs(20);
    wait_for("every replica to drop its shards", deadline, || async {
        for name in NAMES {
            let m = replicas.metrics(name).await;
            let renew_failed = m.sum("gitops_reverser_lease_renew_failures_total").is_some_and(|n| n > 0.0);
            if m.get("gitops_reverser_shards_owned") != Some(0.0) || !renew_failed {
                return None;
            }
        }
        Some(())
    })
    .await;
    let dropped = between(stopped, now_ns());
    // The outage must outlast the Leases, so they are expired when the API server returns.
    let expired = stopped + (SETTINGS.duration + SETTINGS.retry_period).as_nanos() as i128;
    wait_for("the Leases to expire", Duration::from_secs(30), || async {
        (now_ns() > expired).then_some(())
    })
    .await;
    let restarted = now_ns();
    drop(restart);
    let back = now_ns();

    let settled = replicas.wait_settled(&NAMES, Duration::from_secs(120)).await;
    let recovered = between(back, now_ns());
    let resumed = wait_for("a push on every branch after the restart", Duration::from_secs(90), || async {
        let pushes = fleet.pushes(back);
        fleet
            .branches()
            .iter()
            .all(|(repo, branch)| {
                let name = fleet.repo_name(*repo);
                pushes.iter().any(|p| p.repo == name && &p.branch == branch && p.replica.is_some())
            })
            .then_some(pushes.len())
    })
    .await;
    let record = load.stop().await;
    let files = fleet.wait_converged(Duration::from_secs(120)).await;
    let sealed = fleet.assert_secrets_sealed_unchurned_unleaked(&replicas.all_logs()).await;
    check_record(&fleet.client, fleet.namespace(), &record).await;
    // No replica process stops: every value must be in some commit, unless coalesced.
    // Planned handovers lose nothing; their windows only locate a loss in the report.
    let handovers = handover_windows(&fleet, &replicas, SETTINGS);
    // Shards whose Lease came back still naming their holder: its workers
    // went on with what they had not pushed before the outage.
    let same_tenure: usize = replicas
        .all_logs()
        .values()
        .map(|logs| {
            support::replicas::process::log_events(
                logs,
                "shard back after a lapse nobody else used: its workers go on",
            )
            .len()
        })
        .sum();
    let completeness = Completeness::measure(&fleet, &record, &replicas.coalesced());
    println!("{}", completeness.report("ha_apiserver_restart", &[], &handovers));

    for (name, pid) in NAMES.iter().zip(&pids) {
        assert!(replicas.running().contains(&(*name).to_owned()), "{name} exited");
        assert_eq!(replicas.replica(name).pid(), *pid, "{name} was restarted");
    }
    // Fencing: once the last renew (before the stop) plus the lease duration has passed, nobody pushes.
    let fenced_from = stopped + SETTINGS.duration.as_nanos() as i128;
    let late: Vec<_> = fleet.pushes(fenced_from).into_iter().filter(|p| p.at_ns < restarted).collect();
    println!(
        "ha_apiserver_restart: stopping took {:.1}s; every replica had dropped its shards {:.1}s after that; \
         down {:.1}s; starting took {:.1}s; shards settled {:.1}s after it was back, {resumed} pushes since; \
         per replica {:?}, {same_tenure} shards taken back in the same tenure; {} changes ({} retried), {files} files equal, {sealed} sealed Secrets unchurned; {:?} in all",
        between(stop_begun, stopped).as_secs_f64(),
        dropped.as_secs_f64(),
        between(stopped, restarted).as_secs_f64(),
        between(restarted, back).as_secs_f64(),
        recovered.as_secs_f64(),
        support::replicas::leases::counts(&settled),
        record.changes,
        record.retries,
        started.elapsed()
    );
    assert!(
        late.is_empty(),
        "pushes after every Lease had expired, while the API server was down:\n{}",
        pushes::summary(&late)
    );
    completeness.assert_explained("ha_apiserver_restart", &[], &handovers, &replicas);
}
