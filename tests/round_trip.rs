//! Issue 19, acceptance 3: the branch can rebuild the cluster. A namespace
//! with twelve kinds (a CRD and its custom objects among them) is mirrored
//! with `layout: kustomize`; the folder passes `kubectl kustomize` and a
//! server-side dry-run apply; the namespace is deleted and restored from a
//! checkout of the branch (`gitops-reverser restore`), and the second
//! mirror is byte-for-byte the first.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use serde_json::{Value, json};
use support::scenario::Scenario;
use support::{ClusterObjectGuard, fixtures, wait_for};

const FOLDER: &str = "mirror";

fn manifests(app: &str, group: &str) -> Vec<Value> {
    let meta = |name: &str| json!({"name": name, "namespace": app, "labels": {"roundtrip": app}});
    let labels = json!({"app": "web"});
    let pod = json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}});
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("settings"), "data": {"mode": "prod", "yes": "no"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
               "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": pod}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("web"),
               "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("web")}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("reader"),
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta("reader"),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": app}]}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("nightly"),
               "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                   "restartPolicy": "OnFailure", "containers": [{"name": "job", "image": "busybox:1.36"}]}}}}}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("deny"),
               "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("web"),
               "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}}}),
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": meta("limits"),
               "spec": {"limits": [{"type": "Container", "default": {"memory": "256Mi"}}]}}),
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta("quota"), "spec": {"hard": {"pods": "20"}}}),
        json!({"apiVersion": format!("{group}/v1"), "kind": "Widget", "metadata": meta("blue"),
               "spec": {"colour": "blue", "size": 3}}),
    ]
}

fn crd(group: &str, app: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}"), "labels": {"roundtrip": app}},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {"type": "object", "properties": {
                         "colour": {"type": "string"}, "size": {"type": "integer"}}}}}}}]}
    })
}

fn kubectl(s: &Scenario, args: &[&str], input: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(s.env.kubectl())
        .args(args)
        .env("KUBECONFIG", s.env.var("KUBECONFIG"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.unwrap_or_default().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The mirror's files: everything below the folder.
fn mirrored(s: &Scenario) -> BTreeMap<String, String> {
    s.branch("main")
        .map(|view| view.files.into_iter().filter(|(p, _)| p.starts_with(FOLDER)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_restored_from_its_branch_mirrors_byte_for_byte_the_same() {
    let s = Scenario::new("roundtrip").await;
    let app = format!("{}-app", s.namespace());
    let group = format!("{}.example.com", s.namespace());
    let _guards = [
        ClusterObjectGuard { resource: "customresourcedefinitions", name: format!("widgets.{group}") },
        ClusterObjectGuard { resource: "namespaces", name: app.clone() },
        ClusterObjectGuard { resource: "clusterwatchrules", name: s.namespace().to_owned() },
    ];
    fixtures::apply(
        &s.client,
        "",
        json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": app, "labels": {"roundtrip": app}}}),
    )
    .await;
    let (ok, out) = kubectl(&s, &["apply", "--server-side", "-f", "-"], Some(&crd(&group, &app).to_string()));
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &s,
        &["wait", "--for=condition=Established", "--timeout=60s", &format!("crd/widgets.{group}")],
        None,
    );
    assert!(ok, "{out}");
    for manifest in manifests(&app, &group) {
        fixtures::apply(&s.client, &app, manifest).await;
    }

    s.ssh_provider("git", json!({"interval": "1s"})).await;
    fixtures::apply(&s.client, s.namespace(), json!({
        "apiVersion": "configbutler.ai/v1alpha1", "kind": "GitTarget",
        "metadata": {"name": "audit", "namespace": s.namespace()},
        "spec": {"providerRef": {"name": "git"}, "branch": "main", "baseFolder": FOLDER, "layout": "kustomize"},
    }))
    .await;
    let selector = json!({"matchLabels": {"roundtrip": app}});
    fixtures::apply(
        &s.client,
        "",
        json!({
            "apiVersion": "configbutler.ai/v1alpha1", "kind": "ClusterWatchRule",
            "metadata": {"name": s.namespace()},
            "spec": {"sinkRef": {"name": "audit", "namespace": s.namespace()},
                     "rules": [{"apiGroups": ["*"], "resources": ["*"], "labelSelector": selector}]},
        }),
    )
    .await;
    let _operator = s.operator();

    // 12 namespaced objects, the Namespace, the CRD, and the kustomization.
    let expected = manifests(&app, &group).len() + 3;
    let first = wait_for("the first mirror", Duration::from_secs(90), || async {
        Some(mirrored(&s)).filter(|f| f.len() == expected)
    })
    .await;
    let kustomization = &first[&format!("{FOLDER}/kustomization.yaml")];
    assert_eq!(kustomization.matches("\n- ").count(), expected - 1, "{kustomization}");

    // A checkout of the branch as it is now.
    let checkout = tempfile::tempdir().unwrap();
    s.git.ok(checkout.path(), &["clone", "--quiet", "--branch", "main", &s.repo.ssh_url, "branch"]);
    let folder = checkout.path().join("branch").join(FOLDER);

    // The kustomize layout is what Flux and `kubectl apply -k` read.
    let (ok, built) = kubectl(&s, &["kustomize", folder.to_str().unwrap()], None);
    assert!(ok, "kubectl kustomize failed: {built}");
    let (ok, out) = kubectl(
        &s,
        &["apply", "--server-side", "--dry-run=server", "--field-manager=roundtrip", "-f", "-"],
        Some(&built),
    );
    assert!(ok, "the API server refused a dry-run apply of the kustomize output: {out}");

    let binary = env!("CARGO_BIN_EXE_gitops-reverser");
    let restore = |extra: &[&str]| {
        let out = Command::new(binary)
            .args(["restore", "--from", folder.to_str().unwrap()])
            .args(extra)
            .env("KUBECONFIG", s.env.var("KUBECONFIG"))
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, said) = restore(&["--dry-run"]);
    assert!(ok, "the dry run failed: {said}");
    assert_eq!(said.lines().filter(|l| l.starts_with("validated ")).count(), expected - 1, "{said}");

    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    namespaces.delete(&app, &Default::default()).await.unwrap();
    wait_for("the namespace to be gone", Duration::from_secs(120), || async {
        namespaces.get_opt(&app).await.ok().flatten().is_none().then_some(())
    })
    .await;

    let (ok, said) = restore(&[]);
    assert!(ok, "restore failed: {said}");
    assert_eq!(said.lines().filter(|l| l.starts_with("applied ")).count(), expected - 1, "{said}");

    let second = wait_for("the second mirror to equal the first", Duration::from_secs(90), || async {
        Some(mirrored(&s)).filter(|files| files == &first)
    })
    .await;
    println!("round_trip: {} files, byte for byte equal after delete and restore", second.len());
}
