//! The Helm chart, checked with the real tools: `helm lint --strict`,
//! `kubeconform -strict` against schemas of every kind it renders (the
//! built-in kinds from the local API server's OpenAPI, ours and the
//! prometheus-operator ones from their CRD files), and a server-side dry run
//! against the real API server. Each check runs with the default values and
//! with every values file in `charts/gitops-reverser/ci/`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use support::chart::{self, Tools};
use support::{TestNamespace, repo_root};

/// The kinds every rendering has, whatever the values.
const ALWAYS: [&str; 8] = [
    "ClusterRole",
    "ClusterRoleBinding",
    "Deployment",
    "PodDisruptionBudget",
    "Role",
    "RoleBinding",
    "Service",
    "ServiceAccount",
];

#[test]
fn chart_crds_equal_the_top_level_crds() {
    let read = |dir: &Path| -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect();
        files.sort();
        files
    };
    let top = read(&repo_root().join("crds"));
    let in_chart = read(&chart::dir().join("crds"));
    let names = |files: &[(String, String)]| files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&in_chart),
        names(&top),
        "charts/gitops-reverser/crds/ must hold the same files as crds/"
    );
    for ((name, chart_text), (_, top_text)) in in_chart.iter().zip(&top) {
        assert!(
            chart_text == top_text,
            "charts/gitops-reverser/crds/{name} differs from crds/{name}; copy it: cp crds/*.yaml charts/gitops-reverser/crds/"
        );
    }
}

#[test]
fn helm_lint_strict_is_clean() {
    let tools = chart::tools();
    for values in chart::values_files() {
        let mut cmd = Command::new(&tools.helm);
        cmd.args(["lint", "--strict"]).arg(chart::dir());
        if let Some(file) = &values {
            cmd.arg("--values").arg(file);
        }
        let out = chart::run(&mut cmd, None);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "helm lint --strict with {values:?} failed:\n{text}");
        for word in ["[WARNING]", "[ERROR]"] {
            assert!(!text.contains(word), "helm lint with {values:?} reports {word}:\n{text}");
        }
    }
}

#[test]
fn notes_render_and_tell_the_crd_upgrade_path() {
    let tools = chart::tools();
    for values in chart::values_files() {
        let mut cmd = Command::new(&tools.helm);
        cmd.args(["install", "notes", "--dry-run=client", "--namespace", "ops"]).arg(chart::dir());
        if let Some(file) = &values {
            cmd.arg("--values").arg(file);
        }
        let text = String::from_utf8(chart::run_ok(&mut cmd, None).stdout).unwrap();
        let notes =
            text.split_once("\nNOTES:\n").map(|(_, n)| n).unwrap_or_else(|| panic!("no NOTES:\n{text}"));
        assert!(notes.contains("deployment/notes-gitops-reverser"), "{notes}");
        assert!(notes.contains("kubectl apply --server-side --force-conflicts -f <chart>/crds/"), "{notes}");
    }
}

#[test]
fn every_rendering_passes_kubeconform_strict() {
    let tools = chart::tools();
    for values in chart::values_files() {
        let manifests = chart::render(tools, values.as_deref(), &["--include-crds"]);
        let valid = kubeconform(tools, &manifests).unwrap_or_else(|report| {
            panic!("kubeconform -strict rejects the chart rendered with {values:?}:\n{report}")
        });
        let kinds: BTreeSet<&str> = valid.iter().map(|(kind, _)| kind.as_str()).collect();
        for kind in ALWAYS.iter().chain(&["CustomResourceDefinition"]) {
            assert!(kinds.contains(kind), "no {kind} validated with {values:?}: {kinds:?}");
        }
        if values.is_some() {
            // The HA values turn the monitoring objects on.
            for kind in ["ServiceMonitor", "PrometheusRule"] {
                assert!(kinds.contains(kind), "no {kind} validated with {values:?}: {kinds:?}");
            }
        }
    }
}

