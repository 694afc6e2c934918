//! Benchmarks of dispatching one watch event (pure CPU): route, sanitize,
//! compare with the index, make work items.
//!
//! In: the realistic Deployment of the sanitize bench (~5.6 KB with
//! managedFields and status) and one GitTarget whose rule selects
//! Deployments, without ignore rules and with each kind of them. Out:
//! criterion timings for an unchanged object (a resync, or a status-only
//! update: the common case) and for a changed one (replicas alternating).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use gitops_reverser::api::WatchRuleSpec;
use gitops_reverser::route::{RouteTable, ServedResource, TargetKey};
use gitops_reverser::watch::dispatch::{Routing, TargetInfo, on_apply};
use gitops_reverser::watch::index::ObjectIndex;
use serde_json::{Value, json};

fn deployments() -> ServedResource {
    ServedResource {
        group: "apps".into(),
        version: "v1".into(),
        kind: "Deployment".into(),
        plural: "deployments".into(),
        namespaced: true,
        preferred: true,
        watchable: true,
    }
}

fn routing(rule: Value) -> Routing {
    let mut table = RouteTable::default();
    let spec: WatchRuleSpec =
        serde_json::from_value(json!({"sinkRef": {"name": "t"}, "rules": [rule]})).unwrap();
    table.set_watch_rule("shop", "r", &spec).unwrap();
    let info = TargetInfo { id: 0, base_folder: "clusters/a".into(), sealer: None };
    Routing::new(table, HashMap::from([(TargetKey::new("shop", "t"), info)]))
}

fn deployment(replicas: u64) -> Value {
    let mut object: Value =
        serde_json::from_str(include_str!("../src/sanitize/testdata/deployment.json")).unwrap();
    object["spec"]["replicas"] = json!(replicas);
    object["metadata"]["namespace"] = json!("shop");
    object
}

fn bench_dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    let resource = deployments();
    let now = Instant::now();
    let cases = [
        ("no ignores", json!({"apiGroups": ["apps"], "resources": ["deployments"]})),
        (
            "ignoreFields",
            json!({"apiGroups": ["apps"], "resources": ["deployments"], "ignoreFields": ["/spec/replicas"]}),
        ),
        (
            "ignoreManagers",
            json!({"apiGroups": ["apps"], "resources": ["deployments"],
                   "ignoreManagers": ["kubectl-client-side-apply"]}),
        ),
    ];
    for (name, rule) in cases {
        let routing = routing(rule);
        let (a, b) = (deployment(3), deployment(4));
        let mut index = ObjectIndex::default();
        on_apply(&routing, &resource, &a, &mut index, now, false).unwrap();
        group.bench_function(format!("unchanged Deployment, {name}"), |bench| {
            bench.iter(|| {
                on_apply(&routing, &resource, black_box(&a), &mut index, now, false).unwrap().items.len()
            })
        });
        let mut flip = false;
        group.bench_function(format!("changed Deployment, {name}"), |bench| {
            bench.iter(|| {
                flip = !flip;
                let object = if flip { &b } else { &a };
                on_apply(&routing, &resource, black_box(object), &mut index, now, false).unwrap().items.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_dispatch);
criterion_main!(benches);
