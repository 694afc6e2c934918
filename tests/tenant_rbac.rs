//! Issue 16, acceptance 3: tenant RBAC, Flux style. A rule that names a
//! ServiceAccount mirrors only what that account may list and watch
//! (SubjectAccessReviews against the real API server): without `list` on
//! roles it mirrors none of them and says so in its Ready condition; within
//! a minute of a RoleBinding that grants it, it mirrors them. The operator
//! itself may read everything here (it runs as cluster-admin): only the
//! ServiceAccount's RBAC holds the Roles back.

mod support;

use std::time::{Duration, Instant};

use kube::api::Api;
use serde_json::{Value, json};
use support::fixtures;
use support::scenario::{Scenario, WAIT};
use support::wait_for;

/// A Role `name` granting list and watch on `resources` of `group`, bound
/// to the ServiceAccount `mirror`.
async fn grant(s: &Scenario, name: &str, group: &str, resources: &[&str]) {
    fixtures::grant_list_watch(&s.client, s.namespace(), "mirror", name, group, resources).await;
}

/// The Ready condition of WatchRule `name`: (status, reason, message).
async fn rule_ready(s: &Scenario, name: &str) -> Option<(String, String, String)> {
    let api: Api<gitops_reverser::api::WatchRule> = Api::namespaced(s.client.clone(), s.namespace());
    let rule = api.get(name).await.ok()?;
    let c = rule.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

async fn watch_rule(s: &Scenario, name: &str, spec: Value) {
    let ns = s.namespace();
    fixtures::apply(
        &s.client,
        ns,
        json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "WatchRule",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}),
    )
    .await;
}

fn files_of(view: &support::git::BranchView, plural: &str) -> Vec<String> {
    view.files.keys().filter(|path| path.contains(&format!("/{plural}/"))).cloned().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_mirrors_only_what_its_service_account_may_read_and_follows_a_grant() {
    let s = Scenario::new("sa-rbac").await;
    let ns = s.namespace().to_owned();
    s.ssh_provider("git", json!({"interval": "1s"})).await;
    s.target("audit", "git", "main", "t").await;
    fixtures::apply(
        &s.client,
        &ns,
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "mirror", "namespace": ns}}),
    )
    .await;
    grant(&s, "read-configmaps", "", &["configmaps"]).await;
    s.configmap("app", json!({"k": "v"})).await;
    watch_rule(
        &s,
        "tenant",
        json!({"sinkRef": {"name": "audit"}, "serviceAccountName": "mirror",
               "rules": [{"apiGroups": ["", "rbac.authorization.k8s.io"], "resources": ["configmaps", "roles"]}]}),
    )
    .await;
    let _operator = s.operator();

    // What the account may read arrives; the condition says what it may not.
    let app = s.core_path("t", "configmaps", "app");
    s.wait_branch("the ConfigMap mirrored", "main", |view| view.files.contains_key(&app)).await;
    let (status, _, message) = wait_for("the rule to report the denial", WAIT, || async {
        rule_ready(&s, "tenant").await.filter(|c| c.1 == "AccessDenied" && c.2.contains("may not"))
    })
    .await;
    assert_eq!(status, "False");
    assert!(
        message.contains(&format!(
            "ServiceAccount {ns}/mirror may not list roles.rbac.authorization.k8s.io in namespace {ns}"
        )),
        "{message}"
    );
    // A push after the denial was known: its Roles are still not there.
    s.configmap("after", json!({"k": "v"})).await;
    let after = s.core_path("t", "configmaps", "after");
    let view = s.wait_branch("a later ConfigMap", "main", |view| view.files.contains_key(&after)).await;
    assert_eq!(
        files_of(&view, "roles"),
        Vec::<String>::new(),
        "Roles mirrored without the right to list them"
    );

    let granted = Instant::now();
    grant(&s, "read-roles", "rbac.authorization.k8s.io", &["roles"]).await;
    let view = wait_for("the Roles mirrored after the grant", Duration::from_secs(60), || async {
        s.branch("main").filter(|view| files_of(view, "roles").len() >= 2)
    })
    .await;
    let took = granted.elapsed();
    let roles = files_of(&view, "roles");
    println!("tenant_rbac: Roles mirrored {:.1} s after the RoleBinding: {roles:?}", took.as_secs_f64());
    assert!(roles.iter().any(|path| path.ends_with("/read-roles.yaml")), "{roles:?}");
    let (status, reason, _) = wait_for("the rule Ready again", WAIT, || async {
        rule_ready(&s, "tenant").await.filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Ready"));
}

/// `--default-service-account` bounds a rule that names no account: here
/// one that does not exist, so nothing is mirrored, and the rule says why.
#[tokio::test(flavor = "multi_thread")]
async fn the_default_service_account_bounds_rules_that_name_none() {
    let s = Scenario::new("sa-default").await;
    let ns = s.namespace().to_owned();
    s.ssh_provider("git", json!({"interval": "1s"})).await;
    s.target("audit", "git", "main", "t").await;
    s.configmap("app", json!({"k": "v"})).await;
    s.rule("all", "audit", json!([{"resources": ["configmaps"]}])).await;
    let _operator = s.operator_with(&["--default-service-account", "locked-down"]);

    let (status, _, message) = wait_for("the rule to report the denial", WAIT, || async {
        rule_ready(&s, "all").await.filter(|c| c.1 == "AccessDenied" && c.2.contains("may not"))
    })
    .await;
    assert_eq!(status, "False");
    assert!(
        message
            .contains(&format!("ServiceAccount {ns}/locked-down may not list configmaps in namespace {ns}")),
        "{message}"
    );
    // The target works (it synced its branch), yet holds no ConfigMap.
    s.wait_condition("audit", "Synced", |c| c.0 == "True").await;
    let files = s.branch("main").map(|view| files_of(&view, "configmaps")).unwrap_or_default();
    assert_eq!(files, Vec::<String>::new(), "mirrored what the default ServiceAccount may not read");
}
