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
