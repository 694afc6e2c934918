//! End to end: with a signing key on its GitProvider, every commit the
//! operator pushes is signed, and git verify-commit on a clone accepts it
//! with nothing but the public key the GitProvider's status shows.

mod support;

use std::process::Command;

use gitops_reverser::api::GitProvider;
use kube::api::Api;
use serde_json::json;
use support::fixtures::{self, Access};
use support::scenario::{Scenario, WAIT};

/// A fresh ed25519 key pair from ssh-keygen: (private key file, public line).
fn ssh_key_pair() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signing");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "gitops-reverser", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(made.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&made.stderr));
    let private = std::fs::read_to_string(&file).unwrap();
    let public = std::fs::read_to_string(file.with_extension("pub")).unwrap().trim_end().to_owned();
    (private, public)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_pushed_commit_is_signed_with_the_providers_ssh_key() {
    let s = Scenario::new("sign-ssh").await;
    let ns = s.namespace().to_owned();
    let (private, public) = ssh_key_pair();
    fixtures::git_secret(&s.client, s.env, &ns, "git", &Access::Ssh { read_only: false }).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "signing", "namespace": ns},
        "stringData": {"identity": private}});
    fixtures::apply(&s.client, &ns, secret).await;
    let provider = json!({
        "apiVersion": "configbutler.ai/v1alpha1", "kind": "GitProvider",
        "metadata": {"name": "git", "namespace": ns},
        "spec": {"url": s.repo.ssh_url, "secretRef": {"name": "git"}, "push": {"interval": "1s"},
                 "signingKey": {"secretRef": {"name": "signing"}, "format": "ssh"}},
    });
    fixtures::apply(&s.client, &ns, provider).await;
    s.target("t", "git", "main", "mirror").await;
    s.rule("r", "t", json!([{"resources": ["configmaps"]}])).await;
    let _operator = s.operator_synced().await;
    s.configmap("probe", json!({"v": "1"})).await;
    let path = s.core_path("mirror", "configmaps", "probe");
    s.wait_branch("the probe file", "main", |view| view.files.contains_key(&path)).await;

    // The status shows the public key to register with the git host.
    let providers: Api<GitProvider> = Api::namespaced(s.client.clone(), &ns);
    let shown = support::wait_for("the GitProvider's signing key in its status", WAIT, || async {
        let status = providers.get("git").await.ok()?.status?.signing_key?;
        status.public_key
    })
    .await;
    assert_eq!(shown, public);

    let dir = s.git.workdir("verify");
    s.git.ok(&dir, &["clone", "-q", "--bare", &s.repo.ssh_url, "repo.git"]);
    let repo = dir.join("repo.git");
    let email = s.git.ok(&repo, &["log", "-1", "--format=%ce", "main"]).trim().to_owned();
    let signers = dir.join("allowed_signers");
    std::fs::write(&signers, format!("{email} {shown}\n")).unwrap();
    let config = format!("gpg.ssh.allowedSignersFile={}", signers.display());
    let commits = s.git.ok(&repo, &["rev-list", "main"]);
    let commits: Vec<&str> = commits.lines().collect();
    assert!(!commits.is_empty());
    for commit in commits {
        let out = s.git.run(&repo, &["-c", "gpg.format=ssh", "-c", &config, "verify-commit", commit]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "commit {commit} does not verify: {said}");
        assert!(said.contains(&format!("Good \"git\" signature for {email}")), "{said}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_signing_key_stops_the_target_instead_of_committing_unsigned() {
    let s = Scenario::new("sign-bad").await;
    let ns = s.namespace().to_owned();
    fixtures::git_secret(&s.client, s.env, &ns, "git", &Access::Ssh { read_only: false }).await;
    let (private, _) = ssh_key_pair();
    // An encrypted key would need `passphrase`; here the key is cut short.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "signing", "namespace": ns},
        "stringData": {"identity": &private[..private.len() / 2]}});
    fixtures::apply(&s.client, &ns, secret).await;
    let provider = json!({
        "apiVersion": "configbutler.ai/v1alpha1", "kind": "GitProvider",
        "metadata": {"name": "git", "namespace": ns},
        "spec": {"url": s.repo.ssh_url, "secretRef": {"name": "git"}, "push": {"interval": "1s"},
                 "signingKey": {"secretRef": {"name": "signing"}}},
    });
    fixtures::apply(&s.client, &ns, provider).await;
    s.target("t", "git", "main", "mirror").await;
    s.rule("r", "t", json!([{"resources": ["configmaps"]}])).await;
    let _operator = s.operator();
    s.configmap("probe", json!({"v": "1"})).await;
    let (status, reason, message) = s.wait_condition("t", "Ready", |c| c.1 == "InvalidConfiguration").await;
    assert_eq!(status, "False");
    assert!(message.contains("Secret `signing`") && message.contains("identity"), "{message}");
    assert!(!message.contains(&private[40..80]), "the message quotes the key: {message}");
    assert_eq!(reason, "InvalidConfiguration");
    assert!(s.branch("main").is_none(), "something was pushed without a usable signing key");
}
