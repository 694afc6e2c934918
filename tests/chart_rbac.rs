//! The chart's RBAC is enough and no larger than needed: the operator runs
//! against the real API server as the chart's ServiceAccount, with exactly
//! the RBAC the chart renders, and the write path works; then, one test per
//! rule (of the ClusterRole and of the Lease Role), the same with that single
//! rule removed, and what breaks.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use support::chart::{self, run_ok};
use support::operator::Operator;
use support::scenario::{Scenario, WAIT};
use support::{ClusterObjectGuard, wait_for};

/// A scenario whose operator acts as the chart's ServiceAccount.
struct AsChart {
    scenario: Scenario,
    operator: Operator,
    _kubeconfig: tempfile::TempDir,
    _guards: Vec<ClusterObjectGuard>,
}

/// Renders the chart's ServiceAccount and RBAC with the scenario's namespace
/// as the release namespace, drops the ClusterRole rule whose resources
/// include `without` (if any), applies them, and starts the operator with a
/// token of that ServiceAccount. The configuration objects are created
/// before the operator starts.
async fn start(prefix: &str, without: Option<&str>) -> AsChart {
    let tools = chart::tools();
    let scenario = Scenario::new(prefix).await;
    let ns = scenario.namespace().to_owned();
    scenario.ssh_provider("git", json!({"interval": "1s"})).await;
    scenario.target("audit", "git", "main", "clusters/test").await;
    scenario.rule("cms", "audit", json!([{"resources": ["configmaps"]}])).await;

    // The namespace names the release, so cluster-scoped names are unique per test.
    let manifests = chart::render_release(
        tools,
        &ns,
        &ns,
        None,
        &["--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"],
    );
    let mut objects = as_json(&tools.kubectl, &manifests);
    let mut guards = Vec::new();
    let mut service_account = String::new();
    let mut removed = 0;
    for object in &mut objects {
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let kind = object["kind"].as_str().unwrap().to_owned();
        if let (Some(resource), "ClusterRole" | "Role") = (without, kind.as_str()) {
            let rules = object["rules"].as_array_mut().unwrap();
            let before = rules.len();
            rules.retain(|rule| !rule["resources"].as_array().unwrap().iter().any(|r| r == resource));
            removed += before - rules.len();
        }
        match kind.as_str() {
            "ServiceAccount" => service_account = name,
            "ClusterRole" => guards.push(ClusterObjectGuard { resource: "clusterrole", name }),
            "ClusterRoleBinding" => guards.push(ClusterObjectGuard { resource: "clusterrolebinding", name }),
            _ => {}
        }
    }
    assert_eq!(removed, usize::from(without.is_some()), "not exactly one rule names {without:?}");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    run_ok(Command::new(&tools.kubectl).args(["apply", "-f", "-"]), Some(list.to_string().as_bytes()));

    let token = run_ok(
        Command::new(&tools.kubectl).args(["create", "token", &service_account, "-n", &ns, "--duration=1h"]),
        None,
    );
    let token = String::from_utf8(token.stdout).unwrap();
    let kubeconfig = tempfile::tempdir().unwrap();
    let path = kubeconfig.path().join("kubeconfig");
    let env = scenario.env;
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "env", "cluster": {
            "server": env.var("GITENV_APISERVER_URL"),
            "certificate-authority": env.var("GITENV_KUBE_CA_CRT")}}],
        "users": [{"name": "chart", "user": {"token": token.trim()}}],
        "contexts": [{"name": "chart", "context": {"cluster": "env", "user": "chart", "namespace": ns}}],
        "current-context": "chart",
    });
    std::fs::write(&path, config.to_string()).unwrap();
    // As the chart configures it: Leases in the release namespace, named after the release.
    let prefix = format!("{ns}-gitops-reverser");
    let operator = Operator::start_as(&ns, &path, &["--lease-namespace", &ns, "--lease-prefix", &prefix]);
    AsChart { scenario, operator, _kubeconfig: kubeconfig, _guards: guards }
}