/// The schemas are strict and really used: a misspelt field fails, in a
/// built-in kind, a monitoring kind and one of ours.
#[test]
fn kubeconform_rejects_unknown_fields() {
    let tools = chart::tools();
    let manifests = chart::render(tools, chart::values_files().last().unwrap().as_deref(), &[]);
    for (from, to) in [
        ("terminationGracePeriodSeconds:", "terminationGracePeriodSecond:"),
        ("- alert: GitopsReverserLagHigh", "- alurt: GitopsReverserLagHigh"),
        ("  namespaceSelector:", "  namespaceSelecter:"),
    ] {
        assert!(manifests.contains(from), "the rendering has no {from:?}");
        let broken = manifests.replacen(from, to, 1);
        let report = kubeconform(tools, &broken).err().unwrap_or_default();
        assert!(
            report.contains(to.trim().trim_start_matches("- ").split(':').next().unwrap()),
            "{to:?} passed:\n{report}"
        );
    }
    let sample = std::fs::read_to_string(repo_root().join("tests/manifests/samples/gittarget.yaml")).unwrap();
    assert!(kubeconform(tools, &sample).is_ok(), "the GitTarget sample is valid");
    let report = kubeconform(tools, &sample.replace("baseFolder:", "baseFoldr:")).unwrap_err();
    assert!(report.contains("baseFoldr"), "{report}");
}

#[tokio::test]
async fn every_rendering_is_accepted_by_the_api_server() {
    let tools = chart::tools();
    chart::install_monitoring_crds(tools);
    let env = support::env();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "chart").await;
    // Restricted Pod Security: the API server warns about any pod template
    // that breaks it (enforcement applies to Pods, warnings to workloads too).
    chart::run_ok(
        Command::new(&tools.kubectl).args(["label", "namespace", &ns.name]).args([
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ]),
        None,
    );
    for values in chart::values_files() {
        let manifests = chart::render_in(tools, &ns.name, values.as_deref(), &[]);
        let out = chart::run(
            Command::new(&tools.kubectl).args([
                "apply",
                "--dry-run=server",
                "--validate=strict",
                "-o",
                "json",
                "-f",
                "-",
            ]),
            Some(manifests.as_bytes()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the API server refuses the chart with {values:?}:\n{stderr}");
        assert!(
            !stderr.contains("Warning"),
            "the API server warns about the chart with {values:?}:\n{stderr}"
        );
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        let items = list["items"].as_array().cloned().unwrap_or_else(|| vec![list.clone()]);
        let kinds: BTreeSet<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
        for kind in ALWAYS {
            assert!(kinds.contains(kind), "no {kind} accepted with {values:?}: {kinds:?}");
        }
        let deployment = items.iter().find(|i| i["kind"] == "Deployment").unwrap();
        check_hardening(deployment);
    }
    // The documented CRD upgrade path, on CRDs that are already installed.
    let crds = chart::dir().join("crds");
    support::fixtures::install_crds(&client).await;
    chart::run_ok(
        Command::new(&tools.kubectl)
            .args(["apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f"])
            .arg(&crds),
        None,
    );
}

/// What the restricted profile cannot see but the chart promises.
fn check_hardening(deployment: &Value) {
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], true);
    let mounts: BTreeSet<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(mounts.contains("/tmp") && mounts.contains("/var/lib/gitops-reverser"), "{mounts:?}");
    let env: Vec<&str> =
        container["env"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    for name in ["POD_NAME", "POD_NAMESPACE", "GITOPS_REVERSER_DATA_DIR", "GITOPS_REVERSER_LEASE_PREFIX"] {
        assert!(env.contains(&name), "{name} is not set: {env:?}");
    }
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > 4, "terminationGracePeriodSeconds {grace}");
}

