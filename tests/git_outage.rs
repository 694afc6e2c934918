//! Acceptance 5 (network): with the git server stopped the target reports
//! NetworkError and keeps its changes; when the server returns, they are all
//! pushed and the target is Available again.
//!
//! This stops the shared git server, so it lives alone in its own test
//! binary (cargo runs test binaries one after another).

mod support;

use serde_json::json;
use support::scenario::Scenario;

#[tokio::test(flavor = "multi_thread")]
async fn changes_queued_while_git_is_down_are_pushed_when_it_returns() {
    let s = Scenario::new("outage").await;
    s.ssh_provider("git", json!({"interval": "1s"})).await;
    s.target("t", "git", "main", "").await;
    s.rule("r", "t", json!([{"resources": ["configmaps"]}])).await;
    let _operator = s.operator();
    s.wait_condition("t", "Ready", |c| c.0 == "True").await;

    let restart = support::StartOnDrop("git");
    support::component("stop", "git");
    for i in 0..3 {
        s.configmap(&format!("during-outage-{i}"), json!({"i": i.to_string()})).await;
    }
    let down = s.wait_condition("t", "Available", |c| c.0 == "False").await;
    assert_eq!(down.1, "NetworkError", "{}", down.2);
    s.wait_condition("t", "Synced", |c| c.0 == "False").await;

    drop(restart);
    s.wait_condition("t", "Available", |c| c.0 == "True").await;
    let view = s.wait_converged("main", "", "configmaps", "ConfigMap").await;
    for i in 0..3 {
        assert!(view.files.contains_key(&s.core_path("", "configmaps", &format!("during-outage-{i}"))));
    }
    s.wait_condition("t", "Synced", |c| c.0 == "True").await;
}
