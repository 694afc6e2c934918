//! Tests for `denylist.rs`: what goes, what stays, and which maps are pruned.

use super::*;
use serde_json::json;

#[test]
fn server_metadata_goes_user_metadata_stays() {
    let object = json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {
            "name": "w", "namespace": "ns",
            "labels": { "app": "w" },
            "annotations": {
                "note": "kept",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "deployment.kubernetes.io/revision": "3",
                "kubernetes.io/change-cause": "kubectl set image ... (user intent, kept)",
            },
            "uid": "u", "resourceVersion": "1", "generation": 2,
            "creationTimestamp": "2025-01-01T00:00:00Z", "managedFields": [{}],
            "selfLink": "/apis/x", "deletionTimestamp": "2025-01-02T00:00:00Z",
            "deletionGracePeriodSeconds": 30, "generateName": "w-",
            "ownerReferences": [{ "kind": "X", "name": "y", "uid": "z" }],
            "finalizers": ["example.com/cleanup"],
        },
        "spec": { "size": 3 },
        "status": { "ready": true },
    });
    let want = json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {
            "name": "w", "namespace": "ns",
            "labels": { "app": "w" },
            "annotations": {
                "note": "kept",
                "kubernetes.io/change-cause": "kubectl set image ... (user intent, kept)",
            },
        },
        "spec": { "size": 3 },
    });
    assert_eq!(sanitize_value(object), want);
}

#[test]
fn emptied_or_empty_annotations_and_labels_are_removed() {
    let object = json!({
        "metadata": {
            "name": "x",
            "annotations": { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
            "labels": {},
        },
    });
    assert_eq!(sanitize_value(object), json!({ "metadata": { "name": "x" } }));
}

#[test]
fn user_written_empty_maps_stay() {
    let object = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p" },
        "spec": { "volumes": [{ "name": "tmp", "emptyDir": {} }], "nodeName": "node-1" },
    });
    let want = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p" },
        "spec": { "volumes": [{ "name": "tmp", "emptyDir": {} }] },
    });
    assert_eq!(sanitize_value(object), want);
    let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c" }, "data": {} });
    assert_eq!(sanitize_value(cm.clone()), cm);
}

#[test]
fn service_cluster_ips_go_unless_headless() {
    let svc = |ip: &str| {
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "s" },
                "spec": { "clusterIP": ip, "clusterIPs": [ip], "ports": [{ "port": 80 }] } })
    };
    let out = sanitize_value(svc("10.96.0.12"));
    assert_eq!(out["spec"], json!({ "ports": [{ "port": 80 }] }));
    assert_eq!(sanitize_value(svc("None")), svc("None"));
    // A Service whose spec held only the allocated IP loses the emptied spec.
    let bare = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "s" },
                       "spec": { "clusterIP": "10.0.0.1" } });
    assert_eq!(sanitize_value(bare).get("spec"), None);
    // Only core/v1 Services: a CRD's clusterIP is user data.
    let crd =
        json!({ "apiVersion": "example.com/v1", "kind": "Service", "spec": { "clusterIP": "1.2.3.4" } });
    assert_eq!(sanitize_value(crd.clone()), crd);
}

#[test]
fn null_template_timestamps_go() {
    let object = json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": { "name": "c" },
        "spec": {
            "jobTemplate": {
                "metadata": { "creationTimestamp": null },
                "spec": { "template": {
                    "metadata": { "creationTimestamp": null, "labels": { "a": "b" } },
                    "spec": { "containers": [] },
                } },
            },
            "template": { "metadata": { "creationTimestamp": "2025-01-01T00:00:00Z" } },
            "volumeClaimTemplates": [{ "metadata": { "name": "data", "creationTimestamp": null } }],
        },
    });
    let want = json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": { "name": "c" },
        "spec": {
            "jobTemplate": {
                "spec": { "template": { "metadata": { "labels": { "a": "b" } }, "spec": { "containers": [] } } },
            },
            // Not null: not ours to judge.
            "template": { "metadata": { "creationTimestamp": "2025-01-01T00:00:00Z" } },
            "volumeClaimTemplates": [{ "metadata": { "name": "data" } }],
        },
    });
    assert_eq!(sanitize_value(object), want);
}

#[test]
fn unknown_top_level_fields_survive() {
    // The fields an allow-list would lose, across several kinds.
    for object in [
        json!({ "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": { "name": "s" },
                "provisioner": "ebs.csi.aws.com", "parameters": { "type": "gp3" }, "reclaimPolicy": "Retain" }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": { "name": "b" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" },
                "subjects": [{ "kind": "Group", "name": "devs" }] }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": { "name": "r" },
                "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get"] }] }),
        json!({ "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": { "name": "w" }, "webhooks": [{ "name": "w.example.com", "sideEffects": "None" }] }),
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c" },
                "data": { "a": "1" }, "binaryData": { "b": "AA==" }, "immutable": true }),
    ] {
        assert_eq!(sanitize_value(object.clone()), object);
    }
}

#[test]
fn non_objects_pass_through() {
    for value in [json!(null), json!("x"), json!([1, 2]), json!({})] {
        assert_eq!(sanitize_value(value.clone()), value);
    }
}
