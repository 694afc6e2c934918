//! The CRD schemas, enforced by the real API server: valid samples are
//! accepted and read back with defaults filled in; every invalid manifest in
//! `tests/manifests/invalid.yaml` is rejected with a message that names the
//! field and the rule.

mod support;

use std::time::Duration;

use gitops_reverser::api::{
    ClusterWatchRule, FLUX_SOURCE_GROUP, GitProvider, GitTarget, Operation, ProviderKind, Prune, WatchRule,
    all_crds,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};
use support::{ClusterObjectGuard, TestNamespace};

const MANAGER: &str = "gitops-reverser-tests";

/// Applies our CRDs and waits until the API server serves them.
async fn install_crds(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd)).await.expect("apply CRD");
        support::wait_for(&format!("CRD {name} to be established"), Duration::from_secs(30), || async {
            let crd = api.get(&name).await.ok()?;
            let conditions = crd.status?.conditions?;
            conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        })
        .await;
    }
}

fn api_for(client: &kube::Client, kind: &str, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("configbutler.ai", "v1alpha1", kind));
    if kind == "ClusterWatchRule" {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, &resource)
    }
}

/// Server-side apply with strict field validation, as `kubectl apply` does.
async fn apply(client: &kube::Client, namespace: &str, manifest: &Value) -> Result<(), kube::Error> {
    let kind = manifest["kind"].as_str().unwrap();
    let name = manifest["metadata"]["name"].as_str().unwrap();
    let params = PatchParams::apply(MANAGER).validation_strict();
    api_for(client, kind, namespace).patch(name, &params, &Patch::Apply(manifest)).await.map(drop)
}

fn read_sample(file: &str) -> Value {
    let path = support::repo_root().join("tests/manifests/samples").join(file);
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn valid_samples_are_accepted_and_read_back_with_defaults() {
    let client = support::env().client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "schema-valid").await;

    for file in [
        "gitprovider.yaml",
        "gitprovider-http.yaml",
        "gittarget.yaml",
        "gittarget-flux.yaml",
        "watchrule.yaml",
    ] {
        let manifest = read_sample(file);
        apply(&client, &ns.name, &manifest).await.unwrap_or_else(|e| panic!("{file} rejected: {e}"));
    }
    let mut cluster_rule = read_sample("clusterwatchrule.yaml");
    let cluster_rule_name = support::unique_name("cluster-inventory");
    cluster_rule["metadata"]["name"] = json!(cluster_rule_name);
    let _guard =
        ClusterObjectGuard { resource: "clusterwatchrules.configbutler.ai", name: cluster_rule_name.clone() };
    apply(&client, &ns.name, &cluster_rule).await.expect("clusterwatchrule.yaml rejected");

    let provider =
        Api::<GitProvider>::namespaced(client.clone(), &ns.name).get("platform-audit").await.unwrap();
    assert_eq!(provider.spec.push.unwrap().max_commits, Some(20));
    assert!(!provider.spec.insecure, "insecure defaults to false");
    let template = provider.spec.commit.and_then(|c| c.message_template).unwrap();
    assert!(template.starts_with("{{ .Operation }} {{ .Resource }}/"), "{template}");
    let lab = Api::<GitProvider>::namespaced(client.clone(), &ns.name).get("lab-http").await.unwrap();
    assert!(lab.spec.insecure, "an http:// provider that opts in is accepted");

    let targets = Api::<GitTarget>::namespaced(client.clone(), &ns.name);
    let native = targets.get("dev-cluster").await.unwrap();
    assert_eq!(native.spec.branch, "main", "branch defaults to main");
    assert_eq!(native.spec.provider_ref.kind, ProviderKind::GitProvider, "kind defaults to GitProvider");
    assert_eq!(native.spec.provider_ref.effective_group(), "configbutler.ai");
    assert_eq!(native.spec.prune, Prune::Never);
    let flux = targets.get("flux-audit").await.unwrap();
    assert_eq!(flux.spec.provider_ref.kind, ProviderKind::GitRepository);
    assert_eq!(flux.spec.prune, Prune::Always, "prune defaults to Always");
    assert_eq!(flux.spec.provider_ref.effective_group(), FLUX_SOURCE_GROUP, "group is inferred from kind");

    let rule = Api::<WatchRule>::namespaced(client.clone(), &ns.name).get("app-config").await.unwrap();
    assert_eq!(rule.spec.sink_ref.group, "configbutler.ai", "sinkRef.group is defaulted");
    let first = &rule.spec.rules[0];
    assert_eq!(first.operations, vec![Operation::All], "operations default to *");
    assert_eq!(first.api_groups, vec!["*"]);
    assert_eq!(first.api_versions, vec!["*"]);
    assert!(first.ignore_fields.is_empty() && first.ignore_managers.is_empty(), "ignores default to none");
    // Pointer escapes (~1 for '/', ~0 for '~') pass the CRD's pattern.
    assert_eq!(rule.spec.rules[1].ignore_fields.len(), 3);
    assert_eq!(rule.spec.rules[1].ignore_managers, vec!["kube-controller-manager"]);

    let cluster = Api::<ClusterWatchRule>::all(client.clone()).get(&cluster_rule_name).await.unwrap();
    assert_eq!(cluster.spec.sink_ref.namespace, "platform");
    assert_eq!(cluster.spec.sink_ref.group, "configbutler.ai");
}

