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

/// The kinds every rendering has with the defaults and every ci file.
const ALWAYS: [&str; 9] = [
    "ClusterRole",
    "ClusterRoleBinding",
    "Deployment",
    "NetworkPolicy",
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
    // Both writable places are sized emptyDirs: a hostile git server fills
    // the volume and gets the pod evicted, not the node's disk.
    for volume in pod["volumes"].as_array().unwrap() {
        let limit = &volume["emptyDir"]["sizeLimit"];
        assert!(limit.is_string(), "volume {} is not a sized emptyDir: {volume}", volume["name"]);
    }
    assert_eq!(container["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
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
            "rbac.watchedResources[0].apiGroups[0]=,rbac.watchedResources[0].resources[0]=*",
            "/rbac/watchedResources/0/resources/0",
        ),
        ("rbac.secretNamespaces={Team_A}", "/rbac/secretNamespaces/0"),
        ("rbac.secretNamespaces={a,a}", "/rbac/secretNamespaces"),
        ("rbac.readSecrets=false,rbac.secretNamespaces={a}", "rbac.readSecrets is false"),
        ("networkPolicy.git.ports={0}", "/networkPolicy/git/ports/0"),
        ("networkPolicy.apiServer.cidrs={10.0.0.1}", "/networkPolicy/apiServer/cidrs/0"),
        ("networkPolicy.egress=[]", "additional properties 'egress' not allowed"),
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

/// The objects of a rendering.
fn objects(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(text).unwrap();
    docs.into_iter().filter(|d| d.is_object()).collect()
}

/// The NetworkPolicy rendered with `values` and `extra`, if any.
fn network_policy(values: Option<&Path>, extra: &[&str]) -> Option<Value> {
    let text = chart::render(chart::tools(), values, extra);
    objects(&text).into_iter().find(|o| o["kind"] == "NetworkPolicy")
}

/// A rule's ports as "port/protocol" (TCP when unset, as the API defaults it), sorted.
fn ports(rule: &Value) -> Vec<String> {
    let mut ports: Vec<String> = rule["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
        .collect();
    ports.sort();
    ports
}

/// The egress rule whose ports are exactly `want`; panics unless there is one.
fn egress<'a>(policy: &'a Value, want: &[&str]) -> &'a Value {
    let rules = policy["spec"]["egress"].as_array().unwrap();
    let mut found = rules.iter().filter(|r| ports(r) == want);
    let rule = found.next().unwrap_or_else(|| panic!("no egress rule on exactly {want:?}: {policy}"));
    assert!(found.next().is_none(), "two egress rules on {want:?}");
    rule
}

#[test]
fn the_network_policy_allows_what_the_values_say() {
    // On by default, for the operator's pods.
    let policy = network_policy(None, &[]).expect("no NetworkPolicy with the default values");
    let deployment = objects(&chart::render(chart::tools(), None, &[]))
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = policy["spec"]["podSelector"]["matchLabels"].as_object().unwrap();
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(&pod_labels[key], value, "the policy does not select the operator's pods");
    }
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress", "Egress"]));

    // Ingress: the HTTP port only (/metrics), from anyone.
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    assert_eq!(ports(&ingress[0]), ["8080/TCP"]);
    assert!(ingress[0].get("from").is_none(), "{ingress:?}");

    // Egress: DNS to kube-dns, the API server and git by port, nothing else.
    let rules = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(rules.len(), 3, "DNS, API server, git: {rules:?}");
    let dns = egress(&policy, &["53/TCP", "53/UDP"]);
    assert_eq!(
        dns["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "kube-system"
    );
    assert_eq!(dns["to"][0]["podSelector"]["matchLabels"]["k8s-app"], "kube-dns");
    assert!(egress(&policy, &["443/TCP", "6443/TCP"]).get("to").is_none(), "API server: any address");
    assert!(egress(&policy, &["22/TCP", "443/TCP"]).get("to").is_none(), "git: any address");

    // The ci file narrows each rule, and tracing adds the OTLP port.
    let hardened = chart::values_files().pop().unwrap();
    let policy = network_policy(hardened.as_deref(), &[]).unwrap();
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(ports(&ingress[0]), ["8080/TCP"]);
    assert_eq!(
        ingress[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let dns = egress(&policy, &["53/TCP", "53/UDP"]);
    assert_eq!(dns["to"][1]["ipBlock"]["cidr"], "169.254.20.10/32");
    let api = egress(&policy, &["6443/TCP"]);
    assert_eq!(api["to"], serde_json::json!([{"ipBlock": {"cidr": "192.168.10.0/28"}}]));
    let git = egress(&policy, &["22/TCP", "443/TCP", "7999/TCP"]);
    let cidrs =
        serde_json::json!([{"ipBlock": {"cidr": "140.82.112.0/20"}}, {"ipBlock": {"cidr": "2001:db8::/32"}}]);
    assert_eq!(git["to"], cidrs);
    let otlp = egress(&policy, &["4317/TCP"]);
    assert_eq!(
        otlp["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "observability"
    );
    assert_eq!(
        egress(&policy, &["3000/TCP"])["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "git-mirror"
    );
    assert_eq!(policy["spec"]["egress"].as_array().unwrap().len(), 5, "{policy}");

    // The ports follow the operator's settings.
    let policy = network_policy(None, &["--set", "operator.httpPort=9090"]).unwrap();
    assert_eq!(ports(&policy["spec"]["ingress"][0]), ["9090/TCP"]);
    for (endpoint, port) in [
        ("http://collector.observability:4318", "4318/TCP"),
        ("https://otlp.example.com", "443/TCP"),
        ("http://otlp.example.com", "80/TCP"),
        ("http://[fd00::1]:4317", "4317/TCP"),
    ] {
        let policy = network_policy(None, &["--set", &format!("opentelemetry.endpoint={endpoint}")]).unwrap();
        assert!(egress(&policy, &[port]).get("to").is_none(), "{endpoint}");
    }

    // Extra rules are added; off is off.
    let policy = network_policy(
        None,
        &[
            "--set",
            "networkPolicy.extraIngress[0].ports[0].port=9443",
            "--set",
            "networkPolicy.git.ports={2222}",
        ],
    )
    .unwrap();
    assert_eq!(ports(&policy["spec"]["ingress"][1]), ["9443/TCP"]);
    egress(&policy, &["2222/TCP"]);
    assert!(network_policy(None, &["--set", "networkPolicy.enabled=false"]).is_none());
}

/// The rules on Secrets in a rendering, as "Kind namespace/name: verbs".
fn secret_rules(extra: &[&str]) -> Vec<String> {
    let text =
        chart::render(chart::tools(), None, &[extra, &["--show-only", "templates/rbac.yaml"]].concat());
    let mut found = Vec::new();
    for object in objects(&text) {
        for rule in object["rules"].as_array().into_iter().flatten() {
            let resources = rule["resources"].as_array().unwrap();
            assert!(!resources.iter().any(|r| r == "*"), "a wildcard rule: {rule}");
            if resources.iter().any(|r| r == "secrets") {
                found.push(format!(
                    "{} {}/{}: {}",
                    object["kind"].as_str().unwrap(),
                    object["metadata"]["namespace"].as_str().unwrap_or(""),
                    object["metadata"]["name"].as_str().unwrap(),
                    rule["verbs"]
                ));
            }
        }
    }
    found
}

#[test]
fn secret_namespaces_replace_the_cluster_wide_secret_rule() {
    // The digest key's Role (get by name, create) is in the release namespace only, always.
    let digest = [
        r#"Role gitops-reverser/gitops-reverser-digest-key: ["get"]"#,
        r#"Role gitops-reverser/gitops-reverser-digest-key: ["create"]"#,
    ];
    assert_eq!(secret_rules(&[]), [r#"ClusterRole /gitops-reverser: ["get"]"#, digest[0], digest[1]]);
    assert_eq!(secret_rules(&["--set", "rbac.readSecrets=false"]), digest);
    let listed = ["--set", "rbac.secretNamespaces={team-a,team-b}"];
    assert_eq!(
        secret_rules(&listed),
        [
            digest[0],
            digest[1],
            r#"Role team-a/gitops-reverser-secrets: ["get"]"#,
            r#"Role team-b/gitops-reverser-secrets: ["get"]"#
        ]
    );
    // Each Role is bound to the operator's ServiceAccount, in its namespace.
    let text =
        chart::render(chart::tools(), None, &[&listed[..], &["--show-only", "templates/rbac.yaml"]].concat());
    let bindings: Vec<Value> = objects(&text)
        .into_iter()
        .filter(|o| o["kind"] == "RoleBinding" && o["roleRef"]["name"] == "gitops-reverser-secrets")
        .collect();
    let namespaces: Vec<&str> =
        bindings.iter().map(|b| b["metadata"]["namespace"].as_str().unwrap()).collect();
    assert_eq!(namespaces, ["team-a", "team-b"]);
    for binding in &bindings {
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "gitops-reverser", "namespace": "gitops-reverser"}])
        );
    }
}