/// The manifests as JSON objects, through the real kubectl.
fn as_json(kubectl: &PathBuf, manifests: &str) -> Vec<Value> {
    let out = run_ok(
        Command::new(kubectl).args(["create", "--dry-run=client", "-o", "json", "-f", "-"]),
        Some(manifests.as_bytes()),
    );
    // One JSON document per object, one after the other.
    serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>().map(Result::unwrap).collect()
}

impl AsChart {
    /// Waits for a log line that has every one of `needles`.
    async fn wait_log_line(&self, needles: &[&str]) -> String {
        wait_for(&format!("a log line with {needles:?}"), WAIT, || async {
            self.operator
                .logs()
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
                .map(str::to_owned)
        })
        .await
    }

    /// A ConfigMap change reaches the branch.
    async fn write_path_works(&self) {
        let s = &self.scenario;
        s.configmap("app", json!({"greeting": "hello"})).await;
        let path = s.core_path("clusters/test", "configmaps", "app");
        s.wait_branch("the ConfigMap's file", "main", |view| {
            view.files.get(&path).is_some_and(|f| f.contains("greeting: hello"))
        })
        .await;
    }

    fn events(&self) -> Vec<Value> {
        let tools = chart::tools();
        let out = run_ok(
            Command::new(&tools.kubectl).args([
                "get",
                "events.events.k8s.io",
                "-n",
                self.scenario.namespace(),
                "-o",
                "json",
            ]),
            None,
        );
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }
}

/// Forbidden, as the API server words it in the operator's log.
fn forbidden(verb: &str, resource: &str) -> [String; 2] {
    [format!("cannot {verb} resource"), format!(r#"\"{resource}\""#)]
}

#[tokio::test(flavor = "multi_thread")]
async fn with_exactly_the_chart_rbac_the_write_path_works() {
    let run = start("rbac-all", None).await;
    run.operator.wait_log("initial list complete").await;
    run.write_path_works().await;
    let (status, _, message) = run.scenario.wait_condition("audit", "Ready", |c| c.0 == "True").await;
    assert_eq!(status, "True", "{message}");
    wait_for("an Event from the operator about the GitTarget", WAIT, || async {
        run.events()
            .into_iter()
            .find(|e| e["reportingController"] == "gitops-reverser" && e["regarding"]["name"] == "audit")
    })
    .await;
    let logs = run.operator.logs();
    assert!(!logs.contains("forbidden"), "the operator was refused something:\n{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_reading_our_kinds_nothing_is_configured() {
    let run = start("rbac-kinds", Some("gitproviders")).await;
    let needles = forbidden("list", "gitproviders");
    run.wait_log_line(&[&needles[0], &needles[1]]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_status_patches_no_status_is_written() {
    let run = start("rbac-status", Some("gittargets/status")).await;
    let needles = forbidden("patch", "gittargets/status");
    run.wait_log_line(&["cannot write GitTarget status", &needles[0], &needles[1]]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_events_no_event_is_published() {
    let run = start("rbac-events", Some("events")).await;
    let needles = forbidden("create", "events");
    run.wait_log_line(&["cannot publish an event", &needles[0], &needles[1]]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_secrets_no_credentials_are_read() {
    let run = start("rbac-secrets", Some("secrets")).await;
    let (status, _, message) =
        run.scenario.wait_condition("audit", "Ready", |c| c.2.contains("cannot read Secret")).await;
    assert_eq!(status, "False", "{message}");
    assert!(message.contains("forbidden"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_flux_repositories_flux_references_cannot_resolve() {
    let run = start("rbac-flux", Some("gitrepositories")).await;
    let needles = forbidden("list", "gitrepositories");
    run.wait_log_line(&[&needles[0], &needles[1]]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_watched_kinds_nothing_is_mirrored() {
    let run = start("rbac-watched", Some("configmaps")).await;
    // On this 1.35 server the initial list streams, so a watch is refused.
    let needles = forbidden("watch", "configmaps");
    run.wait_log_line(&["watch error", &needles[0], &needles[1]]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_leases_no_shard_is_owned() {
    let run = start("rbac-leases", Some("leases")).await;
    let needles = forbidden("list", "leases");
    run.wait_log_line(&["watching the shard Leases failed", &needles[0], &needles[1]]).await;
}
