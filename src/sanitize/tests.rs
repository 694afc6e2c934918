//! End-to-end tests of `sanitize`: realistic objects in, path + bytes + hash out.

use super::fixtures::*;
use super::*;
use serde_json::json;

fn text(s: &Sanitized) -> &str {
    std::str::from_utf8(&s.yaml).unwrap()
}

/// The bytes must read back (serde-saphyr) as the sanitized value itself.
fn assert_reads_back(out: &Sanitized, object: &Value) {
    let back: Value = serde_saphyr::from_str(text(out)).unwrap();
    assert_eq!(back, sanitize_value(object.clone()));
}

#[test]
fn deployment_matches_golden_file() {
    let out = sanitize(&deployment(), &deployments()).unwrap();
    assert_eq!(out.path, "team-a/apps/deployments/web.yaml");
    assert_eq!(text(&out), include_str!("testdata/deployment.yaml"));
    assert_eq!(out.hash, xxhash_rust::xxh3::xxh3_64(&out.yaml));
    assert_reads_back(&out, &deployment());
}

#[test]
fn key_order_does_not_change_bytes_or_hash() {
    let a = sanitize(&deployment(), &deployments()).unwrap();
    let b = sanitize(&reversed(&deployment()), &deployments()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn status_and_managed_fields_changes_give_identical_bytes() {
    let base = sanitize(&deployment(), &deployments()).unwrap();
    let mut status_only = deployment();
    status_only["status"]["readyReplicas"] = json!(1);
    status_only["status"]["conditions"] = json!([]);
    let mut managed_only = deployment();
    managed_only["metadata"]["managedFields"][0]["time"] = json!("2026-01-01T00:00:00Z");
    let mut server_only = deployment();
    server_only["metadata"]["resourceVersion"] = json!("48213400");
    server_only["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("8");
    for changed in [status_only, managed_only, server_only] {
        assert_eq!(sanitize(&changed, &deployments()).unwrap(), base);
    }
    // A real change does change the bytes.
    let mut scaled = deployment();
    scaled["spec"]["replicas"] = json!(4);
    assert_ne!(sanitize(&scaled, &deployments()).unwrap().hash, base.hash);
}

#[test]
fn list_items_without_type_give_the_same_bytes_as_watch_events() {
    let mut item = deployment();
    let map = item.as_object_mut().unwrap();
    map.remove("apiVersion");
    map.remove("kind");
    let from_list = sanitize(&item, &deployments()).unwrap();
    assert_eq!(from_list, sanitize(&deployment(), &deployments()).unwrap());
    // ... also for the kind-specific rules (the Service's clusterIP).
    let mut svc = service("10.96.4.7");
    svc.as_object_mut().unwrap().remove("kind");
    assert!(!text(&sanitize(&svc, &services()).unwrap()).contains("10.96.4.7"));
}

#[test]
fn service_drops_allocated_ip_but_keeps_headless() {
    let out = sanitize(&service("10.96.4.7"), &services()).unwrap();
    assert_eq!(out.path, "team-a/core/services/web.yaml");
    assert!(!text(&out).contains("clusterIP"), "{}", text(&out));
    assert!(!text(&out).contains("status"));
    assert_reads_back(&out, &service("10.96.4.7"));

    let headless = sanitize(&service("None"), &services()).unwrap();
    assert!(text(&headless).contains("  clusterIP: None\n  clusterIPs:\n  - None\n"));
    assert_reads_back(&headless, &service("None"));
}

#[test]
fn storage_class_keeps_provisioner() {
    let out = sanitize(&storage_class(), &storage_classes()).unwrap();
    assert_eq!(out.path, "_cluster/storage.k8s.io/storageclasses/fast-ssd.yaml");
    assert_eq!(
        text(&out),
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: fast-ssd\n\
         allowVolumeExpansion: true\nparameters:\n  iops: \"3000\"\n  type: gp3\n\
         provisioner: ebs.csi.aws.com\nreclaimPolicy: Delete\nvolumeBindingMode: WaitForFirstConsumer\n"
    );
}

#[test]
fn config_map_with_multi_line_data_is_a_literal_block() {
    let object = nginx_config_map();
    let out = sanitize(&object, &configmaps()).unwrap();
    assert_eq!(
        text(&out),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nginx\n  namespace: team-a\ndata:\n  \
         empty: \"\"\n  nginx.conf: |\n    server {\n        listen 8080;\n        location / {\n          \
         \x20 proxy_pass http://web;  \n        }\n    }\n  \"on\": \"yes\"\n"
    );
    assert_reads_back(&out, &object);
}

#[test]
fn one_mib_config_map() {
    let object = big_config_map();
    let out = sanitize(&object, &configmaps()).unwrap();
    assert!(out.yaml.len() > 1 << 20);
    assert_eq!(out.path, "team-a/core/configmaps/big.yaml");
    assert_reads_back(&out, &object);
}

#[test]
fn unusual_valid_names() {
    let out = sanitize(&cluster_role(), &cluster_roles()).unwrap();
    assert_eq!(out.path, "_cluster/rbac.authorization.k8s.io/clusterroles/system%3Acontroller%3Afoo.yaml");
    assert!(text(&out).contains("  name: system:controller:foo\n"));

    for name in UNUSUAL_NAMES {
        let out = sanitize(&config_map(name, json!({})), &configmaps()).unwrap();
        let decoded = decode_object_path(&out.path).unwrap();
        assert_eq!(decoded.name, name);
        assert_eq!(decoded.namespace.as_deref(), Some("team-a"));
        let back: Value = serde_saphyr::from_str(text(&out)).unwrap();
        assert_eq!(back["metadata"]["name"], json!(name), "{}", text(&out));
    }
}

#[test]
fn secrets_are_refused() {
    let secrets = fixtures::resource("", "v1", "Secret", "secrets", true);
    assert!(is_secret(&secrets));
    assert!(!is_secret(&configmaps()));
    assert!(!is_secret(&fixtures::resource("example.com", "v1", "Secret", "secrets", true)));
    let secret = json!({ "apiVersion": "v1", "kind": "Secret",
                         "metadata": { "name": "db", "namespace": "team-a" }, "data": { "pw": "aHVudGVyMg==" } });
    let err = sanitize(&secret, &secrets).unwrap_err();
    assert!(matches!(err, SanitizeError::PlaintextSecret { .. }));
    assert!(!err.to_string().contains("aHVudGVyMg"));
    // Even when routed under the wrong resource.
    let err = sanitize(&secret, &configmaps()).unwrap_err();
    assert_eq!(err.category(), "plaintext_secret");
}

#[test]
fn malformed_objects_are_errors_with_clear_messages() {
    let cases = [
        (json!([1]), configmaps(), "object is a JSON array, not a JSON object"),
        (json!({ "metadata": {} }), configmaps(), "ConfigMap object has no metadata.name"),
        (json!({ "metadata": { "name": "" } }), configmaps(), "ConfigMap object has no metadata.name"),
        (
            json!({ "metadata": { "name": "x" } }),
            configmaps(),
            "ConfigMap \"x\" is namespaced but has no metadata.namespace",
        ),
        (
            json!({ "metadata": { "name": "x", "namespace": "a" } }),
            storage_classes(),
            "StorageClass \"x\" is cluster-scoped but has metadata.namespace \"a\"",
        ),
        (
            json!({ "apiVersion": "apps/v1beta1", "metadata": { "name": "x", "namespace": "a" } }),
            deployments(),
            "object \"x\" says apiVersion: \"apps/v1beta1\", but was watched as \"apps/v1\"",
        ),
    ];
    for (object, resource, message) in cases {
        let err = sanitize(&object, &resource).unwrap_err();
        assert!(err.to_string().starts_with(message), "{err}");
    }
}

#[test]
fn user_empty_data_is_kept() {
    let out = sanitize(&config_map("empty", json!({})), &configmaps()).unwrap();
    assert!(text(&out).ends_with("data: {}\n"), "{}", text(&out));
}
