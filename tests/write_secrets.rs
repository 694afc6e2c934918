//! Issue 17: Secrets written as SOPS files, against the real API server,
//! git server and `sops` binary. A target with `spec.encryption` writes a
//! selected Secret as `<name>.sops.yaml`, which the real `sops --decrypt`
//! (the age private key in its environment only) turns back into exactly
//! the live Secret's data; 100 resyncs (suspend and resume) and a restart of
//! the operator add no commit while the Secret is unchanged, and one
//! changed key adds exactly one. No Secret value is in any blob of the
//! repository, nor in the operator's log.

mod support;

use std::time::Duration;

use age::secrecy::ExposeSecret;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::fixtures::{self, Access};
use support::git::{Auth, GitClient};
use support::leaks::LeakScan;
use support::operator::Operator;
use support::{TestNamespace, wait_for};

const WAIT: Duration = Duration::from_secs(90);
const PASSWORD: &str = "correct horse battery staple";
const TOKEN: &str = "tok-7f3a9c1e5b2d";
/// Unchanged resyncs (suspend, resume) the sealed Secret must survive
/// without a commit (issue 17, acceptance 3).
const RESYNCS: usize = 100;

/// Commits of the branch that touched `path`, newest first.
fn commits_touching(git: &GitClient, url: &str, path: &str) -> Option<Vec<String>> {
    let scratch = git.workdir("secrets");
    let dir = scratch.join(format!("log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cloned = git.run(&scratch, &["clone", "--quiet", url, dir.to_str().unwrap()]);
    if !cloned.status.success() {
        return None;
    }
    let log = git.ok(&dir, &["log", "--format=%H", "--", path]);
    let _ = std::fs::remove_dir_all(&dir);
    Some(log.lines().map(str::to_owned).collect())
}

async fn set_suspend(client: &kube::Client, ns: &str, suspend: bool) {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("configbutler.ai", "v1alpha1", "GitTarget"),
            "gittargets",
        ),
    );
    api.patch("audit", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": suspend}})))
        .await
        .unwrap();
}

/// The reason of the GitTarget's Ready condition.
async fn ready_reason(client: &kube::Client, ns: &str) -> Option<String> {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("configbutler.ai", "v1alpha1", "GitTarget"),
            "gittargets",
        ),
    );
    let target = api.get("audit").await.ok()?;
    let conditions = target.data["status"]["conditions"].as_array()?.clone();
    conditions.iter().find(|c| c["type"] == "Ready").and_then(|c| c["reason"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_written_sealed_decrypt_to_the_live_data_and_make_no_churn() {
    let env = support::env();
    let client = env.client().await;
    fixtures::install_crds(&client).await;
    let ns = TestNamespace::create(&client, "ws-sops").await;
    let repo = env.new_repo("ws-sops");
    let url = repo.ssh_url.clone();
    fixtures::git_secret(&client, env, &ns.name, "git", &Access::Ssh { read_only: false }).await;
    let identity = age::x25519::Identity::generate();
    fixtures::apply(
        &client,
        &ns.name,
        json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "GitProvider",
               "metadata": {"name": "git", "namespace": ns.name},
               "spec": {"url": url, "secretRef": {"name": "git"}, "push": {"interval": "1s"}}}),
    )
    .await;
    fixtures::apply(
        &client,
        &ns.name,
        json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "GitTarget",
               "metadata": {"name": "audit", "namespace": ns.name},
               "spec": {"providerRef": {"name": "git"}, "baseFolder": "clusters/test",
                        "encryption": {"provider": "sops",
                                       "age": {"recipients": [identity.to_public().to_string()]}}}}),
    )
    .await;
    let selector = json!([{"resources": ["secrets", "configmaps"],
                            "labelSelector": {"matchLabels": {"mirror": "yes"}}}]);
    fixtures::watch_rule(&client, &ns.name, "secrets", "audit", selector).await;
    let operator = Operator::start(env, &ns.name);
    operator.wait_log("initial list complete").await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret = |token: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "db", "namespace": ns.name, "labels": {"mirror": "yes"}},
               "stringData": {"password": PASSWORD, "token": token}})
    };
    secrets.patch("db", &PatchParams::apply("test"), &Patch::Apply(&secret(TOKEN))).await.unwrap();
    let git = GitClient::new(Auth::ssh_rw(env));
    let path = format!("clusters/test/{}/core/secrets/db.sops.yaml", ns.name);
    let view = wait_for("the sealed Secret on the branch", WAIT, || async {
        git.read_branch(&url, "main").filter(|v| v.files.contains_key(&path))
    })
    .await;
    let file = &view.files[&path];
    assert!(file.contains("ENC[AES256_GCM,") && !file.contains(PASSWORD), "{file}");

    // The real sops, with the private key, gives back the live data.
    let out = support::sops::decrypt(file.as_bytes(), &identity);
    assert!(out.status.success(), "sops: {}", String::from_utf8_lossy(&out.stderr));
    let decrypted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let live = secrets.get("db").await.unwrap();
    let live_data: serde_json::Map<String, Value> =
        live.data.unwrap().into_iter().map(|(k, v)| (k, Value::String(base64_of(&v.0)))).collect();
    assert_eq!(decrypted["data"], Value::Object(live_data), "decrypted {decrypted}");
    assert_eq!(decrypted["metadata"]["name"], "db");

    // Resyncs and a restart: no new commit for the unchanged Secret.
    let before = commits_touching(&git, &url, &path).unwrap();
    assert_eq!(before.len(), 1, "{before:?}");
    let resyncs = |operator: &Operator| operator.logs().matches("resyncing targets").count();
    let started = std::time::Instant::now();
    for round in 0..RESYNCS {
        set_suspend(&client, &ns.name, true).await;
        wait_for("the target to say it is suspended", WAIT, || async {
            (ready_reason(&client, &ns.name).await.as_deref() == Some("Suspended")).then_some(())
        })
        .await;
        let resynced = resyncs(&operator);
        set_suspend(&client, &ns.name, false).await;
        wait_for(&format!("resync {round} after resuming"), WAIT, || async {
            (resyncs(&operator) > resynced
                && ready_reason(&client, &ns.name).await.as_deref() == Some("Ready"))
            .then_some(())
        })
        .await;
    }
    eprintln!("write_secrets: {RESYNCS} resyncs in {:?}", started.elapsed());
    drop(operator);
    let operator = Operator::start(env, &ns.name);
    operator.wait_log("initial list complete").await;
    // A marker change proves the restarted operator has pushed since.
    secrets
        .patch("db", &PatchParams::apply("test"), &Patch::Apply(&secret("tok-changed-9e1d")))
        .await
        .unwrap();
    let after = wait_for("the changed Secret's commit", WAIT, || async {
        commits_touching(&git, &url, &path).filter(|c| c.len() > before.len())
    })
    .await;
    assert_eq!(after.len(), 2, "exactly one commit for the changed key, none for the resyncs: {after:?}");

    // A new recipient: the unchanged Secret is sealed again, once, and the new key reads it.
    let rotated = age::x25519::Identity::generate();
    let recipients = [identity.to_public().to_string(), rotated.to_public().to_string()];
    let targets: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("configbutler.ai", "v1alpha1", "GitTarget"),
            "gittargets",
        ),
    );
    let patch = json!({"spec": {"encryption": {"age": {"recipients": recipients}}}});
    targets.patch("audit", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    let view = wait_for("the Secret sealed for the new recipient", WAIT, || async {
        git.read_branch(&url, "main")
            .filter(|v| v.files.get(&path).is_some_and(|f| f.contains(&rotated.to_public().to_string())))
    })
    .await;
    let out = support::sops::decrypt(view.files[&path].as_bytes(), &rotated);
    assert!(out.status.success(), "the new key cannot decrypt: {}", String::from_utf8_lossy(&out.stderr));
    let rotated_commits = commits_touching(&git, &url, &path).unwrap();
    assert_eq!(rotated_commits.len(), 3, "one commit re-seals for the new recipients: {rotated_commits:?}");

    // Encryption removed: the Secret is withheld, and the relist that
    // follows keeps its sealed file (a Flux applying the folder must not
    // prune the Secret). A ConfigMap made once the worker took in the
    // relist's sweep of Secrets proves that sweep was committed.
    let swept = |operator: &Operator| {
        operator.logs().lines().filter(|l| l.contains("list ended") && l.contains("secrets")).count()
    };
    let before_sweep = swept(&operator);
    let patch = json!({"spec": {"encryption": null}});
    targets.patch("audit", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    wait_for("the relist's sweep of Secrets", WAIT, || async {
        (swept(&operator) > before_sweep).then_some(())
    })
    .await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let marker = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "marker", "namespace": ns.name, "labels": {"mirror": "yes"}}});
    configmaps.patch("marker", &PatchParams::apply("test"), &Patch::Apply(&marker)).await.unwrap();
    let marker_path = format!("clusters/test/{}/core/configmaps/marker.yaml", ns.name);
    let view = wait_for("the marker after the sweep", WAIT, || async {
        git.read_branch(&url, "main").filter(|v| v.files.contains_key(&marker_path))
    })
    .await;
    assert!(view.files.contains_key(&path), "the relist deleted the withheld Secret's sealed file");
    assert_eq!(commits_touching(&git, &url, &path).unwrap(), rotated_commits, "nothing touched it since");

    // No value or key in any object of the repository, the log, any status or Event.
    let mut scan = LeakScan::new()
        .value("the password", PASSWORD.as_bytes())
        .value("the first token", TOKEN.as_bytes())
        .value("the second token", b"tok-changed-9e1d")
        .value("the age private key", identity.to_string().expose_secret().as_bytes())
        .value("the second age private key", rotated.to_string().expose_secret().as_bytes());
    scan.remote(&git, &url);
    scan.text("the operator's log", operator.logs().as_bytes());
    scan.namespace(&client, &ns.name).await;
    scan.assert_clean();
    drop(operator);
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Commits `.sops.yaml` with `text` on `main` (a hand edit, retried over
/// the operator's own pushes).
fn push_sops_config(git: &GitClient, url: &str, text: &str, label: &str) {
    let work = git.workdir(label);
    let clone = work.join("clone");
    let _ = std::fs::remove_dir_all(&clone);
    git.ok(&work, &["clone", "--quiet", url, clone.to_str().unwrap()]);
    // A new repository has no main yet.
    match git.run(&clone, &["fetch", "--quiet", "origin", "main"]).status.success() {
        true => git.ok(&clone, &["checkout", "--quiet", "-B", "main", "FETCH_HEAD"]),
        false => git.ok(&clone, &["checkout", "--quiet", "-B", "main"]),
    };
    std::fs::write(clone.join(".sops.yaml"), text).unwrap();
    git.ok(&clone, &["add", ".sops.yaml"]);
    git.ok(&clone, &["commit", "--quiet", "-m", label]);
    for _ in 0..20 {
        if git.run(&clone, &["push", "--quiet", "origin", "HEAD:main"]).status.success() {
            return;
        }
        git.ok(&clone, &["pull", "--quiet", "--rebase", "origin", "main"]);
    }
    panic!("could not push {label}");
}

/// `followSopsConfig`: two targets on one branch seal for the keys that
/// the branch's `.sops.yaml` gives their paths (first matching rule, path
/// from the repository root), as `sops` would; when a rule changes, the
/// Secrets it covers are sealed again for the new key, once.
#[tokio::test(flavor = "multi_thread")]
async fn targets_that_follow_the_branch_sops_config_seal_for_its_rules() {
    let env = support::env();
    let client = env.client().await;
    fixtures::install_crds(&client).await;
    let ns = TestNamespace::create(&client, "ws-rules").await;
    let repo = env.new_repo("ws-rules");
    let url = repo.ssh_url.clone();
    let git = GitClient::new(Auth::ssh_rw(env));
    let (prod, other, rotated) = (
        age::x25519::Identity::generate(),
        age::x25519::Identity::generate(),
        age::x25519::Identity::generate(),
    );
    let rules = |prod_key: &age::x25519::Identity| {
        format!(
            "creation_rules:\n  - path_regex: ^prod/.*\\.sops\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    age: {}\n  - age: >-\n      {}\n",
            prod_key.to_public(),
            other.to_public()
        )
    };
    push_sops_config(&git, &url, &rules(&prod), "sops-config");

    fixtures::git_secret(&client, env, &ns.name, "git", &Access::Ssh { read_only: false }).await;
    fixtures::apply(
        &client,
        &ns.name,
        json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "GitProvider",
               "metadata": {"name": "git", "namespace": ns.name},
               "spec": {"url": url, "secretRef": {"name": "git"}, "push": {"interval": "1s"}}}),
    )
    .await;
    for folder in ["prod", "dev"] {
        fixtures::apply(
            &client,
            &ns.name,
            json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "GitTarget",
                   "metadata": {"name": folder, "namespace": ns.name},
                   "spec": {"providerRef": {"name": "git"}, "baseFolder": folder,
                            "encryption": {"provider": "sops", "followSopsConfig": true}}}),
        )
        .await;
        let selector =
            json!([{"resources": ["secrets"], "labelSelector": {"matchLabels": {"mirror": "yes"}}}]);
        fixtures::watch_rule(&client, &ns.name, folder, folder, selector).await;
    }
    let operator = Operator::start(env, &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": "db", "namespace": ns.name, "labels": {"mirror": "yes"}},
                        "stringData": {"password": PASSWORD}});
    secrets.patch("db", &PatchParams::apply("test"), &Patch::Apply(&secret)).await.unwrap();

    let path = |folder: &str| format!("{folder}/{}/core/secrets/db.sops.yaml", ns.name);
    let sealed_for = |identity: &age::x25519::Identity, folder: &str| {
        let (git, url, path, key) = (&git, &url, path(folder), identity.to_public().to_string());
        async move {
            wait_for(&format!("{path} sealed for {key}"), WAIT, || async {
                git.read_branch(url, "main")
                    .and_then(|v| v.files.get(&path).filter(|f| f.contains(&key)).cloned())
            })
            .await
        }
    };
    let opens = |file: &str, identity: &age::x25519::Identity| {
        support::sops::decrypt(file.as_bytes(), identity).status.success()
    };
    let prod_file = sealed_for(&prod, "prod").await;
    let dev_file = sealed_for(&other, "dev").await;
    assert!(opens(&prod_file, &prod) && !opens(&prod_file, &other), "prod/ is for the first rule's key only");
    assert!(opens(&dev_file, &other) && !opens(&dev_file, &prod), "dev/ falls to the second rule");
    let prod_data = support::sops::decrypted_data(prod_file.as_bytes(), &prod);
    assert_eq!(prod_data["password"], json!(base64_of(PASSWORD.as_bytes())));

    // The rule changes: prod's Secret is sealed again for the new key, once; dev's is left.
    let before = commits_touching(&git, &url, &path("prod")).unwrap().len();
    let dev_before = commits_touching(&git, &url, &path("dev")).unwrap();
    push_sops_config(&git, &url, &rules(&rotated), "sops-config-rotated");
    let rotated_file = sealed_for(&rotated, "prod").await;
    assert!(opens(&rotated_file, &rotated), "the new key opens prod's Secret");
    let after = commits_touching(&git, &url, &path("prod")).unwrap().len();
    assert_eq!(after, before + 1, "one commit re-seals prod's Secret");
    assert_eq!(commits_touching(&git, &url, &path("dev")).unwrap(), dev_before, "dev's rule did not change");

    let mut scan = LeakScan::new().value("the password", PASSWORD.as_bytes());
    for identity in [&prod, &other, &rotated] {
        scan = scan.value("an age private key", identity.to_string().expose_secret().as_bytes());
    }
    scan.remote(&git, &url);
    scan.text("the operator's log", operator.logs().as_bytes());
    scan.namespace(&client, &ns.name).await;
    scan.assert_clean();
}
