//! Shard Lease exclusivity against the real API server, through the
//! coordinator's own write path (`LeaseClient::execute` carrying a core
//! `Write`): contenders, each on its own connection, race to acquire the
//! same version of a Lease (or to create an absent one); exactly one may
//! win, and the API server's record must name that winner. A write on a
//! version someone replaced since is a conflict, whatever it does.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_reverser::shard::core::{Action, LeaseName, Precondition, Write, WriteOutcome};
use gitops_reverser::shard::lease::LeaseClient;
use gitops_reverser::shard::records::STANDBY_ANNOTATION;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::Barrier;

/// (contenders, rounds): 500 rounds in all.
const RACES: [(usize, usize); 4] = [(2, 125), (3, 125), (5, 125), (8, 125)];
/// Every this many rounds the Lease is absent, so the race is on create.
const ABSENT_EVERY: usize = 5;
const EXPIRED_TRANSITIONS: i32 = 7;

async fn contender(namespace: &str, identity: &str) -> LeaseClient {
    // A client of its own: its own connection pool, so the requests really race.
    LeaseClient::new(support::env().client().await, namespace, identity, Duration::from_secs(30))
}

/// A Lease whose holder stopped renewing an hour ago.
fn expired_lease(name: &str) -> Lease {
    let long_ago = Timestamp::now() - SignedDuration::from_hours(1);
    Lease {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some("dead-replica".to_owned()),
            acquire_time: Some(MicroTime(long_ago)),
            renew_time: Some(MicroTime(long_ago)),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(EXPIRED_TRANSITIONS),
            ..Default::default()
        }),
    }
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

fn version(lease: &Lease) -> Precondition {
    Precondition::Version(lease.metadata.resource_version.clone().expect("a stored Lease has a version"))
}

fn write(precondition: Precondition, action: Action) -> Write {
    Write { lease: LeaseName::Shard(0), precondition, action }
}

/// Runs `write` on `base` and expects it applied: the object written.
async fn written(client: &LeaseClient, name: &str, write: &Write, base: Option<Lease>) -> Lease {
    match client.execute(name, write, base).await {
        (WriteOutcome::Written { resource_version }, Some(lease)) => {
            assert_eq!(lease.metadata.resource_version.as_ref(), Some(&resource_version));
            lease
        }
        other => panic!("{} {write:?} on {name}: {other:?}", client.identity()),
    }
}

async fn outcome(client: &LeaseClient, name: &str, write: &Write, base: Option<Lease>) -> WriteOutcome {
    client.execute(name, write, base).await.0
}

#[derive(Default)]
struct Tally {
    rounds: usize,
    absent_rounds: usize,
    one_winner: usize,
    no_winner: usize,
    double_winners: usize,
    record_mismatch: usize,
    wins_by: BTreeMap<String, usize>,
    conflicts: usize,
    other_outcomes: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_one_contender_wins_each_race() {
    let admin = support::env().client().await;
    let namespace = support::TestNamespace::create(&admin, "lease-race").await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &namespace.name);
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut total_rounds = 0;

