//! Benchmarks of routing an event through many rules (pure CPU).
//!
//! In: a RouteTable of 1,000 WatchRules (one per namespace `team-<i>`, each
//! selecting configmaps and deployments by an `app` label) plus 10
//! ClusterWatchRules on secrets-free resources. Out: criterion timings for
//! `route` (the targets an event goes to) and `selecting` (with operation
//! masks) of one ConfigMap event, and for compiling the table.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gitops_reverser::api::{ClusterWatchRuleSpec, Operation, WatchRuleSpec};
use gitops_reverser::controller::resolve::glob_matches;
use gitops_reverser::route::{RouteTable, ServedResource};
use serde_json::json;

fn served(group: &str, kind: &str, plural: &str) -> ServedResource {
    ServedResource {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced: true,
        preferred: true,
        watchable: true,
    }
}

fn table(namespaces: usize) -> RouteTable {
    let mut table = RouteTable::default();
    for i in 0..namespaces {
        let spec: WatchRuleSpec = serde_json::from_value(json!({
            "sinkRef": {"name": "audit"},
            "rules": [
                {"resources": ["configmaps"], "labelSelector": {"matchLabels": {"app": format!("app-{}", i % 7)}}},
                {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["CREATE", "UPDATE"],
                 "labelSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]}},
            ],
        }))
        .expect("a valid WatchRule spec");
        table.set_watch_rule(&format!("team-{i}"), "r", &spec).expect("compiles");
    }
    for i in 0..10 {
        let spec: ClusterWatchRuleSpec = serde_json::from_value(json!({
            "sinkRef": {"namespace": "platform", "name": format!("cluster-{i}")},
            "rules": [{"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"]}],
        }))
        .expect("a valid ClusterWatchRule spec");
        table.set_cluster_watch_rule(&format!("c{i}"), &spec).expect("compiles");
    }
    table
}

fn bench_route(c: &mut Criterion) {
    let table = table(1000);
    let configmaps = served("", "ConfigMap", "configmaps");
    let labels: BTreeMap<String, String> =
        [("app".to_owned(), "app-3".to_owned()), ("tier".to_owned(), "web".to_owned())].into();

    let mut group = c.benchmark_group("routing many rules");
    group.throughput(Throughput::Elements(1));
    group.bench_function("route 1 ConfigMap event, 2010 compiled rules", |b| {
        b.iter(|| {
            table.route(black_box(&configmaps), Some("team-500"), black_box(&labels), Operation::Update).len()
        })
    });
    group.bench_function("selecting 1 ConfigMap, 2010 compiled rules", |b| {
        b.iter(|| table.selecting(black_box(&configmaps), Some("team-500"), black_box(&labels)).len())
    });
    // Issue 16: the pattern that pinned a backtracking matcher.
    let (worst, name) = (format!("{}b", "**a".repeat(84)), "a".repeat(255));
    group.bench_function("allowedBranches: the worst pattern on a 255-byte branch", |b| {
        b.iter(|| glob_matches(black_box(&worst), black_box(&name)))
    });
    group.sample_size(20);
    group.bench_function("compile 1000 WatchRules + 10 ClusterWatchRules", |b| {
        b.iter(|| table_len(black_box(1000)))
    });
    group.finish();
}

fn table_len(namespaces: usize) -> usize {
    table(namespaces).targets().len()
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
