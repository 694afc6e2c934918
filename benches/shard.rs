//! Benchmarks of shard placement (pure CPU).
//!
//! In: 1,000 branch keys, and 5 member names. Out: criterion timings for
//! hashing the keys onto 32 shards, and for choosing the owners of 32 shards
//! among 5 members by rendezvous.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gitops_reverser::route::BranchKey;
use gitops_reverser::shard::hash::{assignment, owner_of, shard_of};
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
    group.bench_function("assignment 32 shards x 5 members", |b| {
        b.iter(|| assignment(32, black_box(&members)))
    });
    group.finish();
}

criterion_group!(benches, bench_shard);
criterion_main!(benches);