    for (contenders, rounds) in RACES {
        let mut clients = Vec::new();
        for i in 0..contenders {
            clients.push(Arc::new(contender(&namespace.name, &format!("c{contenders}-{i}")).await));
        }
        let mut tally = Tally::default();
        for round in 0..rounds {
            let name = format!("race-{contenders}-{round}");
            let absent = round % ABSENT_EVERY == 0;
            // What every contender saw: nothing, or the same expired version.
            let base = if absent {
                None
            } else {
                let lease = expired_lease(&name);
                Some(leases.create(&PostParams::default(), &lease).await.expect("create an expired Lease"))
            };
            let precondition = base.as_ref().map_or(Precondition::Absent, version);
            let acquire = write(precondition, Action::Acquire);
            let barrier = Arc::new(Barrier::new(contenders));
            let tasks: Vec<_> = clients
                .iter()
                .map(|client| {
                    let (client, barrier, name) = (client.clone(), barrier.clone(), name.clone());
                    let (acquire, base) = (acquire.clone(), base.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        client.execute(&name, &acquire, base).await.0
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for (client, task) in clients.iter().zip(tasks) {
                match task.await.expect("contender task") {
                    WriteOutcome::Written { .. } => winners.push(client.identity().to_owned()),
                    WriteOutcome::Conflict => tally.conflicts += 1,
                    other => {
                        tally.other_outcomes += 1;
                        failures.push(format!("{name}: {} got {other:?}", client.identity()));
                    }
                }
            }
            let record = leases.get(&name).await.expect("read the Lease back");
            tally.rounds += 1;
            tally.absent_rounds += usize::from(absent);
            match winners.as_slice() {
                [] => {
                    tally.no_winner += 1;
                    failures.push(format!("{name}: no winner, record holder {:?}", holder(&record)));
                }
                [winner] => {
                    tally.one_winner += 1;
                    *tally.wins_by.entry(winner.clone()).or_default() += 1;
                    let expected_transitions = if absent { 0 } else { EXPIRED_TRANSITIONS + 1 };
                    let spec = record.spec.clone().unwrap_or_default();
                    if holder(&record).as_ref() != Some(winner)
                        || spec.lease_transitions != Some(expected_transitions)
                    {
                        tally.record_mismatch += 1;
                        failures.push(format!(
                            "{name}: winner {winner}, record holder {:?} transitions {:?}",
                            spec.holder_identity, spec.lease_transitions
                        ));
                    }
                }
                several => {
                    tally.double_winners += 1;
                    failures.push(format!("{name}: {} winners {several:?}", several.len()));
                }
            }
        }
        println!(
            "contenders={contenders} rounds={} (absent={}, expired={}) one_winner={} no_winner={} \
             double_winners={} record_mismatch={} losers: conflicts={} other={} wins_by={:?}",
            tally.rounds,
            tally.absent_rounds,
            tally.rounds - tally.absent_rounds,
            tally.one_winner,
            tally.no_winner,
            tally.double_winners,
            tally.record_mismatch,
            tally.conflicts,
            tally.other_outcomes,
            tally.wins_by,
        );
        total_rounds += tally.rounds;
    }
    println!("total rounds={total_rounds} in {:?}", started.elapsed());
    assert_eq!(total_rounds, 500);
    assert!(failures.is_empty(), "{} bad rounds:\n{}", failures.len(), failures.join("\n"));
}

/// A holder that missed a takeover (frozen, cut off) writes on the version
/// it last knew: its renew and its release are conflicts, and the record
/// keeps naming the new holder.
#[tokio::test]
async fn writes_on_a_replaced_version_conflict() {
    let admin = support::env().client().await;
    let namespace = support::TestNamespace::create(&admin, "lease-takeover").await;
    let leases: Api<Lease> = Api::namespaced(admin, &namespace.name);
    let a = contender(&namespace.name, "a").await;
    let b = contender(&namespace.name, "b").await;
    let name = "shard-1";
    let renew = Action::Renew { standby: None };

    let created = written(&a, name, &write(Precondition::Absent, Action::Acquire), None).await;
    assert_eq!(
        outcome(&b, name, &write(Precondition::Absent, Action::Acquire), None).await,
        WriteOutcome::Conflict,
        "a create of an existing Lease"
    );
    let renewed = written(&a, name, &write(version(&created), renew.clone()), Some(created.clone())).await;
    assert_ne!(renewed.metadata.resource_version, created.metadata.resource_version);
    assert_eq!(
        outcome(&b, name, &write(version(&created), Action::Acquire), Some(created.clone())).await,
        WriteOutcome::Conflict,
        "a takeover on the version before a's renewal"
    );
    let taken = written(&b, name, &write(version(&renewed), Action::Acquire), Some(renewed.clone())).await;

    for (what, action) in [("renew", renew), ("release", Action::Release)] {
        assert_eq!(
            outcome(&a, name, &write(version(&renewed), action), Some(renewed.clone())).await,
            WriteOutcome::Conflict,
            "a's {what} after b took over"
        );
    }
    let record = leases.get(name).await.unwrap();
    assert_eq!(record.metadata.resource_version, taken.metadata.resource_version, "nothing written since");
    assert_eq!(holder(&record).as_deref(), Some("b"));
    let spec = record.spec.unwrap();
    assert_eq!(spec.lease_transitions, Some(1));
    assert_ne!(spec.acquire_time, created.spec.unwrap().acquire_time, "b's tenure starts at its takeover");
}

#[tokio::test]
async fn release_then_another_acquires() {
    let admin = support::env().client().await;
    let namespace = support::TestNamespace::create(&admin, "lease-release").await;
    let leases: Api<Lease> = Api::namespaced(admin, &namespace.name);
    let a = contender(&namespace.name, "a").await;
    let b = contender(&namespace.name, "b").await;
    let name = "shard-2";

    let created = written(&a, name, &write(Precondition::Absent, Action::Acquire), None).await;
    let released = written(&a, name, &write(version(&created), Action::Release), Some(created.clone())).await;
    assert_eq!(holder(&leases.get(name).await.unwrap()), None);

    let acquired = written(&b, name, &write(version(&released), Action::Acquire), Some(released)).await;
    // a's version is stale: renewing or releasing it again is a conflict.
    for action in [Action::Renew { standby: None }, Action::Release] {
        assert_eq!(
            outcome(&a, name, &write(version(&created), action), Some(created.clone())).await,
            WriteOutcome::Conflict
        );
    }
    let record = leases.get(name).await.unwrap();
    assert_eq!(record.metadata.resource_version, acquired.metadata.resource_version);
    assert_eq!(holder(&record).as_deref(), Some("b"));
    assert_eq!(record.spec.unwrap().lease_transitions, Some(1), "a released Lease taken by another counts");
}

/// A replica that takes back a Lease still naming it (a restart, a lost
/// answer) keeps its tenure: `acquireTime` and the transitions stay.
#[tokio::test]
async fn taking_back_an_own_lease_keeps_the_tenure() {
    let admin = support::env().client().await;
    let namespace = support::TestNamespace::create(&admin, "lease-own").await;
    let a = contender(&namespace.name, "a").await;
    let name = "shard-3";

    let created = written(&a, name, &write(Precondition::Absent, Action::Acquire), None).await;
    let again = written(&a, name, &write(version(&created), Action::Acquire), Some(created.clone())).await;
    let (before, after) = (created.spec.unwrap(), again.spec.unwrap());
    assert_eq!(after.holder_identity.as_deref(), Some("a"));
    assert_eq!(after.acquire_time, before.acquire_time);
    assert_eq!(after.lease_transitions, Some(0));
}

/// The member Lease carries the standby announcement: a renewal sets it,
/// leaves it alone (`None`), or removes it (an empty set), in the same
/// compare-and-swap write.
#[tokio::test]
async fn a_renewal_announces_and_withdraws_the_standby() {
    let admin = support::env().client().await;
    let namespace = support::TestNamespace::create(&admin, "lease-standby").await;
    let a = contender(&namespace.name, "a").await;
    let name = "member-a";
    let annotation =
        |lease: &Lease| lease.metadata.annotations.as_ref().and_then(|a| a.get(STANDBY_ANNOTATION)).cloned();
    let renew = |standby: Option<BTreeSet<u32>>| Action::Renew { standby };

    let joined = written(&a, name, &write(Precondition::Absent, Action::Acquire), None).await;
    let announced =
        written(&a, name, &write(version(&joined), renew(Some(BTreeSet::from([17, 3])))), Some(joined)).await;
    assert_eq!(annotation(&announced).as_deref(), Some("3,17"));
    let kept = written(&a, name, &write(version(&announced), renew(None)), Some(announced)).await;
    assert_eq!(annotation(&kept).as_deref(), Some("3,17"), "None leaves the announcement");
    let withdrawn = written(&a, name, &write(version(&kept), renew(Some(BTreeSet::new()))), Some(kept)).await;
    assert_eq!(annotation(&withdrawn), None, "an empty set removes it");
}
