//! Shard Lease exclusivity against the real API server: contenders, each on
//! its own connection, race for expired or absent Leases; at most one may win
//! (exactly one, since the Lease is up for grabs), and the API server's record
//! must name that winner.
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_reverser::shard::lease::{Claim, LeaseClient};
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

async fn contender(namespace: &str, identity: &str, duration: Duration) -> LeaseClient {
    // A client of its own: its own connection pool, so the requests really race.
    LeaseClient::new(support::env().client().await, namespace, identity, duration)
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

#[derive(Default)]
struct Tally {
    rounds: usize,
    absent_rounds: usize,
    one_winner: usize,
    no_winner: usize,
    double_winners: usize,
    record_mismatch: usize,
    wins_by: BTreeMap<String, usize>,
    held_by_other: usize,
    lost: usize,
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
            clients.push(Arc::new(
                contender(&namespace.name, &format!("c{contenders}-{i}"), Duration::from_secs(30)).await,
            ));
        }
        let mut tally = Tally::default();
        for round in 0..rounds {
            let name = format!("race-{contenders}-{round}");
            let absent = round % ABSENT_EVERY == 0;
            if !absent {
                leases
                    .create(&PostParams::default(), &expired_lease(&name))
                    .await
                    .expect("create an expired Lease");
            }
            let barrier = Arc::new(Barrier::new(contenders));
            let tasks: Vec<_> = clients
                .iter()
                .map(|client| {
                    let (client, barrier, name) = (client.clone(), barrier.clone(), name.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        client.try_acquire(&name).await
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for (client, task) in clients.iter().zip(tasks) {
                match task.await.expect("contender task").expect("try_acquire") {
                    Claim::Held { .. } => winners.push(client.identity().to_owned()),
                    Claim::HeldByOther { .. } => tally.held_by_other += 1,
                    Claim::Lost => tally.lost += 1,
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
             double_winners={} record_mismatch={} losers: held_by_other={} lost={} wins_by={:?}",
            tally.rounds,
            tally.absent_rounds,
            tally.rounds - tally.absent_rounds,
            tally.one_winner,
            tally.no_winner,
            tally.double_winners,
            tally.record_mismatch,
            tally.held_by_other,
            tally.lost,
            tally.wins_by,
        );
        total_rounds += tally.rounds;
    }
    println!("total rounds={total_rounds} in {:?}", started.elapsed());
    assert_eq!(total_rounds, 500);
    assert!(failures.is_empty(), "{} bad rounds:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn a_live_lease_is_never_taken_over() {
    let admin = support::env().client().await;
    let namespace = support::TestNamespace::create(&admin, "lease-live").await;
    let leases: Api<Lease> = Api::namespaced(admin, &namespace.name);
    let a = contender(&namespace.name, "a", Duration::from_secs(30)).await;
    let b = contender(&namespace.name, "b", Duration::from_secs(30)).await;

    let mut held = a.try_acquire("shard-0").await.unwrap();
    assert!(held.is_held(), "{held:?}");
    for _ in 0..10 {
        let claim = b.try_acquire("shard-0").await.unwrap();
        assert!(matches!(&claim, Claim::HeldByOther { holder, .. } if holder == "a"), "{claim:?}");
        let renewed = a.renew("shard-0", &held).await.unwrap();
        assert!(renewed.is_held(), "{renewed:?}");
        assert_ne!(renewed, held, "a renew writes a new version");
        held = renewed;
    }
    let record = leases.get("shard-0").await.unwrap();
    assert_eq!(holder(&record).as_deref(), Some("a"));
    assert_eq!(record.spec.unwrap().lease_transitions, Some(0));
}

#[tokio::test]
async fn renew_after_a_takeover_is_lost() {
    let admin = support::env().client().await;
    let namespace = support::TestNamespace::create(&admin, "lease-takeover").await;
    let leases: Api<Lease> = Api::namespaced(admin, &namespace.name);
    let a = contender(&namespace.name, "a", Duration::from_secs(1)).await;
    let b = contender(&namespace.name, "b", Duration::from_secs(30)).await;

    let a_claim = a.try_acquire("shard-1").await.unwrap();
    assert!(a_claim.is_held(), "{a_claim:?}");
    // a stops renewing; once its 1 s record has run out, b takes over.
    let b_claim = support::wait_for("b to take over the expired Lease", Duration::from_secs(10), || async {
        let claim = b.try_acquire("shard-1").await.unwrap();
        claim.is_held().then_some(claim)
    })
    .await;

    assert_eq!(a.renew("shard-1", &a_claim).await.unwrap(), Claim::Lost);
    let claim = a.try_acquire("shard-1").await.unwrap();
    assert!(matches!(&claim, Claim::HeldByOther { holder, .. } if holder == "b"), "{claim:?}");
    assert!(b.renew("shard-1", &b_claim).await.unwrap().is_held());
    let record = leases.get("shard-1").await.unwrap();
    assert_eq!(holder(&record).as_deref(), Some("b"));
    assert_eq!(record.spec.unwrap().lease_transitions, Some(1));
}

#[tokio::test]
async fn release_then_another_acquires() {
    let admin = support::env().client().await;
    let namespace = support::TestNamespace::create(&admin, "lease-release").await;
    let leases: Api<Lease> = Api::namespaced(admin, &namespace.name);
    let a = contender(&namespace.name, "a", Duration::from_secs(30)).await;
    let b = contender(&namespace.name, "b", Duration::from_secs(30)).await;

    let a_claim = a.try_acquire("shard-2").await.unwrap();
    assert!(a_claim.is_held(), "{a_claim:?}");
    assert!(matches!(b.try_acquire("shard-2").await.unwrap(), Claim::HeldByOther { .. }));

    a.release("shard-2", &a_claim).await.unwrap();
    assert_eq!(holder(&leases.get("shard-2").await.unwrap()), None);

    let b_claim = b.try_acquire("shard-2").await.unwrap();
    assert!(b_claim.is_held(), "a released Lease is free at once: {b_claim:?}");
    // a's old claim is stale: renewing it is Lost and releasing it is a no-op.
    assert_eq!(a.renew("shard-2", &a_claim).await.unwrap(), Claim::Lost);
    a.release("shard-2", &a_claim).await.unwrap();
    let record = leases.get("shard-2").await.unwrap();
    assert_eq!(holder(&record).as_deref(), Some("b"));
    assert_eq!(record.spec.unwrap().lease_transitions, Some(1));
    assert!(b.renew("shard-2", &b_claim).await.unwrap().is_held());
}

/// A tenure survives a lapse only if the acquisition replaced a version
/// that still named this replica: what the replace returns as the former
/// holder must be exactly that version's holder.
#[tokio::test]
async fn an_acquisition_names_the_holder_it_replaced() {
    let admin = support::env().client().await;
    let namespace = support::TestNamespace::create(&admin, "lease-previous").await;
    let a = contender(&namespace.name, "a", Duration::from_secs(1)).await;
    let b = contender(&namespace.name, "b", Duration::from_secs(1)).await;

    let (claim, previous) = a.try_acquire_after("shard-3").await.unwrap();
    assert!(claim.is_held() && previous.is_none(), "created: {claim:?} {previous:?}");
    // a takes its own Lease back (as after a lapse): nobody wrote in between.
    let (claim, previous) = a.try_acquire_after("shard-3").await.unwrap();
    assert!(claim.is_held(), "{claim:?}");
    assert_eq!(previous.as_deref(), Some("a"));
    // b takes it over once expired, and learns it replaced a.
    let (claim, previous) = support::wait_for("b to take over", Duration::from_secs(10), || async {
        let (claim, previous) = b.try_acquire_after("shard-3").await.unwrap();
        claim.is_held().then_some((claim, previous))
    })
    .await;
    assert_eq!(previous.as_deref(), Some("a"));
    b.release("shard-3", &claim).await.unwrap();
    // After b's release the Lease names nobody: a's next tenure is new.
    let (claim, previous) = a.try_acquire_after("shard-3").await.unwrap();
    assert!(claim.is_held(), "{claim:?}");
    assert_eq!(previous, None, "a released Lease names no former holder");
}
