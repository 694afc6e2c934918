//! `/metrics` of a running operator: it passes `promtool check metrics`,
//! its counts match the changes made and what the git server saw, and
//! every metric a dashboard or an alert names is exported.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::http::{get, get_accepting};
use support::scenario::{Scenario, WAIT};
use support::wait_for;

/// The sum of every series of `name` whose labels include all of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, number) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name == name && labels.iter().all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        {
            *found.get_or_insert(0.0) += number.parse::<f64>().ok()?;
        }
    }
    found
}

fn promtool(env: &support::Env) -> std::path::PathBuf {
    Path::new(env.var("GITENV_BIN")).join("promtool")
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_count_the_changes() {
    let s = Scenario::new("metrics").await;
    s.ssh_provider("git", json!({"interval": "1s"})).await;
    s.target("audit", "git", "main", "m").await;
    let selector = json!({"matchLabels": {"metrics-test": "yes"}});
    s.rule("cms", "audit", json!([{"resources": ["configmaps"], "labelSelector": selector}])).await;
    let operator = s.operator_synced().await;
    let ns = s.namespace().to_owned();

    // Five changes, each waited for so none coalesces: three creates, an
    // update and a delete.
    let labels = json!({"metrics-test": "yes"});
    let path = |name| s.core_path("m", "configmaps", name);
    for name in ["a", "b", "c"] {
        s.labelled_configmap(name, labels.clone(), json!({"v": "1"})).await;
    }
    s.wait_branch("three creates", "main", |v| {
        ["a", "b", "c"].iter().all(|n| v.files.contains_key(&path(n)))
    })
    .await;
    s.labelled_configmap("a", labels.clone(), json!({"v": "2"})).await;
    s.wait_branch("the update", "main", |v| v.files.get(&path("a")).is_some_and(|f| f.contains("v: \"2\"")))
        .await;
    Api::<ConfigMap>::namespaced(s.client.clone(), &ns).delete("b", &DeleteParams::default()).await.unwrap();
    let view = s.wait_branch("the delete", "main", |v| !v.files.contains_key(&path("b"))).await;
    s.wait_condition("audit", "Ready", |c| c.0 == "True").await;

    let target = [("namespace", ns.as_str()), ("name", "audit")];
    let branch = [("branch", "main")];
    let text = wait_for("the metrics to settle", WAIT, || async {
        let (_, text) = get(operator.addr, "/metrics")?;
        let committed =
            value(&text, "gitops_reverser_commits_total", &[("branch", "main"), ("result", "committed")])?;
        let coalesced = value(&text, "gitops_reverser_events_coalesced_total", &branch).unwrap_or(0.0);
        let settled = value(&text, "gitops_reverser_events_routed_total", &target) == Some(5.0)
            && committed + coalesced == 5.0
            && value(&text, "gitops_reverser_queue_depth", &branch) == Some(0.0)
            && value(&text, "gitops_reverser_event_to_push_lag_seconds_count", &branch) == Some(committed)
            && value(&text, "gitops_reverser_event_to_commit_lag_seconds_count", &branch) == Some(committed)
            && value(&text, "gitops_reverser_target_ready", &target) == Some(1.0);
        settled.then_some(text)
    })
    .await;

    // promtool reads the Prometheus text format that a plain GET gets.
    let mut check = Command::new(promtool(s.env))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (tests/env/install builds it)");
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Counts agree with the branch and with the git server's own push log.
    // Every commit on the branch is one of these changes (nothing matched the initial list).
    let commits = view.subjects.len();
    let committed =
        value(&text, "gitops_reverser_commits_total", &[("branch", "main"), ("result", "committed")]);
    assert_eq!(committed, Some(commits as f64), "commits on the branch: {:?}\n{text}", view.subjects);
    assert_eq!(
        value(&text, "gitops_reverser_commits_total", &[("branch", "main"), ("result", "failed")]),
        Some(0.0)
    );
    assert_eq!(value(&text, "gitops_reverser_commit_duration_seconds_count", &branch), committed);
    let pushed = value(&text, "gitops_reverser_pushes_total", &[("branch", "main"), ("result", "pushed")]);
    assert_eq!(pushed, Some(s.pushes().len() as f64), "pushes the server logged: {:?}", s.pushes());
    assert_eq!(
        value(&text, "gitops_reverser_pushes_total", &[("branch", "main"), ("result", "failed")]),
        None
    );
    assert!(value(&text, "gitops_reverser_push_duration_seconds_count", &branch) >= pushed);
    assert_eq!(value(&text, "gitops_reverser_events_dropped_total", &[]), Some(0.0));
    assert_eq!(value(&text, "gitops_reverser_events_coalesced_total", &branch), Some(0.0));
    assert_eq!(value(&text, "gitops_reverser_queue_oldest_age_seconds", &branch), Some(0.0));
    let configmaps = [("resource", "core/configmaps")];
    // The initial list (kube-root-ca.crt) and five changes, at least.
    assert!(value(&text, "gitops_reverser_events_received_total", &configmaps) >= Some(6.0), "{text}");
    assert!(value(&text, "gitops_reverser_resync_duration_seconds_count", &configmaps) >= Some(1.0));
    assert!(value(&text, "gitops_reverser_resync_objects_total", &configmaps) >= Some(1.0));
    assert!(value(&text, "gitops_reverser_watches_open", &[]) >= Some(1.0));
    let lag_sum = value(&text, "gitops_reverser_event_to_push_lag_seconds_sum", &branch).unwrap();
    assert!(lag_sum > 0.0 && lag_sum < 60.0 * 5.0, "lag sum {lag_sum}");
    // A commit precedes its push, so its lag from the same events is smaller.
    let commit_lag_sum = value(&text, "gitops_reverser_event_to_commit_lag_seconds_sum", &branch).unwrap();
    assert!(
        commit_lag_sum > 0.0 && commit_lag_sum < lag_sum,
        "commit lag sum {commit_lag_sum}, push {lag_sum}"
    );

    // Every metric a dashboard or the chart's alerts name is exported.
    names_are_exported(&text);

    // The OpenMetrics form is what Prometheus asks for.
    let (_, open) =
        get_accepting(operator.addr, "/metrics", "application/openmetrics-text;version=1.0.0").unwrap();
    assert!(open.ends_with("# EOF\n") && open.contains("# TYPE gitops_reverser_commits counter"), "{open}");
}

/// Metric names in `text`: `gitops_reverser_` and what follows.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("gitops_reverser_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every name a query may use: families and their samples.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap();
        names.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[test]
fn dashboards_are_valid_in_grafanas_typed_model() {
    let env = support::env();
    let checked = Command::new(Path::new(env.var("GITENV_BIN")).join("dashboards"))
        .arg("check")
        .arg(support::repo_root().join("dashboards"))
        .output()
        .expect("run the dashboard checker (tests/env/install builds it)");
    assert!(
        checked.status.success(),
        "dashboards check: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Each dashboard, and the chart's PrometheusRule if there is one, names
/// only metrics in `text` (an operator's `/metrics` after it did work).
fn names_are_exported(text: &str) {
    let exported = exported(text);
    let root = support::repo_root();
    let mut sources: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert!(sources.len() >= 3, "overview, git and lag, sharding: {sources:?}");
    if let Ok(templates) = std::fs::read_dir(root.join("charts/gitops-reverser/templates")) {
        sources.extend(
            templates
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().contains("prometheusrule")),
        );
    }
    for source in &sources {
        let used = names_in(&std::fs::read_to_string(source).unwrap());
        assert!(!used.is_empty(), "{} names no metric", source.display());
        let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{} uses metrics the operator does not export: {missing:?}",
            source.display()
        );
    }
}
