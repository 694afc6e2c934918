use super::*;
use crate::api::{LocalTargetReference, NamespacedTargetReference};

fn served(group: &str, version: &str, plural: &str, namespaced: bool, preferred: bool) -> ServedResource {
    ServedResource {
        group: group.into(),
        version: version.into(),
        kind: plural.trim_end_matches('s').into(),
        plural: plural.into(),
        namespaced,
        preferred,
        watchable: true,
    }
}

fn catalog() -> ResourceCatalog {
    ResourceCatalog::new(vec![
        served("", "v1", "configmaps", true, true),
        served("", "v1", "secrets", true, true),
        served("", "v1", "namespaces", false, true),
        served("", "v1", "events", true, true),
        served("apps", "v1", "deployments", true, true),
        served("example.com", "v1", "widgets", true, true),
        served("example.com", "v1beta1", "widgets", true, false),
    ])
}

fn rule(json: serde_json::Value) -> Rule {
    serde_json::from_value(json).unwrap()
}

fn watch_rule(target: &str, rules: Vec<Rule>) -> WatchRuleSpec {
    WatchRuleSpec {
        sink_ref: serde_json::from_value::<LocalTargetReference>(serde_json::json!({"name": target}))
            .unwrap(),
        rules,
        service_account_name: None,
        suspend: false,
    }
}

