//! Benchmarks of the sanitize stage (pure CPU).
//!
//! In: a realistic live Deployment (~5.6 KB compact JSON, with managedFields
//! and status), a 1 MiB ConfigMap, and object names. Out: criterion timings
//! for sanitize + serialize + hash, and for path encoding/decoding.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gitops_reverser::sanitize::{
    ObjectKey, ResourceRef, decode_object_path, object_path, sanitize, sanitize_value, to_yaml,
};
use serde_json::{Value, json};
use std::hint::black_box;

fn resource(group: &str, kind: &str, plural: &str, namespaced: bool) -> ResourceRef {
    ResourceRef {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced,
    }
}

fn deployment() -> Value {
    serde_json::from_str(include_str!("../src/sanitize/testdata/deployment.json")).unwrap()
}

fn big_config_map() -> Value {
    let line = "upstream_backend_42 = http://backend-42.team-a.svc:8080/api # timeout 30s\n";
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "big", "namespace": "team-a", "uid": "u", "resourceVersion": "1" },
        "data": { "big.conf": line.repeat((1 << 20) / line.len() + 1) },
    })
}

fn bench_sanitize(c: &mut Criterion) {
    let mut group = c.benchmark_group("sanitize");

    let deploy = deployment();
    let deployments = resource("apps", "Deployment", "deployments", true);
    group.throughput(Throughput::Bytes(serde_json::to_vec(&deploy).unwrap().len() as u64));
    group.bench_function("deployment_5k", |b| b.iter(|| sanitize(black_box(&deploy), &deployments).unwrap()));

    let cm = big_config_map();
    let configmaps = resource("", "ConfigMap", "configmaps", true);
    group.throughput(Throughput::Bytes(serde_json::to_vec(&cm).unwrap().len() as u64));
    group.sample_size(30);
    group.bench_function("configmap_1mib", |b| b.iter(|| sanitize(black_box(&cm), &configmaps).unwrap()));
    group.finish();
}

fn bench_paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("object_path");
    let roles = resource("rbac.authorization.k8s.io", "ClusterRole", "clusterroles", false);
    let plain = ObjectKey { namespace: Some("team-a".into()), name: "web-7f9c8d6b5-x2x9k".into() };
    let odd = ObjectKey { namespace: None, name: "system:controller:persistent-volume-binder".into() };
    let deployments = resource("apps", "Deployment", "deployments", true);
    group.bench_function("encode_plain", |b| b.iter(|| object_path(&deployments, black_box(&plain))));
    group.bench_function("encode_escaped", |b| b.iter(|| object_path(&roles, black_box(&odd))));
    let path = object_path(&roles, &odd);
    group.bench_function("decode_escaped", |b| b.iter(|| decode_object_path(black_box(&path)).unwrap()));
    group.finish();
}

/// Where the time goes: the deny-list (with the clone it needs) vs YAML emission.
fn bench_parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("parts");
    group.sample_size(30);
    for (name, object) in [("deployment_5k", deployment()), ("configmap_1mib", big_config_map())] {
        group.bench_function(format!("sanitize_value/{name}"), |b| {
            b.iter(|| sanitize_value(black_box(&object).clone()))
        });
        let clean = sanitize_value(object.clone());
        group.bench_function(format!("to_yaml/{name}"), |b| b.iter(|| to_yaml(black_box(&clean))));
    }
    group.finish();
}

criterion_group!(benches, bench_sanitize, bench_paths, bench_parts);
criterion_main!(benches);
