//! Acceptance 4 of issue 19: the examples of docs/keeping-history-quiet.md
//! are rules the operator compiles and the real API server accepts, their
//! pointers remove what they name, and what the page says is never written
//! is indeed never written.

mod support;

use gitops_reverser::api::{ClusterWatchRule, WatchRule};
use gitops_reverser::quiet::Pointer;
use gitops_reverser::route::RouteTable;
use gitops_reverser::sanitize::sanitize_value;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use support::TestNamespace;

const PAGE: &str = "docs/keeping-history-quiet.md";

fn page() -> String {
    std::fs::read_to_string(support::repo_root().join(PAGE)).expect("read the page")
}

/// The bodies of the page's ```yaml blocks.
fn yaml_examples(page: &str) -> Vec<String> {
    page.split("```yaml\n").skip(1).map(|rest| rest.split("\n```").next().unwrap().to_owned()).collect()
}

/// Every `ignoreFields` pointer of a rule manifest.
fn pointers(manifest: &Value) -> Vec<String> {
    manifest["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ignoreFields"].as_array().cloned().unwrap_or_default())
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_example_compiles_as_the_operator_compiles_rules() {
    let examples = yaml_examples(&page());
    assert!(examples.len() >= 4, "the page lost examples: {}", examples.len());
    for text in &examples {
        let manifest: Value = serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        let mut table = RouteTable::default();
        let name = manifest["metadata"]["name"].as_str().unwrap();
        let compiled = match manifest["kind"].as_str() {
            Some("WatchRule") => {
                let rule: WatchRule = serde_json::from_value(manifest.clone()).unwrap();
                table.set_watch_rule("shop", name, &rule.spec)
            }
            Some("ClusterWatchRule") => {
                let rule: ClusterWatchRule = serde_json::from_value(manifest.clone()).unwrap();
                table.set_cluster_watch_rule(name, &rule.spec)
            }
            other => panic!("an example of kind {other:?}:\n{text}"),
        };
        compiled.unwrap_or_else(|e| panic!("{e}:\n{text}"));
        let has_ignores = manifest["spec"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| rule.get("ignoreFields").is_some() || rule.get("ignoreManagers").is_some());
        assert!(has_ignores, "an example without ignore rules:\n{text}");
    }
}

/// Each pointer removes the field it spells, read as plain keys: so `~1`
/// and `~0` mean what the page says.
#[test]
fn every_example_pointer_removes_the_field_it_names() {
    let page = page();
    let mut seen = 0;
    for text in yaml_examples(&page) {
        let manifest: Value = serde_saphyr::from_str(&text).unwrap();
        for pointer in pointers(&manifest) {
            let parsed = Pointer::parse(&pointer).unwrap();
            let mut object = json!({"metadata": {"name": "n"}});
            let mut at = &mut object;
            for token in parsed.tokens() {
                at = at.as_object_mut().unwrap().entry(token.clone()).or_insert(json!({}));
            }
            *at = json!("noise");
            assert!(parsed.remove_from(&mut object), "{pointer} removed nothing");
            assert_eq!(object, json!({"metadata": {"name": "n"}}), "{pointer}");
            seen += 1;
        }
    }
    let restarted = "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt";
    assert_eq!(
        Pointer::parse(restarted).unwrap().tokens().last().map(String::as_str),
        Some("kubectl.kubernetes.io/restartedAt")
    );
    assert!(page.contains(restarted), "the restart annotation's pointer is gone from the page");
    assert!(seen >= 4, "only {seen} pointers");
}

/// The page says these need no rule; the sanitizer must agree.
#[test]
fn what_the_page_says_is_never_written_is_not() {
    let page = page();
    for key in ["kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision"] {
        assert!(page.contains(&format!("`{key}`")), "the page no longer names {key}");
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {key: "x", "kept": "y"}}});
        let clean = sanitize_value(object);
        assert_eq!(clean["metadata"]["annotations"], json!({"kept": "y"}), "{key} is written");
    }
}

#[tokio::test]
async fn the_api_server_accepts_every_example() {
    let client = support::env().client().await;
    support::fixtures::install_crds(&client).await;
    let ns = TestNamespace::create(&client, "docs-quiet").await;
    for text in yaml_examples(&page()) {
        let mut manifest: Value = serde_saphyr::from_str(&text).unwrap();
        let kind = manifest["kind"].as_str().unwrap().to_owned();
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("configbutler.ai", "v1alpha1", &kind));
        let api: Api<DynamicObject> = if kind == "ClusterWatchRule" {
            Api::all_with(client.clone(), &resource)
        } else {
            manifest["metadata"]["namespace"] = json!(ns.name);
            Api::namespaced_with(client.clone(), &ns.name, &resource)
        };
        let name = manifest["metadata"]["name"].as_str().unwrap().to_owned();
        let params = PatchParams::apply("docs-quiet").dry_run().validation_strict();
        api.patch(&name, &params, &Patch::Apply(&manifest))
            .await
            .unwrap_or_else(|e| panic!("the API server rejects an example: {e}\n{text}"));
    }
}
