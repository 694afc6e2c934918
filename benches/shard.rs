//! Benchmarks of shard placement (pure CPU).
//!
//! In: 1,000 branch keys, and 5 or 100 member names. Out: criterion timings
//! for hashing the keys onto 32 shards, for choosing the owners of 32 shards
//! among 5 members by rendezvous, and for placing 1,000 shards on 100
//! members after one of them left (what every replica computes then).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gitops_reverser::route::BranchKey;
use gitops_reverser::shard::balance::{Holding, placement};
use gitops_reverser::shard::hash::{owner_of, shard_of};
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::hint::black_box;

fn bench_shard(c: &mut Criterion) {
    let keys: Vec<BranchKey> = (0..1000)
        .map(|i| BranchKey::new(&format!("https://git.example.com/team-{}/repo-{i}.git", i % 17), "main"))
        .collect();
    let members: Vec<String> = (0..5).map(|i| format!("gitops-reverser-7d9f8c6b5-{i:05}")).collect();

    let mut group = c.benchmark_group("hashing onto shards");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("shard_of 1000 keys, S=32", |b| {
        b.iter(|| keys.iter().map(|key| shard_of(black_box(key), 32)).fold(0u32, u32::wrapping_add))
    });
    group.throughput(Throughput::Elements(32));
    group.bench_function("owner_of 32 shards x 5 members", |b| {
        b.iter(|| {
            (0..32).filter_map(|shard| owner_of(shard, black_box(&members))).map(str::len).sum::<usize>()
        })
    });
    group.finish();

    let fleet: Vec<String> = (0..100).map(|i| format!("gitops-reverser-7d9f8c6b5-{i:05}")).collect();
    let placed = placement(1000, &fleet, &BTreeMap::new());
    let holdings: BTreeMap<u32, Holding> = placed
        .iter()
        .flat_map(|(member, shards)| {
            shards
                .iter()
                .map(|s| (*s, Holding { holder: member, since: Timestamp::UNIX_EPOCH, bound_for: None }))
        })
        .collect();
    let survivors = &fleet[1..];
    let mut group = c.benchmark_group("placement");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000 shards on 100 members, one left", |b| {
        b.iter(|| placement(1000, black_box(survivors), black_box(&holdings)))
    });
    group.finish();
}

criterion_group!(benches, bench_shard);
criterion_main!(benches);
