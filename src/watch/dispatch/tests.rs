use super::*;
use crate::api::{LocalTargetReference, WatchRuleSpec};

pub(super) fn configmaps() -> ServedResource {
    ServedResource {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
        namespaced: true,
        preferred: true,
        watchable: true,
    }
}

fn secrets() -> ServedResource {
    ServedResource { kind: "Secret".into(), plural: "secrets".into(), ..configmaps() }
}

fn routing(rules: serde_json::Value, folders: &[(&str, &str)]) -> Routing {
    let mut table = RouteTable::default();
    for (target, _) in folders {
        let spec = WatchRuleSpec {
            sink_ref: serde_json::from_value::<LocalTargetReference>(serde_json::json!({"name": target}))
                .unwrap(),
            rules: serde_json::from_value(rules.clone()).unwrap(),
            service_account_name: None,
            suspend: false,
        };
        table.set_watch_rule("ns", &format!("rule-{target}"), &spec).unwrap();
    }
    let targets = folders
        .iter()
        .enumerate()
        .map(|(i, (target, folder))| {
            (
                TargetKey::new("ns", *target),
                TargetInfo { id: i as u32, base_folder: folder.to_string(), sealer: None },
            )
        })
        .collect();
    Routing::new(table, targets)
}

fn configmap(name: &str, value: &str, labels: serde_json::Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "ns", "labels": labels, "resourceVersion": value, "uid": "u"},
        "data": {"v": value}
    })
}

fn paths(out: &Dispatched) -> Vec<(String, &'static str, Operation)> {
    out.items
        .iter()
        .map(|(target, item)| match item {
            WorkItem::Write { path, meta, .. } => {
                (format!("{}:{path}", target.name), "write", meta.operation)
            }
            WorkItem::Delete { path, meta } => (format!("{}:{path}", target.name), "delete", meta.operation),
            _ => (target.name.clone(), "other", Operation::All),
        })
        .collect()
}

#[test]
fn create_update_noop_and_delete() {
    let routing = routing(serde_json::json!([{"resources": ["configmaps"]}]), &[("t", "clusters/a")]);
    let mut index = ObjectIndex::default();
    let now = Instant::now();
    let created = on_apply(
        &routing,
        &configmaps(),
        &configmap("cm", "1", serde_json::json!({})),
        &mut index,
        now,
        false,
    )
    .unwrap();
    assert_eq!(
        paths(&created),
        vec![("t:clusters/a/ns/core/configmaps/cm.yaml".into(), "write", Operation::Create)]
    );

    let updated = on_apply(
        &routing,
        &configmaps(),
        &configmap("cm", "2", serde_json::json!({})),
        &mut index,
        now,
        false,
    )
    .unwrap();
    assert_eq!(paths(&updated)[0].2, Operation::Update);

    // Same data, only server-managed metadata differs: nothing to write.
    let mut same = configmap("cm", "2", serde_json::json!({}));
    same["metadata"]["resourceVersion"] = "999".into();
    let noop = on_apply(&routing, &configmaps(), &same, &mut index, now, false).unwrap();
    assert!(noop.unchanged && noop.items.is_empty());

    let deleted = on_delete(&routing, &configmaps(), &same, &mut index, now, false);
    assert_eq!(
        paths(&deleted),
        vec![("t:clusters/a/ns/core/configmaps/cm.yaml".into(), "delete", Operation::Delete)]
    );
    assert!(index.is_empty());
}

#[test]
fn one_object_goes_to_every_selecting_target_in_its_own_folder() {
    let routing = routing(serde_json::json!([{"resources": ["configmaps"]}]), &[("a", "one"), ("b", "two")]);
    let mut index = ObjectIndex::default();
    let out = on_apply(
        &routing,
        &configmaps(),
        &configmap("cm", "1", serde_json::json!({})),
        &mut index,
        Instant::now(),
        false,
    )
    .unwrap();
    let mut got: Vec<String> = paths(&out).into_iter().map(|p| p.0).collect();
    got.sort();
    assert_eq!(got, vec!["a:one/ns/core/configmaps/cm.yaml", "b:two/ns/core/configmaps/cm.yaml"]);
}

