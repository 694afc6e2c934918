//! The write path against the real API server and git server: watched
//! objects become clean YAML files, one commit per change.

mod support;

use std::time::Duration;

use gitops_reverser::sanitize::sanitize_value;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::fixtures::{self, Access};
use support::git::{Auth, GitClient};
use support::operator::Operator;
use support::{TestNamespace, wait_for};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn configmap_create_update_delete_each_make_one_commit() {
    create_update_delete("wp-cud", |repo| repo.ssh_url.clone()).await;
}

/// The same against the reference server, OpenSSH sshd with git-shell.
#[tokio::test(flavor = "multi_thread")]
async fn configmap_create_update_delete_each_make_one_commit_on_sshd() {
    create_update_delete("wp-cud-sshd", |repo| repo.sshd_url.clone()).await;
}

async fn create_update_delete(name: &str, url_of: fn(&support::Repo) -> String) {
    let env = support::env();
    let client = env.client().await;
    fixtures::install_crds(&client).await;
    let ns = TestNamespace::create(&client, name).await;
    let repo = env.new_repo(name);
    let url = url_of(&repo);
    fixtures::git_secret(&client, env, &ns.name, "git", &Access::Ssh { read_only: false }).await;
    fixtures::provider(&client, &ns.name, "git", &url, "git", json!({"interval": "1s"})).await;
    fixtures::target(&client, &ns.name, "audit", json!({"name": "git"}), "main", "clusters/test").await;
    fixtures::watch_rule(&client, &ns.name, "cms", "audit", json!([{"resources": ["configmaps"]}])).await;
    let operator = Operator::start(env, &ns.name);
    operator.wait_log("initial list complete").await;
    let git = GitClient::new(Auth::ssh_rw(env));
    let path = format!("clusters/test/{}/core/configmaps/app.yaml", ns.name);
    let read = || async { git.read_branch(&url, "main") };

    fixtures::configmap(&client, &ns.name, "app", json!({"greeting": "hello"})).await;
    let created = wait_for("the ConfigMap file", WAIT, || async {
        read().await.filter(|v| v.files.get(&path).is_some_and(|f| f.contains("greeting: hello")))
    })
    .await;
    let yaml = &created.files[&path];
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let live = serde_json::to_value(cms.get("app").await.unwrap()).unwrap();
    // What kubectl or Flux would read from the file is the object, sanitized.
    support::assert_go_yaml_readers_agree(env, &[(&path, yaml, &sanitize_value(live))]);
    for banned in ["status:", "managedFields", "resourceVersion", "uid:", "creationTimestamp"] {
        assert!(!yaml.contains(banned), "{banned} in {yaml}");
    }
    assert!(yaml.starts_with("apiVersion: v1\nkind: ConfigMap\nmetadata:"), "{yaml}");
    assert!(
        created.subjects.contains(&format!("create configmaps/{}/app", ns.name)),
        "{:?}",
        created.subjects
    );

    fixtures::configmap(&client, &ns.name, "app", json!({"greeting": "bonjour"})).await;
    let updated = wait_for("the update", WAIT, || async {
        read().await.filter(|v| v.files.get(&path).is_some_and(|f| f.contains("greeting: bonjour")))
    })
    .await;
    assert_eq!(updated.subjects[0], format!("update configmaps/{}/app", ns.name));
    let live = serde_json::to_value(cms.get("app").await.unwrap()).unwrap();
    support::assert_go_yaml_readers_agree(env, &[(&path, &updated.files[&path], &sanitize_value(live))]);
    let commits_before = updated.subjects.len();

    // Only ignored metadata changes: no commit. A later sentinel change on
    // the same watch proves the no-op was processed before we count.
    let mut cm = cms.get("app").await.unwrap();
    cm.metadata
        .annotations
        .get_or_insert_default()
        .insert("kubectl.kubernetes.io/last-applied-configuration".into(), "{\"ignored\":true}".into());
    cm.metadata.managed_fields = None;
    cms.replace("app", &Default::default(), &cm).await.unwrap();
    fixtures::configmap(&client, &ns.name, "sentinel", json!({"n": "1"})).await;
    let after_noop = wait_for("the sentinel", WAIT, || async {
        read().await.filter(|v| v.subjects[0] == format!("create configmaps/{}/sentinel", ns.name))
    })
    .await;
    assert_eq!(
        after_noop.subjects.len(),
        commits_before + 1,
        "the no-op update made a commit: {:?}",
        after_noop.subjects
    );

    cms.delete("app", &DeleteParams::default()).await.unwrap();
    let deleted =
        wait_for("the delete", WAIT, || async { read().await.filter(|v| !v.files.contains_key(&path)) })
            .await;
    assert_eq!(deleted.subjects[0], format!("delete configmaps/{}/app", ns.name));

    let ready = wait_for("Ready=True", WAIT, || async {
        fixtures::condition(&client, &ns.name, "audit", "Ready").await.filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!(ready.1, "Ready");
    drop(operator);
}
