//! Tests for `managed.rs`: reading `fieldsV1` and attributing changes.

use super::*;
use serde_json::json;

/// A Deployment as the API server returns it after `tester` applied it and
/// `autoscaler` set the replicas through the scale subresource.
fn deployment(replicas: u64, image: &str, extra_managed: Vec<Value>) -> Value {
    let mut managed = vec![
        json!({"manager": "tester", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}},
                        "f:args": {}
                    }}}
                }
            }
        }}),
        json!({"manager": "autoscaler", "operation": "Update", "subresource": "scale", "fieldsType": "FieldsV1",
               "fieldsV1": {"f:spec": {"f:replicas": {}}}}),
    ];
    managed.extend(extra_managed);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "labels": {"app": "web"}, "managedFields": managed},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image, "args": ["--a"],
                                         "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}
            }
        }
    })
}

fn clean(object: &Value) -> Value {
    crate::sanitize::sanitize_value(object.clone())
}

fn quiet(before: &Value, after: &Value, managers: &[&str], skip: &[&str]) -> bool {
    let managers: Vec<String> = managers.iter().map(|m| m.to_string()).collect();
    let skip: Vec<Pointer> = skip.iter().map(|p| Pointer::parse(p).unwrap()).collect();
    let owners = Owners::new(after, &managers);
    only_ignored_changes(&clean(before), &clean(after), &owners, &skip)
}

#[test]
fn a_change_only_the_ignored_manager_owns_is_quiet() {
    let before = deployment(2, "web:1", vec![]);
    let after = deployment(7, "web:1", vec![]);
    assert!(quiet(&before, &after, &["autoscaler"], &[]));
    assert!(!quiet(&before, &after, &["someone-else"], &[]));
    assert!(!quiet(&before, &after, &[], &[]));
}

#[test]
fn a_change_another_manager_owns_is_significant() {
    let before = deployment(2, "web:1", vec![]);
    let image = deployment(2, "web:2", vec![]);
    assert!(!quiet(&before, &image, &["autoscaler"], &[]));
    // Both at once: the image still counts.
    let both = deployment(9, "web:2", vec![]);
    assert!(!quiet(&before, &both, &["autoscaler"], &[]));
}

#[test]
fn shared_ownership_is_significant() {
    let co_owner = json!({"manager": "tester-2", "operation": "Apply", "fieldsType": "FieldsV1",
                          "fieldsV1": {"f:spec": {"f:replicas": {}}}});
    let before = deployment(2, "web:1", vec![co_owner.clone()]);
    let after = deployment(3, "web:1", vec![co_owner]);
    assert!(!quiet(&before, &after, &["autoscaler"], &[]));
}

#[test]
fn an_unowned_change_is_significant() {
    // A field no entry names (a defaulting webhook, say).
    let before = deployment(2, "web:1", vec![]);
    let mut after = before.clone();
    after["spec"]["paused"] = json!(true);
    assert!(!quiet(&before, &after, &["autoscaler"], &[]));
}