#[test]
fn an_object_that_stops_matching_the_selector_is_deleted_from_the_target() {
    let routing = routing(
        serde_json::json!([{"resources": ["configmaps"], "labelSelector": {"matchLabels": {"audit": "true"}}}]),
        &[("t", "")],
    );
    let mut index = ObjectIndex::default();
    let now = Instant::now();
    let out = on_apply(
        &routing,
        &configmaps(),
        &configmap("cm", "1", serde_json::json!({"audit": "true"})),
        &mut index,
        now,
        false,
    )
    .unwrap();
    assert_eq!(out.items.len(), 1);
    let out = on_apply(
        &routing,
        &configmaps(),
        &configmap("cm", "1", serde_json::json!({})),
        &mut index,
        now,
        false,
    )
    .unwrap();
    assert_eq!(paths(&out), vec![("t:ns/core/configmaps/cm.yaml".into(), "delete", Operation::Delete)]);
}

#[test]
fn secrets_are_withheld_without_encryption() {
    let routing = routing(serde_json::json!([{"resources": ["*"]}]), &[("t", "")]);
    let mut index = ObjectIndex::default();
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "ns"}, "data": {"password": "aHVudGVyMg=="}
    });
    let out = on_apply(&routing, &secrets(), &secret, &mut index, Instant::now(), false).unwrap();
    assert!(out.items.is_empty());
    assert_eq!(out.withheld_secrets, vec![TargetKey::new("ns", "t")]);
}

/// Two targets select a Secret; only the one with `spec.encryption` gets
/// it, sealed as `.sops.yaml`. An event that changes nothing in the
/// Secret (a new resourceVersion) writes nothing; a changed value does.
#[test]
fn secrets_go_sealed_to_targets_that_encrypt() {
    let mut routing = routing(serde_json::json!([{"resources": ["*"]}]), &[("sealed", "a"), ("plain", "b")]);
    let identity = age::x25519::Identity::generate();
    let recipients = crate::sops::Recipients::parse([identity.to_public().to_string()]).unwrap();
    let key = crate::sops::DigestKey::new(vec![9; 32]).unwrap();
    let mut targets = routing.targets.clone();
    targets.get_mut(&TargetKey::new("ns", "sealed")).unwrap().sealer =
        Some(Arc::new(crate::sops::Sealer::new(recipients, key)));
    routing = Routing::new(routing.table.clone(), targets);
    let mut index = ObjectIndex::default();
    let secret = |rv: &str, password: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db", "namespace": "ns", "resourceVersion": rv},
            "data": {"password": password}
        })
    };
    let out = on_apply(&routing, &secrets(), &secret("1", "aHVudGVyMg=="), &mut index, Instant::now(), false)
        .unwrap();
    assert_eq!(
        paths(&out),
        vec![("sealed:a/ns/core/secrets/db.sops.yaml".into(), "write", Operation::Create)]
    );
    assert_eq!(out.withheld_secrets, vec![TargetKey::new("ns", "plain")]);
    let WorkItem::Write { content, .. } = &out.items[0].1 else { unreachable!() };
    let text = std::str::from_utf8(content).unwrap();
    assert!(text.contains("ENC[AES256_GCM,") && !text.contains("aHVudGVyMg=="), "{text}");
    assert!(crate::sops::digest_in_file(content).is_some(), "{text}");

    let same =
        on_apply(&routing, &secrets(), &secret("2", "aHVudGVyMg=="), &mut index, Instant::now(), false)
            .unwrap();
    assert!(same.items.is_empty(), "an unchanged Secret is not sealed again");
    let changed =
        on_apply(&routing, &secrets(), &secret("3", "b3RoZXI="), &mut index, Instant::now(), false).unwrap();
    assert_eq!(
        paths(&changed),
        vec![("sealed:a/ns/core/secrets/db.sops.yaml".into(), "write", Operation::Update)]
    );
}