#[test]
fn dashboards_become_configmaps_for_the_grafana_sidecar() {
    let tools = chart::tools();
    let copy = chart::copy_with_dashboards(&[
        ("overview.json", r#"{"title": "Overview", "panels": []}"#),
        ("git_and_lag.json", r#"{"title": "Git and lag", "panels": []}"#),
    ]);
    let mut cmd = Command::new(&tools.helm);
    cmd.args(["template", "t", "--namespace", "monitoring", "--show-only", "templates/dashboards.yaml"])
        .arg(copy.path())
        .args(["--set", "dashboards.enabled=true"]);
    let text = String::from_utf8(chart::run_ok(&mut cmd, None).stdout).unwrap();
    assert_eq!(text.matches("kind: ConfigMap").count(), 2, "{text}");
    assert_eq!(text.matches("grafana_dashboard: \"1\"").count(), 2, "{text}");
    assert!(text.contains("name: t-gitops-reverser-dashboard-git-and-lag"), "{text}");
    assert!(text.contains("  git_and_lag.json: |-\n    {\"title\": \"Git and lag\""), "{text}");
    assert!(kubeconform(tools, &text).is_ok());

    // And none at all is fine.
    let empty = chart::copy_with_dashboards(&[]);
    let mut cmd = Command::new(&tools.helm);
    cmd.args(["template", "t"]).arg(empty.path()).args(["--set", "dashboards.enabled=true"]);
    let text = String::from_utf8(chart::run_ok(&mut cmd, None).stdout).unwrap();
    assert!(!text.contains("kind: ConfigMap"), "{text}");
}

#[test]
fn bad_values_are_refused_with_a_reason() {
    let tools = chart::tools();
    for (set, reason) in [
        ("operator.logFormat=xml", "value must be one of 'human', 'json'"),
        ("replicas=3", "additional properties 'replicas' not allowed"),
        ("operator.shutdownTimeout=5", "/operator/shutdownTimeout"),
        ("ha.leaseDuration=1d", "/ha/leaseDuration"),
        ("terminationGracePeriodSeconds=10", "must be longer than operator.shutdownTimeout"),
        ("operator.shutdownTimeout=3s", "operator.shutdownTimeout (3s) must be at least 4s"),
        ("ha.renewDeadline=9s", "leaseDuration (8s) must be longer than renewDeadline (9s)"),
        ("ha.retryPeriod=5s", "renewDeadline (5s) must be longer than 1.2 x retryPeriod (5s)"),
        (
            "ha.leaseDuration=3s,ha.renewDeadline=2500ms",
            "retryPeriod (2s) + 1s must be shorter than leaseDuration (3s)",
        ),
        (
            "rbac.watchedResources[0].apiGroups[0]=,rbac.watchedResources[0].resources[0]=secrets",
            "/rbac/watchedResources/0/resources/0",
        ),
    ] {
        let mut cmd = Command::new(&tools.helm);
        cmd.args(["template", "t"]).arg(chart::dir()).args(["--set", set]);
        let out = chart::run(&mut cmd, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(stderr.contains(reason), "--set {set}: expected {reason:?} in:\n{stderr}");
    }
}

/// Runs kubeconform -strict on `manifests`; Ok with (kind, name) of every
/// valid object, Err with the report when anything is invalid, fails to
/// parse or has no schema.
fn kubeconform(tools: &Tools, manifests: &str) -> Result<Vec<(String, String)>, String> {
    let location = format!("{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json", schemas().display());
    let out =
        chart::run(
            Command::new(&tools.kubeconform)
                .args(["-strict", "-summary", "-verbose", "-output", "json"])
                .args(["-kubernetes-version", chart::KUBE_VERSION, "-schema-location", &location, "-"]),
            Some(manifests.as_bytes()),
        );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("kubeconform output is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    });
    let summary = &report["summary"];
    let bad = ["invalid", "errors", "skipped"].iter().any(|k| summary[k].as_u64() != Some(0));
    if bad || !out.status.success() {
        return Err(serde_json::to_string_pretty(&report).unwrap());
    }
    Ok(report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap().to_owned(), r["name"].as_str().unwrap().to_owned()))
        .collect())
}

/// Strict schemas, written once per test binary: the built-in kinds from the
/// API server, ours from `crds/`, the monitoring kinds from their CRDs.
fn schemas() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let tools = chart::tools();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(repo_root().join("tests/env/kubeconform-schemas"));
        cmd.arg(dir.path()).arg("--openapi-from").arg(&tools.kubectl);
        for folder in [repo_root().join("crds"), tools.monitoring_crds.clone()] {
            let mut files: Vec<PathBuf> =
                std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            cmd.args(files);
        }
        chart::run_ok(&mut cmd, None);
        dir
    })
    .path()
}