#[test]
fn list_elements_are_found_by_their_key() {
    let restarter = json!({"manager": "kubectl-rollout", "operation": "Update", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
            "f:ports": {"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {"f:name": {}}}}}}}}}});
    let before = deployment(2, "web:1", vec![restarter.clone()]);
    let mut after = deployment(2, "web:1", vec![restarter]);
    after["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"] = json!("http");
    assert!(quiet(&before, &after, &["kubectl-rollout"], &[]));
    // The same change on an element the key does not name is not attributed.
    let mut other = after.clone();
    other["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(9090);
    assert!(!quiet(&before, &other, &["kubectl-rollout"], &[]));
}

#[test]
fn an_added_map_is_attributed_leaf_by_leaf() {
    let annotator = |keys: Value| {
        json!({"manager": "kubectl-rollout", "operation": "Update", "fieldsType": "FieldsV1",
               "fieldsV1": {"f:spec": {"f:template": {"f:metadata": {"f:annotations": keys}}}}})
    };
    let before = deployment(2, "web:1", vec![]);
    let mut after =
        deployment(2, "web:1", vec![annotator(json!({".": {}, "f:kubectl.kubernetes.io/restartedAt": {}}))]);
    after["spec"]["template"]["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/restartedAt": "now"});
    assert!(quiet(&before, &after, &["kubectl-rollout"], &[]));
    // A second key in the new map that the manager does not own.
    let mut more =
        deployment(2, "web:1", vec![annotator(json!({".": {}, "f:kubectl.kubernetes.io/restartedAt": {}}))]);
    more["spec"]["template"]["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/restartedAt": "now", "team": "a"});
    assert!(!quiet(&before, &more, &["kubectl-rollout"], &[]));
}

#[test]
fn atomic_values_are_owned_whole() {
    let before = deployment(2, "web:1", vec![]);
    let mut after = before.clone();
    after["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["--a", "--b"]);
    assert!(quiet(&before, &after, &["tester"], &[]), "tester owns args as one atomic list");
    assert!(!quiet(&before, &after, &["autoscaler"], &[]));
}

#[test]
fn a_removal_is_always_significant() {
    // The new managedFields no longer name a removed field, so it cannot
    // be attributed: never hide what cannot be proven quiet.
    let before = deployment(2, "web:1", vec![]);
    let mut after = before.clone();
    after["spec"].as_object_mut().unwrap().remove("replicas");
    assert!(!quiet(&before, &after, &["autoscaler"], &[]));
    // Unless the field is ignored outright.
    assert!(quiet(&before, &after, &["autoscaler"], &["/spec/replicas"]));
}

#[test]
fn ignored_fields_are_skipped() {
    let before = deployment(2, "web:1", vec![]);
    let image = deployment(2, "web:2", vec![]);
    assert!(quiet(&before, &image, &[], &["/spec/template/spec/containers/0/image"]));
    assert!(!quiet(&before, &image, &[], &["/spec/template/spec/containers/1/image"]));
}

#[test]
fn an_unreadable_entry_of_another_manager_may_own_anything() {
    let odd =
        json!({"manager": "old-client", "operation": "Update", "fieldsType": "FieldsV2", "fieldsV2": {}});
    let before = deployment(2, "web:1", vec![odd.clone()]);
    let after = deployment(7, "web:1", vec![odd]);
    assert!(!quiet(&before, &after, &["autoscaler"], &[]));
}

#[test]
fn no_change_is_quiet() {
    let object = deployment(2, "web:1", vec![]);
    assert!(quiet(&object, &object, &[], &[]));
}

/// The author of a change is the manager of the newest entry; status
/// writers only when nobody else is named.
#[test]
fn the_newest_manager_is_the_author() {
    let entry = |manager: &str, time: Option<&str>, subresource: Option<&str>| {
        let mut e =
            json!({"manager": manager, "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}});
        if let Some(time) = time {
            e["time"] = json!(time);
        }
        if let Some(subresource) = subresource {
            e["subresource"] = json!(subresource);
        }
        e
    };
    let object = |entries: Vec<Value>| json!({"metadata": {"name": "x", "managedFields": entries}});
    let cases: Vec<(Vec<Value>, Option<&str>)> = vec![
        (vec![], None),
        (
            vec![
                entry("kubectl-client-side-apply", Some("2026-12-05T10:00:00Z"), None),
                entry("kube-controller-manager", Some("2026-12-05T11:00:00Z"), Some("scale")),
                entry("helm", Some("2026-12-05T09:00:00Z"), None),
            ],
            Some("kube-controller-manager"),
        ),
        (
            vec![
                entry("kubectl-edit", Some("2026-12-05T10:00:00Z"), None),
                entry("kubelet", Some("2026-12-05T12:00:00Z"), Some("status")),
            ],
            Some("kubectl-edit"),
        ),
        (vec![entry("kubelet", Some("2026-12-05T12:00:00Z"), Some("status"))], Some("kubelet")),
        (
            vec![
                entry("first", Some("2026-12-05T10:00:00Z"), None),
                entry("second", Some("2026-12-05T10:00:00Z"), None),
            ],
            Some("second"),
        ),
        (
            vec![entry("timed", Some("2026-12-05T10:00:00Z"), None), entry("untimed", None, None)],
            Some("timed"),
        ),
        (vec![entry("", Some("2026-12-05T10:00:00Z"), None), entry("named", None, None)], Some("named")),
    ];
    for (entries, expected) in cases {
        let object = object(entries);
        assert_eq!(newest_manager(&object), expected, "{object}");
    }
    assert_eq!(newest_manager(&json!({"metadata": {}})), None);
}
