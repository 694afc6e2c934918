//! Builders for the objects a write-path test needs: the git credentials
//! Secret, GitProvider, GitTarget and rules, applied with server-side apply.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use super::Env;

const MANAGER: &str = "gitops-reverser-tests";

/// Installs the operator's CRDs (idempotent) and waits until they are served.
pub async fn install_crds(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in gitops_reverser::api::all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd)).await.expect("apply CRD");
        super::wait_for(&format!("CRD {name}"), Duration::from_secs(30), || async {
            let crd = api.get(&name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }
}

/// Server-side applies any manifest (namespaced ones into `namespace`).
pub async fn apply(client: &kube::Client, namespace: &str, manifest: Value) {
    let (group, version) = match manifest["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), manifest["apiVersion"].as_str().unwrap().to_owned()),
    };
    let kind = manifest["kind"].as_str().unwrap();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, kind));
    let name = manifest["metadata"]["name"].as_str().unwrap().to_owned();
    let api: Api<DynamicObject> = if kind == "ClusterWatchRule" || kind == "Namespace" {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, &resource)
    };
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&manifest))
        .await
        .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
}

/// How the operator reaches the git server in a test.
#[derive(Clone, Debug)]
pub enum Access {
    Ssh { read_only: bool },
    HttpsBasic { read_only: bool },
    HttpsBearer { token: String },
}

/// The data of a Flux-style credentials Secret for `access`.
pub fn secret_data(env: &Env, access: &Access) -> Value {
    let file = |var: &str| std::fs::read_to_string(env.var(var)).unwrap();
    match access {
        Access::Ssh { read_only } => json!({
            "identity": file(if *read_only { "GITENV_SSH_KEY_RO" } else { "GITENV_SSH_KEY_RW" }),
            "known_hosts": file("GITENV_KNOWN_HOSTS"),
        }),
        Access::HttpsBasic { read_only } => {
            let (user, pass) = if *read_only {
                ("GITENV_HTTPS_USER_RO", "GITENV_HTTPS_PASS_RO")
            } else {
                ("GITENV_HTTPS_USER_RW", "GITENV_HTTPS_PASS_RW")
            };
            json!({"username": env.var(user), "password": env.var(pass), "ca.crt": file("GITENV_CA_CRT")})
        }
        Access::HttpsBearer { token } => json!({"bearerToken": token, "ca.crt": file("GITENV_CA_CRT")}),
    }
}

/// A Secret named `name` with credentials for `access`.
pub async fn git_secret(client: &kube::Client, env: &Env, namespace: &str, name: &str, access: &Access) {
    apply(
        client,
        namespace,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": secret_data(env, access),
        }),
    )
    .await;
}

/// GitProvider `name` for `url` with Secret `secret` and the given push settings.
pub async fn provider(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    url: &str,
    secret: &str,
    push: Value,
) {
    apply(
        client,
        namespace,
        json!({
            "apiVersion": "configbutler.ai/v1alpha1", "kind": "GitProvider",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"url": url, "secretRef": {"name": secret}, "push": push},
        }),
    )
    .await;
}

/// GitTarget `name` writing `folder` of `branch` through `provider_ref`.
pub async fn target(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    provider_ref: Value,
    branch: &str,
    folder: &str,
) {
    apply(
        client,
        namespace,
        json!({
            "apiVersion": "configbutler.ai/v1alpha1", "kind": "GitTarget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"providerRef": provider_ref, "branch": branch, "baseFolder": folder},
        }),
    )
    .await;
}

/// WatchRule `name` sending `rules` to GitTarget `target`.
pub async fn watch_rule(client: &kube::Client, namespace: &str, name: &str, target: &str, rules: Value) {
    apply(
        client,
        namespace,
        json!({
            "apiVersion": "configbutler.ai/v1alpha1", "kind": "WatchRule",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"sinkRef": {"name": target}, "rules": rules},
        }),
    )
    .await;
}

/// ConfigMap `name` with `data`.
pub async fn configmap(client: &kube::Client, namespace: &str, name: &str, data: Value) {
    apply(
        client,
        namespace,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": data}),
    )
    .await;
}

/// The GitTarget's condition `type_` as (status, reason, message).
pub async fn condition(
    client: &kube::Client,
    namespace: &str,
    target: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let api: Api<gitops_reverser::api::GitTarget> = Api::namespaced(client.clone(), namespace);
    let target = api.get(target).await.ok()?;
    let c = target.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

/// ServiceAccount `account`, and a Role and RoleBinding `role` that let it
/// list and watch `resources` of `group` in `namespace`.
pub async fn grant_list_watch(
    client: &kube::Client,
    namespace: &str,
    account: &str,
    role: &str,
    group: &str,
    resources: &[&str],
) {
    let rbac = "rbac.authorization.k8s.io/v1";
    apply(
        client,
        namespace,
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": account, "namespace": namespace}}),
    )
    .await;
    apply(
        client,
        namespace,
        json!({"apiVersion": rbac, "kind": "Role",
        "metadata": {"name": role, "namespace": namespace},
        "rules": [{"apiGroups": [group], "resources": resources, "verbs": ["list", "watch"]}]}),
    )
    .await;
    apply(
        client,
        namespace,
        json!({"apiVersion": rbac, "kind": "RoleBinding",
        "metadata": {"name": role, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]}),
    )
    .await;
}
