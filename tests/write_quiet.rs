//! Acceptance 1 of issue 19, noise: a Deployment scaled 50 times through
//! its scale subresource by a second field manager makes no commit, under
//! `ignoreFields: [/spec/replicas]` and under `ignoreManagers: [autoscaler]`;
//! one image change then makes exactly one. Against the real API server,
//! kube-controller-manager (which answers every scale with a status update,
//! more noise) and git server.

mod support;

use gitops_reverser::sanitize::{ObjectKey, ResourceRef, object_path};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::scenario::{Scenario, WAIT};
use support::wait_for;

/// The user's tool, which creates the Deployments and changes their image.
const TESTER: &str = "tester";
/// The second field manager, which only scales, as an HPA does.
const AUTOSCALER: &str = "autoscaler";
const SCALES: usize = 50;

fn deployment_path(s: &Scenario, name: &str) -> String {
    let resource = ResourceRef {
        group: "apps".into(),
        version: "v1".into(),
        kind: "Deployment".into(),
        plural: "deployments".into(),
        namespaced: true,
    };
    object_path(&resource, &ObjectKey { namespace: Some(s.namespace().to_owned()), name: name.to_owned() })
}

fn deployments(s: &Scenario) -> Api<k8s_openapi::api::apps::v1::Deployment> {
    Api::namespaced(s.client.clone(), s.namespace())
}

/// Creates a Deployment with server-side apply as `tester`.
async fn create(s: &Scenario, name: &str, image: &str) {
    let manifest = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": s.namespace()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    });
    deployments(s)
        .patch(name, &PatchParams::apply(TESTER), &Patch::Apply(&manifest))
        .await
        .unwrap_or_else(|e| panic!("create Deployment {name}: {e}"));
}

/// `tester` changes the image (a strategic merge patch, as `kubectl set image`).
async fn set_image(s: &Scenario, name: &str, image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    let params = PatchParams { field_manager: Some(TESTER.into()), ..PatchParams::default() };
    deployments(s)
        .patch(name, &params, &Patch::Strategic(&patch))
        .await
        .unwrap_or_else(|e| panic!("set image of {name}: {e}"));
}

/// `autoscaler` sets the replicas through the scale subresource, as the
/// HPA controller does.
async fn scale(s: &Scenario, name: &str, replicas: usize) {
    let params = PatchParams { field_manager: Some(AUTOSCALER.into()), ..PatchParams::default() };
    deployments(s)
        .patch_scale(name, &params, &Patch::Merge(json!({"spec": {"replicas": replicas}})))
        .await
        .unwrap_or_else(|e| panic!("scale {name} to {replicas}: {e}"));
}

/// Commits on `main` that changed `path`.
fn commits_touching(s: &Scenario, path: &str) -> usize {
    let scratch = s.git.workdir("quiet");
    let dir = scratch.join("clone");
    let _ = std::fs::remove_dir_all(&dir);
    s.git.ok(&scratch, &["clone", "--quiet", "--branch", "main", &s.repo.ssh_url, dir.to_str().unwrap()]);
    let log = s.git.ok(&dir, &["log", "--format=%H", "--", path]);
    log.lines().count()
}