#[tokio::test]
async fn printer_columns_make_kubectl_get_useful() {
    let env = support::env();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "schema-columns").await;
    apply(&client, &ns.name, &read_sample("gittarget.yaml")).await.unwrap();

    let output = std::process::Command::new(env.kubectl())
        .args(["get", "gittargets", "-n", &ns.name])
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    for column in ["NAME", "BRANCH", "FOLDER", "READY", "AVAILABLE", "LAST", "PUSH", "QUEUED", "AGE"] {
        assert!(header.contains(&column), "column {column} missing from {header:?}");
    }
    assert!(table.contains("dev-cluster") && table.contains("clusters/dev"), "{table}");
}

#[derive(Deserialize)]
struct InvalidCase {
    name: String,
    kind: String,
    spec: Value,
    expect: Vec<String>,
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_a_message_naming_field_and_rule() {
    let client = support::env().client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "schema-invalid").await;
    let path = support::repo_root().join("tests/manifests/invalid.yaml");
    let cases: Vec<InvalidCase> = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.len() >= 20, "the table must hold at least 20 cases");

    let mut failures = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let name = format!("invalid-{index}");
        let manifest = json!({
            "apiVersion": "configbutler.ai/v1alpha1",
            "kind": case.kind,
            "metadata": {"name": name},
            "spec": case.spec,
        });
        match apply(&client, &ns.name, &manifest).await {
            Ok(()) => {
                failures.push(format!("{}: accepted", case.name));
                if case.kind == "ClusterWatchRule" {
                    drop(ClusterObjectGuard { resource: "clusterwatchrules.configbutler.ai", name });
                }
            }
            Err(kube::Error::Api(status)) => {
                let missing: Vec<&String> =
                    case.expect.iter().filter(|s| !status.message.contains(s.as_str())).collect();
                if !missing.is_empty() {
                    failures.push(format!("{}: message {:?} lacks {missing:?}", case.name, status.message));
                }
            }
            Err(other) => failures.push(format!("{}: unexpected error {other}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The CRDs' rule for `commit.messageTemplate` and the operator's parser
/// agree: what one accepts the other does (a template the API server took
/// but the parser refused would only show as a condition later; one the
/// server refused but the parser took would be a needless refusal).
#[tokio::test]
async fn the_api_server_and_the_parser_agree_on_message_templates() {
    use gitops_reverser::worker::message::template::{MAX_TEMPLATE_BYTES, Template};
    let client = support::env().client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "schema-templates").await;
    let long_ok = format!("{{{{ .Name }}}}{}", "x".repeat(MAX_TEMPLATE_BYTES - 11));
    let cases = [
        "{{ .Operation }} {{ .Resource }}/{{ .Namespace }}/{{ .Name }}",
        "chore({{.Namespace}}): {{.Kind}} {{.Name}}\n\nby {{ .Manager }} on {{ .Replica }} ({{ .TraceID }})",
        "{{ .Group }} {{ .Version }} {{ .APIVersion }} {{ .ResourceVersion }} {{ .Target }}",
        r#"{{ "{{" }}.Kind{{ "}}" }} and a lone { and }"#,
        "trailing brace {",
        "{ {{.Kind}}",
        long_ok.as_str(),
        "{{ .kind }}",
        "{{ .Kind",
        "{{{.Kind}}",
        "{{ .Kind | lower }}",
        "{{- .Kind }}",
        r#"{{ "a\"b" }}"#,
        "{{ }}",
    ];
    let mut disagreements = Vec::new();
    for (index, template) in cases.iter().enumerate() {
        let manifest = json!({
            "apiVersion": "configbutler.ai/v1alpha1",
            "kind": "GitTarget",
            "metadata": {"name": format!("template-{index}")},
            "spec": {"providerRef": {"name": "p"}, "baseFolder": format!("t{index}"),
                     "commit": {"messageTemplate": template}},
        });
        let server = apply(&client, &ns.name, &manifest).await;
        let parser = Template::parse(template);
        if server.is_ok() != parser.is_ok() {
            disagreements.push(format!("{template:?}: server {server:?}, parser {parser:?}"));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert_eq!(long_ok.len(), MAX_TEMPLATE_BYTES);

    let too_long = json!({
        "apiVersion": "configbutler.ai/v1alpha1",
        "kind": "GitProvider",
        "metadata": {"name": "too-long"},
        "spec": {"url": "https://h/r.git", "secretRef": {"name": "s"},
                 "commit": {"messageTemplate": format!("{long_ok}x")}},
    });
    let refused = apply(&client, &ns.name, &too_long).await.expect_err("past the size limit");
    assert!(refused.to_string().contains("spec.commit.messageTemplate"), "{refused}");
}