/// Helm release records and the operator's credential Secrets are neither
/// written nor reported as withheld, unless the exclusions are off.
#[test]
fn excluded_secrets_are_not_written_even_sealed() {
    let mut routing = routing(serde_json::json!([{"resources": ["*"]}]), &[("sealed", "a")]);
    let identity = age::x25519::Identity::generate();
    let recipients = crate::sops::Recipients::parse([identity.to_public().to_string()]).unwrap();
    let key = crate::sops::DigestKey::new(vec![9; 32]).unwrap();
    let mut targets = routing.targets.clone();
    targets.get_mut(&TargetKey::new("ns", "sealed")).unwrap().sealer =
        Some(Arc::new(crate::sops::Sealer::new(recipients, key)));
    let exclusions = SecretExclusions::new([("ns".to_owned(), "git".to_owned())]);
    routing = Routing::new(routing.table.clone(), targets).with_secret_exclusions(exclusions);
    let secret = |name: &str, type_: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
            "data": {"k": "dg=="}
        })
    };
    let helm = secret("sh.helm.release.v1.web.v1", "helm.sh/release.v1");
    for excluded in [&helm, &secret("git", "Opaque")] {
        let out =
            on_apply(&routing, &secrets(), excluded, &mut ObjectIndex::default(), Instant::now(), false)
                .unwrap();
        assert!(out.items.is_empty() && out.withheld_secrets.is_empty(), "{excluded}: {out:?}");
    }
    let out = on_apply(
        &routing,
        &secrets(),
        &secret("db", "Opaque"),
        &mut ObjectIndex::default(),
        Instant::now(),
        false,
    )
    .unwrap();
    assert_eq!(out.items.len(), 1, "an ordinary Secret is written");
    routing = routing.with_secret_exclusions(SecretExclusions::none());
    let out =
        on_apply(&routing, &secrets(), &helm, &mut ObjectIndex::default(), Instant::now(), false).unwrap();
    assert_eq!(out.items.len(), 1, "--write-all-secrets writes Helm's records too");
}

#[test]
fn a_create_only_rule_ignores_updates_and_deletes() {
    let routing =
        routing(serde_json::json!([{"operations": ["CREATE"], "resources": ["configmaps"]}]), &[("t", "")]);
    let mut index = ObjectIndex::default();
    let now = Instant::now();
    assert_eq!(
        on_apply(
            &routing,
            &configmaps(),
            &configmap("cm", "1", serde_json::json!({})),
            &mut index,
            now,
            false
        )
        .unwrap()
        .items
        .len(),
        1
    );
    assert!(
        on_apply(
            &routing,
            &configmaps(),
            &configmap("cm", "2", serde_json::json!({})),
            &mut index,
            now,
            false
        )
        .unwrap()
        .items
        .is_empty()
    );
    assert!(
        on_delete(
            &routing,
            &configmaps(),
            &configmap("cm", "2", serde_json::json!({})),
            &mut index,
            now,
            false
        )
        .items
        .is_empty()
    );
}

#[test]
fn a_completed_list_deletes_vanished_objects_and_sweeps_each_target() {
    let routing = routing(serde_json::json!([{"resources": ["configmaps"]}]), &[("t", "base")]);
    let mut index = ObjectIndex::default();
    let now = Instant::now();
    for name in ["keep", "gone"] {
        on_apply(
            &routing,
            &configmaps(),
            &configmap(name, "1", serde_json::json!({})),
            &mut index,
            now,
            false,
        )
        .unwrap();
    }
    let spec = WatchSpec { resource: configmaps(), scope: Scope::Namespace("ns".into()) };
    let items = on_list_complete(&routing, &spec, &["ns/keep".to_owned()].into(), &mut index, now);
    match &items[..] {
        [(_, WorkItem::Delete { path, .. }), (_, WorkItem::Sweep { scope, live })] => {
            assert_eq!(path, "base/ns/core/configmaps/gone.yaml");
            assert_eq!(scope.namespace.as_deref(), Some("ns"));
            assert_eq!(live, &HashSet::from(["base/ns/core/configmaps/keep.yaml".to_owned()]));
        }
        other => panic!("unexpected items: {other:?}"),
    }
}

