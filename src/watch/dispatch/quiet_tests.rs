//! Ignore rules in dispatch: per target, only ignored changes write nothing,
//! and targets without ignores see every change.

use super::tests::configmaps;
use super::*;
use crate::api::{LocalTargetReference, WatchRuleSpec};
use serde_json::json;

/// One WatchRule per target, each with its own rule entries.
fn routing(targets: &[(&str, Value)]) -> Routing {
    let mut table = RouteTable::default();
    let mut infos = HashMap::new();
    for (i, (target, rules)) in targets.iter().enumerate() {
        let spec = WatchRuleSpec {
            sink_ref: serde_json::from_value::<LocalTargetReference>(json!({"name": target})).unwrap(),
            rules: serde_json::from_value(rules.clone()).unwrap(),
            service_account_name: None,
            suspend: false,
        };
        table.set_watch_rule("ns", &format!("rule-{target}"), &spec).unwrap();
        let info = TargetInfo { id: i as u32, base_folder: target.to_string(), sealer: None };
        infos.insert(TargetKey::new("ns", *target), info);
    }
    Routing::new(table, infos)
}

/// A ConfigMap whose `noise` key `autoscaler` owns and whose `v` key
/// `tester` owns, as managedFields say.
fn configmap(v: &str, noise: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "ns", "resourceVersion": format!("{v}-{noise}"),
            "managedFields": [
                {"manager": "tester", "operation": "Apply", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:data": {"f:v": {}}}},
                {"manager": "autoscaler", "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:data": {"f:noise": {}}}},
            ]},
        "data": {"v": v, "noise": noise}
    })
}

/// (target, file content) of every write.
fn writes(out: &Dispatched) -> Vec<(String, String)> {
    out.items
        .iter()
        .map(|(target, item)| match item {
            WorkItem::Write { content, .. } => {
                (target.name.clone(), String::from_utf8(content.to_vec()).unwrap())
            }
            other => panic!("not a write: {other:?}"),
        })
        .collect()
}

fn apply(routing: &Routing, index: &mut ObjectIndex, object: &Value) -> Vec<(String, String)> {
    let out = on_apply(routing, &configmaps(), object, index, Instant::now(), false).unwrap();
    assert_eq!(out.unchanged, out.items.is_empty());
    writes(&out)
}

#[test]
fn ignored_fields_are_left_out_and_their_changes_write_nothing() {
    let routing = routing(&[
        ("quiet", json!([{"resources": ["configmaps"], "ignoreFields": ["/data/noise"]}])),
        ("all", json!([{"resources": ["configmaps"]}])),
    ]);
    let mut index = ObjectIndex::default();
    let created = apply(&routing, &mut index, &configmap("1", "a"));
    let quiet_file = &created.iter().find(|(t, _)| t == "quiet").unwrap().1;
    assert!(!quiet_file.contains("noise") && quiet_file.contains("v: \"1\""), "{quiet_file}");
    assert!(created.iter().any(|(t, file)| t == "all" && file.contains("noise: a")));

    // Only the ignored field changes: the target without ignores writes.
    let noisy = apply(&routing, &mut index, &configmap("1", "b"));
    assert_eq!(noisy.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), vec!["all"]);

    // A real change reaches both, still without the field for "quiet".
    let real = apply(&routing, &mut index, &configmap("2", "c"));
    assert_eq!(real.len(), 2);
    let quiet_file = &real.iter().find(|(t, _)| t == "quiet").unwrap().1;
    assert!(!quiet_file.contains("noise") && quiet_file.contains("v: \"2\""), "{quiet_file}");

    // Back to a value the file had: the index compares with what was written.
    assert!(apply(&routing, &mut index, &configmap("2", "a")).iter().all(|(t, _)| t == "all"));
}

#[test]
fn changes_by_ignored_managers_alone_write_nothing_and_the_file_catches_up() {
    let routing =
        routing(&[("quiet", json!([{"resources": ["configmaps"], "ignoreManagers": ["autoscaler"]}]))]);
    let mut index = ObjectIndex::default();
    let created = apply(&routing, &mut index, &configmap("1", "a"));
    assert!(created[0].1.contains("noise: a"), "the field stays in the file");
    for noise in ["b", "c", "d"] {
        assert!(apply(&routing, &mut index, &configmap("1", noise)).is_empty(), "noise {noise}");
    }
    // tester's change is written with autoscaler's latest value.
    let real = apply(&routing, &mut index, &configmap("2", "d"));
    assert_eq!(real.len(), 1);
    assert!(real[0].1.contains("noise: d") && real[0].1.contains("v: \"2\""), "{}", real[0].1);
}

#[test]
fn a_change_ignored_managers_did_not_make_alone_is_written() {
    let routing =
        routing(&[("quiet", json!([{"resources": ["configmaps"], "ignoreManagers": ["autoscaler"]}]))]);
    let mut index = ObjectIndex::default();
    apply(&routing, &mut index, &configmap("1", "a"));
    // Both keys change in one event.
    assert_eq!(apply(&routing, &mut index, &configmap("2", "b")).len(), 1);
    // A removal cannot be attributed: written.
    let mut removed = configmap("2", "b");
    removed["data"].as_object_mut().unwrap().remove("noise");
    assert_eq!(apply(&routing, &mut index, &removed).len(), 1);
}

#[test]
fn entries_of_one_target_add_up_their_ignores() {
    // Every ConfigMap, and the `noise` field of the labelled ones.
    let routing = routing(&[(
        "t",
        json!([{"resources": ["configmaps"]},
               {"resources": ["configmaps"], "labelSelector": {"matchLabels": {"noisy": "yes"}},
                "ignoreFields": ["/data/noise"]}]),
    )]);
    let mut index = ObjectIndex::default();
    let labelled = |noise: &str| {
        let mut object = configmap("1", noise);
        object["metadata"]["labels"] = json!({"noisy": "yes"});
        object
    };
    assert!(!apply(&routing, &mut index, &labelled("a"))[0].1.contains("noise"));
    assert!(apply(&routing, &mut index, &labelled("b")).is_empty());
    // Unlabelled, the object is only selected by the plain entry.
    let plain = apply(&routing, &mut index, &configmap("1", "b"));
    assert!(plain[0].1.contains("noise: b"));
}

#[test]
fn objects_without_ignores_keep_no_quiet_state() {
    let routing = routing(&[("t", json!([{"resources": ["configmaps"]}]))]);
    let mut index = ObjectIndex::default();
    apply(&routing, &mut index, &configmap("1", "a"));
    assert!(index.take_quiet("ns/cm").is_none());
}