/// The operator's count of Deployment watch events, from `/metrics`.
fn deployment_events(operator: &support::operator::Operator) -> f64 {
    let (_, text) = support::http::get(operator.addr, "/metrics").expect("GET /metrics");
    text.lines()
        .filter(|line| line.starts_with("gitops_reverser_events_received_total{"))
        .filter(|line| line.contains("resource=\"apps/deployments\""))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The scenario: `web` (the subject) and `marker` (whose changes, on the
/// same watch and branch, prove that everything before them was handled),
/// both selected by one rule entry with `ignore`. Returns the content of
/// `web`'s file after the image change.
async fn fifty_scales_then_one_image_change(prefix: &str, ignore: Value) -> String {
    let s = Scenario::new(prefix).await;
    s.ssh_provider("git", json!({"interval": "1s"})).await;
    s.target("t", "git", "main", "").await;
    let mut entry = json!({"apiGroups": ["apps"], "resources": ["deployments"]});
    entry.as_object_mut().unwrap().extend(ignore.as_object().unwrap().clone());
    s.rule("r", "t", json!([entry])).await;
    create(&s, "web", "example.com/web:1").await;
    create(&s, "marker", "example.com/marker:0").await;
    let operator = s.operator_synced().await;
    let (web, marker) = (deployment_path(&s, "web"), deployment_path(&s, "marker"));
    let view = s
        .wait_branch("both files", "main", |v| v.files.contains_key(&web) && v.files.contains_key(&marker))
        .await;
    let web_before = view.files[&web].clone();
    let commits_before = commits_touching(&s, &web);
    let events_before = deployment_events(&operator);

    for i in 0..SCALES {
        scale(&s, "web", 2 + i % 2).await;
    }
    // The watch delivers events in order: once the marker's change is on
    // the branch, every scale before it has been dispatched, and anything
    // they had routed would be committed (the worker's queue is FIFO).
    set_image(&s, "marker", "example.com/marker:1").await;
    let view = s.wait_branch("marker:1", "main", |v| v.files[&marker].contains("example.com/marker:1")).await;
    let received = deployment_events(&operator) - events_before;
    assert!(received >= (SCALES + 1) as f64, "the operator saw only {received} Deployment events");
    assert_eq!(commits_touching(&s, &web), commits_before, "{SCALES} scales made commits");
    assert_eq!(view.files[&web], web_before, "the file changed without a commit of its own");

    set_image(&s, "web", "example.com/web:2").await;
    set_image(&s, "marker", "example.com/marker:2").await;
    let view = s
        .wait_branch("web:2 and marker:2", "main", |v| {
            v.files[&web].contains("example.com/web:2") && v.files[&marker].contains("example.com/marker:2")
        })
        .await;
    assert_eq!(commits_touching(&s, &web), commits_before + 1, "one image change, one commit");
    view.files[&web].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_makes_no_commit_with_ignore_fields() {
    let file =
        fifty_scales_then_one_image_change("wq-fields", json!({"ignoreFields": ["/spec/replicas"]})).await;
    assert!(!file.contains("replicas:"), "the ignored field is left out of the file:\n{file}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_makes_no_commit_with_ignore_managers() {
    let file =
        fifty_scales_then_one_image_change("wq-managers", json!({"ignoreManagers": [AUTOSCALER]})).await;
    // 50 scales alternate 2 and 3, the last one to 3: the file shows the
    // latest value once another change is written.
    assert!(file.contains("replicas: 3"), "the file shows the latest replicas:\n{file}");
}

/// Without ignores, the same scales are recorded (one commit each, fewer
/// where the worker's queue coalesced them), so the tests above can fail.
#[tokio::test(flavor = "multi_thread")]
async fn scaling_makes_commits_without_ignores() {
    let s = Scenario::new("wq-plain").await;
    s.ssh_provider("git", json!({"interval": "1s"})).await;
    s.target("t", "git", "main", "").await;
    s.rule("r", "t", json!([{"apiGroups": ["apps"], "resources": ["deployments"]}])).await;
    create(&s, "web", "example.com/web:1").await;
    let _operator = s.operator_synced().await;
    let web = deployment_path(&s, "web");
    s.wait_branch("web's file", "main", |v| v.files.contains_key(&web)).await;
    let before = commits_touching(&s, &web);
    for i in 0..5 {
        scale(&s, "web", 2 + i % 2).await;
    }
    wait_for("the scales to be committed", WAIT, || async {
        (s.branch("main")?.files[&web].contains("replicas: 2") && commits_touching(&s, &web) > before)
            .then_some(())
    })
    .await;
}