#[test]
fn an_object_that_does_not_sanitize_names_the_targets_that_select_it() {
    let routing = routing(serde_json::json!([{"resources": ["configmaps"]}]), &[("a", "one"), ("b", "two")]);
    let mut index = ObjectIndex::default();
    let mut wrong = configmap("cm", "1", serde_json::json!({}));
    wrong["kind"] = "Widget".into();
    let failed = on_apply(&routing, &configmaps(), &wrong, &mut index, Instant::now(), false).unwrap_err();
    let mut targets: Vec<String> = failed.targets.iter().map(|t| t.name.clone()).collect();
    targets.sort();
    assert_eq!(targets, ["a", "b"]);
    assert_eq!(failed.error.category(), "type_mismatch", "{}", failed.error);
    assert!(index.is_empty(), "the index keeps what was last written, and nothing was");
}

/// A relist's sweep counts as live what a target selects but was not sent:
/// a Secret it cannot seal (its encryption went away, or its rules are not
/// read yet) and an object that no longer sanitizes keep their files, as
/// promised, instead of being deleted by the next relist. Once gone from
/// the cluster, they are swept.
#[test]
fn a_relist_keeps_the_files_of_objects_withheld_from_a_target() {
    let routing = routing(serde_json::json!([{"resources": ["*"]}]), &[("t", "base")]);
    let now = Instant::now();
    let spec = |resource| WatchSpec { resource, scope: Scope::Namespace("ns".into()) };
    let live_after = |resource: ServedResource, objects: &[Value], listed: &[&str]| {
        // A relist starts from a fresh index.
        let mut index = ObjectIndex::default();
        for object in objects {
            let _ = on_apply(&routing, &resource, object, &mut index, now, true);
        }
        let listed = listed.iter().map(|k| k.to_string()).collect();
        let items = on_list_complete(&routing, &spec(resource), &listed, &mut index, now);
        let sweeps: Vec<HashSet<String>> = items
            .into_iter()
            .filter_map(|(_, item)| match item {
                WorkItem::Sweep { live, .. } => Some(live),
                _ => None,
            })
            .collect();
        let [live] = &sweeps[..] else { panic!("one sweep: {sweeps:?}") };
        live.clone()
    };
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "ns"}, "data": {"password": "aHVudGVyMg=="}
    });
    assert_eq!(
        live_after(secrets(), std::slice::from_ref(&secret), &["ns/db"]),
        HashSet::from(["base/ns/core/secrets/db.sops.yaml".to_owned()]),
        "a withheld Secret's sealed file stays"
    );
    let mut wrong = configmap("cm", "1", serde_json::json!({}));
    wrong["kind"] = "Widget".into();
    let fine = configmap("ok", "1", serde_json::json!({}));
    assert_eq!(
        live_after(configmaps(), &[wrong, fine], &["ns/cm", "ns/ok"]),
        HashSet::from([
            "base/ns/core/configmaps/cm.yaml".to_owned(),
            "base/ns/core/configmaps/ok.yaml".to_owned()
        ]),
        "an object that does not sanitize keeps its last file"
    );

    // Withheld, then deleted, or sent after all: nothing is left over.
    let mut index = ObjectIndex::default();
    on_apply(&routing, &secrets(), &secret, &mut index, now, false).unwrap();
    on_delete(&routing, &secrets(), &secret, &mut index, now, false);
    assert_eq!(index.kept_by(0).count(), 0, "a deleted object is forgotten");
    let mut wrong = configmap("cm", "1", serde_json::json!({}));
    wrong["kind"] = "Widget".into();
    let _ = on_apply(&routing, &configmaps(), &wrong, &mut index, now, false);
    assert_eq!(index.withheld("ns/cm"), [0]);
    on_apply(&routing, &configmaps(), &configmap("cm", "2", serde_json::json!({})), &mut index, now, false)
        .unwrap();
    assert!(index.withheld("ns/cm").is_empty(), "sent after all");
    assert_eq!(index.kept_by(0).collect::<Vec<_>>(), ["ns/cm"]);
}