fn cluster_rule(namespace: &str, target: &str, rules: Vec<Rule>) -> ClusterWatchRuleSpec {
    ClusterWatchRuleSpec {
        sink_ref: serde_json::from_value::<NamespacedTargetReference>(
            serde_json::json!({"name": target, "namespace": namespace}),
        )
        .unwrap(),
        rules,
        service_account_name: None,
        suspend: false,
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn a_watch_rule_reaches_only_its_own_namespace() {
    let mut table = RouteTable::default();
    table
        .set_watch_rule(
            "team-a",
            "r",
            &watch_rule("t", vec![rule(serde_json::json!({"resources": ["configmaps"]}))]),
        )
        .unwrap();
    let cm = served("", "v1", "configmaps", true, true);
    assert_eq!(
        table.route(&cm, Some("team-a"), &labels(&[]), Operation::Create),
        [TargetKey::new("team-a", "t")].into()
    );
    assert!(table.route(&cm, Some("team-b"), &labels(&[]), Operation::Create).is_empty());
    assert!(table.route(&cm, None, &labels(&[]), Operation::Create).is_empty());
}

#[test]
fn a_watch_rule_never_watches_cluster_scoped_resources_and_says_why() {
    let mut table = RouteTable::default();
    table
        .set_watch_rule(
            "team-a",
            "r",
            &watch_rule("t", vec![rule(serde_json::json!({"resources": ["namespaces"]}))]),
        )
        .unwrap();
    let plan = table.plan(&catalog());
    assert!(plan.watches.is_empty());
    let problems = &plan.problems[&RuleSource::WatchRule { namespace: "team-a".into(), name: "r".into() }];
    assert!(problems[0].contains("use a ClusterWatchRule"), "{problems:?}");
}

#[test]
fn a_cluster_rule_watches_everywhere_and_subsumes_namespace_watches() {
    let mut table = RouteTable::default();
    table
        .set_watch_rule(
            "team-a",
            "r",
            &watch_rule("t", vec![rule(serde_json::json!({"resources": ["configmaps"]}))]),
        )
        .unwrap();
    table
        .set_watch_rule(
            "team-b",
            "r",
            &watch_rule("t", vec![rule(serde_json::json!({"resources": ["configmaps"]}))]),
        )
        .unwrap();
    let before = table.plan(&catalog());
    assert_eq!(before.watches.len(), 2, "one watch per namespace: {:?}", before.watches);

    table
        .set_cluster_watch_rule(
            "c",
            &cluster_rule(
                "ops",
                "all",
                vec![rule(serde_json::json!({"resources": ["configmaps", "namespaces"]}))],
            ),
        )
        .unwrap();
    let after = table.plan(&catalog());
    let scopes: Vec<(&str, &Scope)> =
        after.watches.iter().map(|w| (w.resource.plural.as_str(), &w.scope)).collect();
    assert_eq!(scopes, vec![("configmaps", &Scope::All), ("namespaces", &Scope::All)]);

    let ns = served("", "v1", "namespaces", false, true);
    assert_eq!(
        table.route(&ns, None, &labels(&[]), Operation::Update),
        [TargetKey::new("ops", "all")].into()
    );
}

#[test]
fn wildcards_skip_churning_resources_but_explicit_names_do_not() {
    let mut table = RouteTable::default();
    table
        .set_watch_rule("a", "r", &watch_rule("t", vec![rule(serde_json::json!({"resources": ["*"]}))]))
        .unwrap();
    let plan = table.plan(&catalog());
    let plurals: BTreeSet<&str> = plan.watches.iter().map(|w| w.resource.plural.as_str()).collect();
    assert!(plurals.contains("configmaps") && plurals.contains("secrets") && plurals.contains("widgets"));
    assert!(!plurals.contains("events") && !plurals.contains("namespaces"));

    table
        .set_watch_rule("a", "r", &watch_rule("t", vec![rule(serde_json::json!({"resources": ["events"]}))]))
        .unwrap();
    assert_eq!(table.plan(&catalog()).watches.len(), 1);
}

#[test]
fn the_preferred_version_is_watched_unless_another_is_asked_for() {
    let mut table = RouteTable::default();
    table
        .set_watch_rule(
            "a",
            "r",
            &watch_rule(
                "t",
                vec![rule(serde_json::json!({"apiGroups": ["example.com"], "resources": ["widgets"]}))],
            ),
        )
        .unwrap();
    let version =
        |table: &RouteTable| table.plan(&catalog()).watches.first().unwrap().resource.version.clone();
    assert_eq!(version(&table), "v1");
    table
        .set_watch_rule(
            "a",
            "r",
            &watch_rule("t", vec![rule(serde_json::json!({"apiGroups": ["example.com"], "apiVersions": ["v1beta1"], "resources": ["widgets"]}))]),
        )
        .unwrap();
    assert_eq!(version(&table), "v1beta1");
}

#[test]
fn operations_groups_and_labels_filter_events() {
    let mut table = RouteTable::default();
    let spec = watch_rule(
        "t",
        vec![rule(serde_json::json!({
            "operations": ["CREATE", "DELETE"],
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "labelSelector": {"matchLabels": {"audit": "true"}}
        }))],
    );
    table.set_watch_rule("a", "r", &spec).unwrap();
    let deploy = served("apps", "v1", "deployments", true, true);
    let audited = labels(&[("audit", "true")]);
    assert_eq!(table.route(&deploy, Some("a"), &audited, Operation::Create).len(), 1);
    assert!(table.route(&deploy, Some("a"), &audited, Operation::Update).is_empty());
    assert!(table.route(&deploy, Some("a"), &labels(&[]), Operation::Delete).is_empty());
    let cm = served("", "v1", "configmaps", true, true);
    assert!(table.route(&cm, Some("a"), &audited, Operation::Create).is_empty());
}

#[test]
fn unknown_resources_are_reported_and_removed_rules_stop_routing() {
    let mut table = RouteTable::default();
    table
        .set_watch_rule("a", "r", &watch_rule("t", vec![rule(serde_json::json!({"resources": ["gizmos"]}))]))
        .unwrap();
    let plan = table.plan(&catalog());
    assert!(plan.problems.values().flatten().any(|p| p.contains("\"gizmos\" is not served")));
    table.remove(&RuleSource::WatchRule { namespace: "a".into(), name: "r".into() });
    assert!(table.targets().is_empty());
}

#[test]
fn owned_resources_follow_the_rules_of_the_target() {
    let mut table = RouteTable::default();
    table
        .set_watch_rule(
            "a",
            "r",
            &watch_rule("t", vec![rule(serde_json::json!({"resources": ["configmaps", "namespaces"]}))]),
        )
        .unwrap();
    let owned = table.owned_resources(&TargetKey::new("a", "t"), &catalog());
    assert_eq!(owned, [(String::new(), "configmaps".to_owned())].into());
}

#[test]
fn a_bad_selector_names_the_rule_index() {
    let mut table = RouteTable::default();
    let spec = watch_rule(
        "t",
        vec![
            rule(serde_json::json!({"resources": ["configmaps"]})),
            rule(
                serde_json::json!({"resources": ["configmaps"], "labelSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
            ),
        ],
    );
    let error = table.set_watch_rule("a", "r", &spec).unwrap_err();
    assert_eq!(error.index, 1);
    assert!(error.to_string().starts_with("rules[1]: labelSelector"), "{error}");
}

#[test]
fn selection_is_independent_of_the_recorded_operations() {
    let mut table = RouteTable::default();
    table
        .set_watch_rule(
            "a",
            "r",
            &watch_rule(
                "t",
                vec![rule(serde_json::json!({"operations": ["CREATE"], "resources": ["configmaps"]}))],
            ),
        )
        .unwrap();
    let cm = served("", "v1", "configmaps", true, true);
    let selected = table.selecting(&cm, Some("a"), &labels(&[]));
    let mask = selected[&TargetKey::new("a", "t")].mask;
    assert!(
        mask.covers(Operation::Create) && !mask.covers(Operation::Update) && !mask.covers(Operation::Delete)
    );
    assert!(!table.records(&TargetKey::new("a", "t"), "", "configmaps", Operation::Delete));
    assert!(table.records(&TargetKey::new("a", "t"), "", "configmaps", Operation::Create));
}

#[test]
fn a_denied_resource_is_neither_watched_nor_routed_for_that_rule_only() {
    let mut table = RouteTable::default();
    let all = || {
        vec![rule(serde_json::json!({"apiGroups": ["", "apps"], "resources": ["configmaps", "deployments"]}))]
    };
    table.set_watch_rule("team-a", "r", &watch_rule("t", all())).unwrap();
    table.set_watch_rule("team-b", "r", &watch_rule("t", all())).unwrap();
    let source = RuleSource::WatchRule { namespace: "team-a".into(), name: "r".into() };
    let selected = table.selected_resources(&source, &catalog());
    assert_eq!(
        selected.into_iter().collect::<Vec<_>>(),
        vec![
            ((String::new(), "configmaps".into()), Some("team-a".into())),
            (("apps".into(), "deployments".into()), Some("team-a".into())),
        ]
    );

    table.deny(&source, &BTreeSet::from([(String::new(), "configmaps".to_owned())]));
    let configmaps = served("", "v1", "configmaps", true, true);
    assert!(table.selecting(&configmaps, Some("team-a"), &labels(&[])).is_empty());
    assert!(!table.records(&TargetKey::new("team-a", "t"), "", "configmaps", Operation::Delete));
    // The other namespace's rule is not touched.
    assert_eq!(table.selecting(&configmaps, Some("team-b"), &labels(&[])).len(), 1);
    let plan = table.plan(&catalog());
    let scopes: Vec<&Scope> =
        plan.watches.iter().filter(|w| w.resource.plural == "configmaps").map(|w| &w.scope).collect();
    assert_eq!(scopes, vec![&Scope::Namespace("team-b".into())]);
    // Still selected, so its ServiceAccount's access is asked again.
    assert_eq!(table.selected_resources(&source, &catalog()).len(), 2);
}

#[test]
fn selection_carries_each_targets_merged_ignore_rules() {
    let mut table = RouteTable::default();
    let rules = vec![
        rule(serde_json::json!({"resources": ["configmaps"], "ignoreFields": ["/data/a"]})),
        rule(serde_json::json!({"resources": ["configmaps"], "ignoreManagers": ["hpa"]})),
        rule(serde_json::json!({"resources": ["secrets"], "ignoreFields": ["/data/b"]})),
    ];
    table.set_watch_rule("a", "r", &watch_rule("t", rules)).unwrap();
    table
        .set_watch_rule(
            "a",
            "plain",
            &watch_rule("u", vec![rule(serde_json::json!({"resources": ["configmaps"]}))]),
        )
        .unwrap();
    let cm = served("", "v1", "configmaps", true, true);
    let selected = table.selecting(&cm, Some("a"), &labels(&[]));
    let ignore = selected[&TargetKey::new("a", "t")].ignore.as_deref().unwrap();
    let fields: Vec<String> = ignore.fields().iter().map(ToString::to_string).collect();
    assert_eq!(fields, vec!["/data/a"], "the secrets entry does not select a ConfigMap");
    assert_eq!(ignore.managers(), ["hpa"]);
    assert!(selected[&TargetKey::new("a", "u")].ignore.is_none());
}

#[test]
fn an_invalid_ignore_pointer_names_the_entry() {
    let mut table = RouteTable::default();
    let rules = vec![
        rule(serde_json::json!({"resources": ["configmaps"]})),
        rule(serde_json::json!({"resources": ["configmaps"], "ignoreFields": ["/data/a~2"]})),
    ];
    let error = table.set_watch_rule("a", "r", &watch_rule("t", rules)).unwrap_err();
    assert_eq!(error.index, 1);
    assert_eq!(
        error.to_string(),
        "rules[1]: ignoreFields: \"/data/a~2\" has a '~' that is not ~0 (for '~') or ~1 (for '/')"
    );
}

#[test]
fn a_suspended_rule_selects_nothing_but_keeps_what_it_owns() {
    let mut table = RouteTable::default();
    let mut spec = watch_rule("t", vec![rule(serde_json::json!({"resources": ["configmaps"]}))]);
    spec.suspend = true;
    table.set_watch_rule("ns", "r", &spec).unwrap();
    let configmaps = served("", "v1", "configmaps", true, true);
    let target = TargetKey::new("ns", "t");
    assert!(table.selecting(&configmaps, Some("ns"), &labels(&[])).is_empty());
    assert!(table.route(&configmaps, Some("ns"), &labels(&[]), Operation::Update).is_empty());
    assert!(!table.records(&target, "", "configmaps", Operation::Delete));
    assert!(table.plan(&catalog()).watches.is_empty(), "no watch for a suspended rule");
    assert_eq!(
        table.owned_resources(&target, &catalog()),
        BTreeSet::from([(String::new(), "configmaps".to_owned())]),
        "what it wrote is not swept"
    );
    let source = RuleSource::WatchRule { namespace: "ns".into(), name: "r".into() };
    assert_eq!(table.suspended(), BTreeSet::from([source.clone()]));
    assert_eq!(table.targets_of(&source), BTreeSet::from([target]));
}

/// Issue 16: a target's resync relisted every watch of its resources, the
/// other tenants' namespaces included, so a tenant that recreated its
/// GitTarget over and over made every tenant's watch relist.
#[test]
fn a_watch_feeds_only_the_targets_whose_rules_see_its_namespace() {
    let mut table = RouteTable::default();
    let configmaps = vec![rule(serde_json::json!({"resources": ["configmaps"]}))];
    table.set_watch_rule("team-a", "r", &watch_rule("a", configmaps.clone())).unwrap();
    table.set_watch_rule("team-b", "r", &watch_rule("b", configmaps.clone())).unwrap();
    let a = TargetKey::new("team-a", "a");
    assert!(table.feeds(&a, &Scope::Namespace("team-a".into())));
    assert!(!table.feeds(&a, &Scope::Namespace("team-b".into())));
    assert!(table.feeds(&a, &Scope::All));
    let spec: ClusterWatchRuleSpec = serde_json::from_value(serde_json::json!({
        "sinkRef": {"name": "c", "namespace": "team-c"}, "rules": [{"resources": ["configmaps"]}]}))
    .unwrap();
    table.set_cluster_watch_rule("everything", &spec).unwrap();
    assert!(table.feeds(&TargetKey::new("team-c", "c"), &Scope::Namespace("team-b".into())));
}
