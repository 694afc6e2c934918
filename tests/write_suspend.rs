//! Issue 19, acceptance 2: `spec.suspend`, with Flux's meaning. A suspended
//! GitTarget commits and pushes nothing through 100 changes, `kubectl get
//! gittargets` shows it, and on resume one sync commit brings the folder
//! level with the cluster (no replay of the missed events). A suspended
//! WatchRule records nothing and keeps what it wrote.

mod support;

use serde_json::json;
use support::fixtures;
use support::scenario::Scenario;

const FOLDER: &str = "t";

async fn set_target_suspend(s: &Scenario, suspend: bool) {
    let ns = s.namespace();
    fixtures::apply(&s.client, ns, json!({
        "apiVersion": "configbutler.ai/v1alpha1", "kind": "GitTarget",
        "metadata": {"name": "audit", "namespace": ns},
        "spec": {"providerRef": {"name": "git"}, "branch": "main", "baseFolder": FOLDER, "suspend": suspend},
    }))
    .await;
}

/// Pushes of branch main of this scenario's repository.
fn pushes_of_main(s: &Scenario) -> usize {
    s.pushes().iter().filter(|(_, git_ref, _, _)| git_ref == "refs/heads/main").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suspended_target_pushes_nothing_and_catches_up_with_one_sync_commit() {
    let s = Scenario::new("suspend").await;
    s.ssh_provider("git", json!({"interval": "1s"})).await;
    s.target("audit", "git", "main", FOLDER).await;
    s.rule("cms", "audit", json!([{"resources": ["configmaps"]}])).await;
    // The control: the same changes on another branch, never suspended.
    s.target("control", "git", "control", "c").await;
    s.rule("cms-control", "control", json!([{"resources": ["configmaps"]}])).await;
    for i in 0..10 {
        s.configmap(&format!("cm-{i}"), json!({"v": "0"})).await;
    }
    let _operator = s.operator_synced().await;
    s.wait_converged("main", FOLDER, "configmaps", "ConfigMap").await;

    set_target_suspend(&s, true).await;
    let (_, _, message) = s.wait_condition("audit", "Ready", |c| c.1 == "Suspended").await;
    assert!(message.starts_with("suspended"), "{message}");
    let pushes_before = pushes_of_main(&s);
    let before = s.branch("main").unwrap();

    // 100 changes: 85 updates, 10 creates, 5 deletes.
    for round in 1..=9 {
        for i in 0..10 {
            if round == 9 && i >= 5 {
                break;
            }
            s.configmap(&format!("cm-{i}"), json!({"v": round.to_string()})).await;
        }
    }
    for i in 10..20 {
        s.configmap(&format!("cm-{i}"), json!({"v": "new"})).await;
    }
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(s.client.clone(), s.namespace());
    for i in 5..10 {
        api.delete(&format!("cm-{i}"), &Default::default()).await.unwrap();
    }
    // The control branch got all 100 committed and pushed: the operator
    // handled them while the target was suspended, so its silence means something.
    s.wait_converged("control", "c", "configmaps", "ConfigMap").await;
    assert_eq!(pushes_of_main(&s), pushes_before, "a suspended target pushed");
    assert_eq!(s.branch("main").unwrap().head, before.head, "the branch moved while suspended");
    assert_eq!(s.wait_condition("audit", "Ready", |_| true).await.1, "Suspended");

    let listed = std::process::Command::new(s.env.kubectl())
        .args(["get", "gittargets", "-n", s.namespace()])
        .env("KUBECONFIG", s.env.var("KUBECONFIG"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&listed.stdout);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    let row: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    let column = header
        .iter()
        .position(|h| *h == "SUSPENDED")
        .unwrap_or_else(|| panic!("no SUSPENDED column: {table}"));
    assert_eq!(row.get(column), Some(&"true"), "{table}");

    set_target_suspend(&s, false).await;
    let view = s.wait_converged("main", FOLDER, "configmaps", "ConfigMap").await;
    // Linear history, newest first: what came after the suspension.
    assert_eq!(view.subjects[view.subjects.len() - before.subjects.len()..], before.subjects[..]);
    let since = &view.subjects[..view.subjects.len() - before.subjects.len()];
    println!("write_suspend: {} commit(s) after resuming: {since:?}", since.len());
    assert_eq!(since.len(), 1, "resuming must catch up with one sync commit, not a replay: {since:?}");
    s.wait_condition("audit", "Ready", |c| c.0 == "True").await;
}

/// Ready of WatchRule `name`: (status, reason, message).
async fn rule_ready(s: &Scenario, name: &str) -> Option<(String, String, String)> {
    let api: kube::Api<gitops_reverser::api::WatchRule> =
        kube::Api::namespaced(s.client.clone(), s.namespace());
    let rule = api.get(name).await.ok()?;
    let c = rule.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

async fn set_rule_suspend(s: &Scenario, suspend: bool) {
    let ns = s.namespace();
    fixtures::apply(&s.client, ns, json!({
        "apiVersion": "configbutler.ai/v1alpha1", "kind": "WatchRule",
        "metadata": {"name": "cms", "namespace": ns},
        "spec": {"sinkRef": {"name": "audit"}, "rules": [{"resources": ["configmaps"]}], "suspend": suspend},
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suspended_rule_records_nothing_keeps_its_files_and_catches_up_on_resume() {
    let s = Scenario::new("suspend-rule").await;
    s.ssh_provider("git", json!({"interval": "1s"})).await;
    s.target("audit", "git", "main", FOLDER).await;
    set_rule_suspend(&s, false).await;
    s.target("control", "git", "control", "c").await;
    s.rule("cms-control", "control", json!([{"resources": ["configmaps"]}])).await;
    for i in 0..3 {
        s.configmap(&format!("cm-{i}"), json!({"v": "0"})).await;
    }
    let _operator = s.operator_synced().await;
    s.wait_converged("main", FOLDER, "configmaps", "ConfigMap").await;

    set_rule_suspend(&s, true).await;
    support::wait_for("the rule to say it is suspended", support::scenario::WAIT, || async {
        rule_ready(&s, "cms").await.filter(|c| c.1 == "Suspended")
    })
    .await;
    let before = s.branch("main").unwrap();
    s.configmap("cm-0", json!({"v": "1"})).await;
    s.configmap("cm-new", json!({"v": "1"})).await;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(s.client.clone(), s.namespace());
    api.delete("cm-1", &Default::default()).await.unwrap();
    // The control branch has all three: they were handled, and the suspended rule recorded none.
    s.wait_converged("control", "c", "configmaps", "ConfigMap").await;
    let during = s.branch("main").unwrap();
    assert_eq!(during.head, before.head, "a suspended rule recorded a change");
    assert!(during.files.contains_key(&s.core_path(FOLDER, "configmaps", "cm-1")), "its files must stay");

    set_rule_suspend(&s, false).await;
    let view = s.wait_converged("main", FOLDER, "configmaps", "ConfigMap").await;
    let since = &view.subjects[..view.subjects.len() - before.subjects.len()];
    println!("write_suspend: rule resumed, {} commit(s): {since:?}", since.len());
    assert_eq!(since, ["sync 3 objects"], "resuming must catch up with one sync commit");
}
