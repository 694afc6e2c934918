//! Acceptance 2 and 3: the same write path over SSH, HTTPS with basic auth,
//! HTTPS with a bearer token, and through a Flux GitRepository.

mod support;

use serde_json::json;
use support::fixtures::{self, Access};
use support::scenario::Scenario;

/// Creates a ConfigMap and waits for its file on main; checks Ready.
async fn mirrors_a_configmap(s: &Scenario) {
    let _operator = s.operator_synced().await;
    s.configmap("probe", json!({"transport": "works"})).await;
    let path = s.core_path("mirror", "configmaps", "probe");
    let view = s
        .wait_branch("the probe file", "main", |v| v.files.get(&path).is_some_and(|f| f.contains("works")))
        .await;
    assert!(view.subjects.iter().any(|subject| subject.ends_with("/probe")));
    s.wait_condition("t", "Ready", |c| c.0 == "True").await;
}

async fn with_access(prefix: &str, https: bool, access: Access) {
    let s = Scenario::new(prefix).await;
    let url = if https { s.repo.https_url.clone() } else { s.repo.ssh_url.clone() };
    s.provider("git", &url, &access, json!({"interval": "1s"})).await;
    s.target("t", "git", "main", "mirror").await;
    s.rule("r", "t", json!([{"resources": ["configmaps"]}])).await;
    mirrors_a_configmap(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_ssh() {
    with_access("tr-ssh", false, Access::Ssh { read_only: false }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_https_with_basic_auth() {
    with_access("tr-basic", true, Access::HttpsBasic { read_only: false }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_https_with_a_bearer_token() {
    let s = Scenario::new("tr-bearer").await;
    // soft-serve accepts a JWT it signed as a bearer token; mint one for the rw user.
    let token = s.mint_jwt();
    s.provider("git", &s.repo.https_url.clone(), &Access::HttpsBearer { token }, json!({"interval": "1s"}))
        .await;
    s.target("t", "git", "main", "mirror").await;
    s.rule("r", "t", json!([{"resources": ["configmaps"]}])).await;
    mirrors_a_configmap(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_flux_git_repository() {
    let s = Scenario::new("tr-flux").await;
    // The Secret Flux would use, with a key that can write.
    fixtures::git_secret(&s.client, s.env, s.namespace(), "flux-system", &Access::Ssh { read_only: false })
        .await;
    fixtures::apply(
        &s.client,
        s.namespace(),
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "flux-system", "namespace": s.namespace()},
            "spec": {"url": s.repo.ssh_url, "interval": "1m", "ref": {"branch": "main"}, "secretRef": {"name": "flux-system"}},
        }),
    )
    .await;
    fixtures::target(
        &s.client,
        s.namespace(),
        "t",
        json!({"kind": "GitRepository", "name": "flux-system"}),
        "main",
        "mirror",
    )
    .await;
    s.rule("r", "t", json!([{"resources": ["configmaps"]}])).await;
    mirrors_a_configmap(&s).await;
}
