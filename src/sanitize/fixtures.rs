//! Test fixtures: live objects as the API server returns them (with status,
//! managedFields and server-set metadata), and their `ResourceRef`s.

use super::ResourceRef;
use serde_json::{Value, json};

pub fn resource(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> ResourceRef {
    ResourceRef {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced,
    }
}

pub fn deployments() -> ResourceRef {
    resource("apps", "v1", "Deployment", "deployments", true)
}
pub fn services() -> ResourceRef {
    resource("", "v1", "Service", "services", true)
}
pub fn configmaps() -> ResourceRef {
    resource("", "v1", "ConfigMap", "configmaps", true)
}
pub fn storage_classes() -> ResourceRef {
    resource("storage.k8s.io", "v1", "StorageClass", "storageclasses", false)
}

/// A realistic live Deployment (~5.6 KB of compact JSON).
pub fn deployment() -> Value {
    serde_json::from_str(include_str!("testdata/deployment.json")).unwrap()
}

/// Server-written metadata every live object carries.
fn live_metadata(namespace: Option<&str>, name: &str) -> Value {
    let mut meta = json!({
        "name": name,
        "uid": "0f5e7a8c-1111-2222-3333-444455556666",
        "resourceVersion": "1234",
        "creationTimestamp": "2025-01-01T00:00:00Z",
        "managedFields": [{ "manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {} }],
    });
    if let Some(ns) = namespace {
        meta["namespace"] = json!(ns);
    }
    meta
}

/// A live Service; `cluster_ip` is `"None"` for a headless one.
pub fn service(cluster_ip: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": live_metadata(Some("team-a"), "web"),
        "spec": {
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": "http" }],
            "selector": { "app.kubernetes.io/name": "web" },
            "sessionAffinity": "None",
            "type": "ClusterIP",
        },
        "status": { "loadBalancer": {} },
    })
}

pub fn storage_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": live_metadata(None, "fast-ssd"),
        "provisioner": "ebs.csi.aws.com",
        "parameters": { "type": "gp3", "iops": "3000" },
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": true,
    })
}

pub fn config_map(name: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": live_metadata(Some("team-a"), name),
        "data": data,
    })
}

/// A ConfigMap holding a config file (a literal block), a YAML 1.1 keyword as
/// key and value, and an empty string.
pub fn nginx_config_map() -> Value {
    let nginx = "server {\n    listen 8080;\n    location / {\n        proxy_pass http://web;  \n    }\n}\n";
    config_map("nginx", json!({ "nginx.conf": nginx, "on": "yes", "empty": "" }))
}

/// Valid object names that look like something else to a YAML or path reader.
pub const UNUSUAL_NAMES: [&str; 9] =
    ["a", "0", "a.b.c", "x-1.example.com", "on", "yes", "1e3", "0123", "..a"];

pub fn cluster_roles() -> ResourceRef {
    resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false)
}

/// A ClusterRole whose name has colons, as the built-in ones do.
pub fn cluster_role() -> Value {
    json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": "system:controller:foo" }, "rules": [] })
}

/// A ConfigMap whose one value is a little over 1 MiB of config-file lines.
pub fn big_config_map() -> Value {
    let line = "upstream_backend_42 = http://backend-42.team-a.svc:8080/api # timeout 30s\n";
    let body = line.repeat((1 << 20) / line.len() + 1);
    config_map("big", json!({ "big.conf": body }))
}

/// Re-inserts every map's keys in reverse order (recursively), so tests see a
/// different insertion order whether or not serde_json preserves order.
pub fn reversed(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.reverse();
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), reversed(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(reversed).collect()),
        other => other.clone(),
    }
}

/// Every object the sanitize tests write, and those of the write-path tests
/// (`tests/write_*.rs`) as the API server would return them, with the
/// resource each is watched as: the documents other YAML readers must read
/// back (`yaml_tests.rs`).
pub fn written_objects() -> Vec<(String, ResourceRef, Value)> {
    let mut out = vec![
        ("fixture deployment".to_owned(), deployments(), deployment()),
        ("fixture service".to_owned(), services(), service("10.96.4.7")),
        ("fixture headless service".to_owned(), services(), service("None")),
        ("fixture storage class".to_owned(), storage_classes(), storage_class()),
        ("fixture nginx config map".to_owned(), configmaps(), nginx_config_map()),
        ("fixture 1 MiB config map".to_owned(), configmaps(), big_config_map()),
        ("fixture empty config map".to_owned(), configmaps(), config_map("empty", json!({}))),
        ("fixture cluster role".to_owned(), cluster_roles(), cluster_role()),
    ];
    for name in UNUSUAL_NAMES {
        out.push((format!("fixture config map named {name:?}"), configmaps(), config_map(name, json!({}))));
    }
    // tests/write_*.rs: the data and labels their ConfigMaps are applied with.
    let line = "0123456789abcdef".repeat(4) + "\n";
    let payload = line.repeat(1024 * 1024 / line.len() - 64);
    let long_name = "n".repeat(253);
    let write_path: Vec<(&str, Value, Value)> = vec![
        ("app", json!({}), json!({ "greeting": "hello" })),
        ("app", json!({}), json!({ "greeting": "bonjour" })),
        ("sentinel", json!({}), json!({ "n": "1" })),
        ("cm-0", json!({ "batch": "yes" }), json!({ "i": "0" })),
        ("cm-a", json!({ "team": "a" }), json!({ "team": "a" })),
        ("foreign", json!({}), json!({ "secret": "plans" })),
        ("own", json!({}), json!({ "mine": "yes" })),
        ("after", json!({}), json!({ "k": "v" })),
        ("big", json!({}), json!({ "payload": payload })),
        ("a.b.c", json!({}), json!({ "name": "a.b.c" })),
        ("x--y", json!({}), json!({ "name": "x--y" })),
        ("0-starts-with-digit", json!({}), json!({ "name": "0-starts-with-digit" })),
        ("ends.with.yaml", json!({}), json!({ "name": "ends.with.yaml" })),
        (&long_name, json!({}), json!({ "name": long_name })),
        ("first", json!({ "race": "yes" }), json!({ "n": "first" })),
        ("change-me", json!({}), json!({ "v": "2" })),
        ("before", json!({}), json!({ "k": "1" })),
        ("probe", json!({}), json!({ "transport": "works" })),
    ];
    for (i, (name, labels, data)) in write_path.into_iter().enumerate() {
        let mut object = config_map(name, data);
        if labels != json!({}) {
            object["metadata"]["labels"] = labels;
        }
        out.push((format!("write-path {i}: config map {name:.40}"), configmaps(), object));
    }
    let mut namespace = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": live_metadata(None, "wb-marked-1a2b3c"),
        "spec": { "finalizers": ["kubernetes"] },
        "status": { "phase": "Active" },
    });
    namespace["metadata"]["labels"] =
        json!({ "mirror": "mark-1a2b3c", "kubernetes.io/metadata.name": "wb-marked-1a2b3c" });
    out.push((
        "write-path namespace".to_owned(),
        resource("", "v1", "Namespace", "namespaces", false),
        namespace,
    ));
    out
}