/// The alerts are valid Prometheus rules: `promtool check rules` on the
/// rendered PrometheusRule's `spec` (a rules file), with every values file;
/// and the same check refuses a broken expression, so it really parses them.
#[test]
fn the_prometheus_rules_pass_promtool() {
    let tools = chart::tools();
    let promtool = Path::new(support::env().var("GITENV_BIN")).join("promtool");
    let scratch = tempfile::tempdir().unwrap();
    let check = |name: &str, spec: &Value| {
        let file = scratch.path().join(name);
        std::fs::write(&file, serde_json::to_string_pretty(spec).unwrap()).unwrap();
        chart::run(Command::new(&promtool).args(["check", "rules"]).arg(&file), None)
    };
    for values in chart::values_files() {
        let text = chart::render(
            tools,
            values.as_deref(),
            &["--set", "prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml"],
        );
        let rule: Value = serde_saphyr::from_str(&text).unwrap();
        let alerts = rule["spec"]["groups"][0]["rules"].as_array().map_or(0, Vec::len);
        assert!(alerts >= 4, "unowned shards, push failures, lag, targets not Ready: {text}");
        let out = check("rules.json", &rule["spec"]);
        assert!(
            out.status.success(),
            "promtool check rules with {values:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{alerts} rules found")));

        // Per-GitTarget series carry the GitTarget's namespace, so the
        // installation is told apart by the ServiceMonitor's job.
        for alert in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
            let expr = alert["expr"].as_str().unwrap();
            assert!(expr.contains("job=\"") && !expr.contains("namespace="), "{expr}");
        }

        let mut broken = rule["spec"].clone();
        broken["groups"][0]["rules"][0]["expr"] = Value::from("max(gitops_reverser_unowned_shards");
        assert!(!check("broken.json", &broken).status.success(), "promtool accepted a broken expression");
    }
}

#[test]
fn the_service_monitor_keeps_the_gittarget_labels() {
    let tools = chart::tools();
    let text = chart::render(
        tools,
        None,
        &["--set", "serviceMonitor.enabled=true", "--show-only", "templates/servicemonitor.yaml"],
    );
    let monitor: Value = serde_saphyr::from_str(&text).unwrap();
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["honorLabels"], Value::Bool(true), "{text}");
    assert_eq!(endpoint["port"], "http", "{text}");
}

#[test]
fn allowed_git_hosts_reach_the_operator_only_when_set() {
    let tools = chart::tools();
    let env_of = |extra: &[&str]| -> Vec<(String, String)> {
        let args = [extra, &["--show-only", "templates/deployment.yaml"][..]].concat();
        let text = chart::render(tools, None, &args);
        let deployment: Value = serde_saphyr::from_str(&text).unwrap();
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                Some((e["name"].as_str()?.to_owned(), e["value"].as_str().unwrap_or("").to_owned()))
            })
            .collect()
    };
    let hosts = |env: &[(String, String)]| {
        env.iter().find(|(name, _)| name == "GITOPS_REVERSER_ALLOWED_GIT_HOSTS").map(|(_, v)| v.clone())
    };
    assert_eq!(hosts(&env_of(&[])), None, "empty means any host: no variable");
    let set = env_of(&["--set", "operator.allowedGitHosts={git.example.com,*.internal}"]);
    assert_eq!(hosts(&set).as_deref(), Some("git.example.com,*.internal"));
}
