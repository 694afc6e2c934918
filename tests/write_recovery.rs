//! Acceptance 6 and 7: the branch converges to the cluster after the
//! operator was down, and a push by someone else is kept, never overwritten.

mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::scenario::Scenario;

#[tokio::test(flavor = "multi_thread")]
async fn changes_made_while_the_operator_was_down_are_caught_up() {
    let s = Scenario::new("rc-down").await;
    s.ssh_provider("git", json!({"interval": "1s"})).await;
    s.target("t", "git", "main", "state").await;
    s.rule("r", "t", json!([{"resources": ["configmaps"]}])).await;
    for name in ["keep", "change-me", "delete-me"] {
        s.configmap(name, json!({"v": "1"})).await;
    }
    let mut first = s.operator();
    let before = s.wait_converged("main", "state", "configmaps", "ConfigMap").await;
    first.stop();

    s.configmap("added", json!({"v": "1"})).await;
    s.configmap("change-me", json!({"v": "2"})).await;
    Api::<ConfigMap>::namespaced(s.client.clone(), s.namespace())
        .delete("delete-me", &DeleteParams::default())
        .await
        .unwrap();

    let _second = s.operator();
    let view = s.wait_converged("main", "state", "configmaps", "ConfigMap").await;
    // Catching up is reconciliation: one sync commit for what was written
    // and what the sweep found gone (added, change-me, delete-me).
    let caught_up = &view.subjects[..view.subjects.len() - before.subjects.len()];
    assert_eq!(caught_up, ["sync 3 objects"], "{:?}", view.subjects);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_by_someone_else_is_kept_and_ours_lands_on_top() {
    let s = Scenario::new("rc-race").await;
    s.ssh_provider("git", json!({"interval": "1s"})).await;
    s.target("t", "git", "main", "mirror").await;
    s.rule(
        "r",
        "t",
        json!([{"resources": ["configmaps"], "labelSelector": {"matchLabels": {"race": "yes"}}}]),
    )
    .await;
    let _operator = s.operator_synced().await;
    let labelled = |name: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": s.namespace(), "labels": {"race": "yes"}}, "data": {"n": name}})
    };
    support::fixtures::apply(&s.client, s.namespace(), labelled("first")).await;
    s.wait_branch("the first file", "main", |v| {
        v.files.contains_key(&s.core_path("mirror", "configmaps", "first"))
    })
    .await;

    // A person pushes to the branch behind the operator's back.
    let work = s.git.workdir("human");
    let clone = work.join("clone");
    s.git.ok(&work, &["clone", "--quiet", &s.repo.ssh_url, clone.to_str().unwrap()]);
    std::fs::write(clone.join("README.md"), "Audit log of the cluster.\n").unwrap();
    s.git.ok(&clone, &["add", "README.md"]);
    s.git.ok(&clone, &["commit", "--quiet", "-m", "Add a README by hand"]);
    // Like a person would: if the operator pushed meanwhile, rebase and retry.
    let mut pushed = false;
    for _ in 0..5 {
        if s.git.run(&clone, &["push", "--quiet", "origin", "HEAD:main"]).status.success() {
            pushed = true;
            break;
        }
        s.git.ok(&clone, &["pull", "--quiet", "--rebase", "origin", "main"]);
    }
    assert!(pushed, "could not push the hand-made commit");
    let theirs = s.git.ok(&clone, &["rev-parse", "HEAD"]).trim().to_owned();

    support::fixtures::apply(&s.client, s.namespace(), labelled("second")).await;
    let view = s
        .wait_branch("the second file", "main", |v| {
            v.files.contains_key(&s.core_path("mirror", "configmaps", "second"))
        })
        .await;
    assert_eq!(
        view.files.get("README.md").map(String::as_str),
        Some("Audit log of the cluster.\n"),
        "their file is gone"
    );
    assert_eq!(view.subjects[0], format!("create configmaps/{}/second", s.namespace()));
    assert!(view.subjects.contains(&"Add a README by hand".to_owned()), "{:?}", view.subjects);
    s.git.ok(&clone, &["fetch", "--quiet", "origin"]);
    let ancestor = s.git.run(&clone, &["merge-base", "--is-ancestor", &theirs, "origin/main"]);
    assert!(ancestor.status.success(), "their commit is not in the history: it was overwritten");
    let forced = s.pushes().iter().any(|(_, _, old, _)| old == &theirs) as usize;
    assert_eq!(forced, 1, "exactly one push built on their commit: {:?}", s.pushes());
}
