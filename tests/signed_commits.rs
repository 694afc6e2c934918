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

/// gpg in a private home; `--batch`, no agent prompts.
fn gpg(home: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Ends the agent gpg started for a home, so the test leaves no process behind.
struct GpgHome(tempfile::TempDir);

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ =
            Command::new("gpgconf").env("GNUPGHOME", self.0.path()).args(["--kill", "gpg-agent"]).output();
    }
}

fn gpg_home() -> GpgHome {
    let dir = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    GpgHome(dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_pushed_commit_is_signed_with_the_providers_openpgp_key() {
    let s = Scenario::new("sign-pgp").await;
    let ns = s.namespace().to_owned();
    // The key as a Flux user exports it, passphrase-protected.
    let signer = gpg_home();
    let uid = "Mirror <mirror@example.com>";
    gpg(
        signer.0.path(),
        &["--passphrase", "pass phrase", "--quick-gen-key", uid, "ed25519", "sign", "never"],
    );
    let listed = gpg(signer.0.path(), &["--with-colons", "--list-secret-keys", uid]);
    let fingerprint =
        listed.lines().find(|l| l.starts_with("fpr:")).unwrap().split(':').nth(9).unwrap().to_owned();
    let armored = gpg(
        signer.0.path(),
        &["--passphrase", "pass phrase", "--armor", "--export-secret-keys", &fingerprint],
    );
    let public = gpg(signer.0.path(), &["--armor", "--export", &fingerprint]);
    drop(signer);

    fixtures::git_secret(&s.client, s.env, &ns, "git", &Access::Ssh { read_only: false }).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "signing", "namespace": ns},
        "stringData": {"git.asc": armored, "passphrase": "pass phrase"}});
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
    let _operator = s.operator_synced().await;
    s.configmap("probe", json!({"v": "1"})).await;
    let path = s.core_path("mirror", "configmaps", "probe");
    s.wait_branch("the probe file", "main", |view| view.files.contains_key(&path)).await;

    let providers: Api<GitProvider> = Api::namespaced(s.client.clone(), &ns);
    let shown = support::wait_for("the GitProvider's signing key in its status", WAIT, || async {
        Some(providers.get("git").await.ok()?.status?.signing_key?.fingerprint)
    })
    .await;
    assert_eq!(shown, fingerprint);

    // The verifier has the public key only.
    let verifier = gpg_home();
    let import = Command::new("gpg")
        .env("GNUPGHOME", verifier.0.path())
        .args(["--batch", "--quiet", "--import"])
        .stderr(std::process::Stdio::null())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(public.as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(import.success());
    let dir = s.git.workdir("verify");
    s.git.ok(&dir, &["clone", "-q", "--bare", &s.repo.ssh_url, "repo.git"]);
    let repo = dir.join("repo.git");
    let commits = s.git.ok(&repo, &["rev-list", "main"]);
    assert!(!commits.is_empty());
    for commit in commits.lines() {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args(["verify-commit", "--raw", commit])
            .env("GNUPGHOME", verifier.0.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "commit {commit} does not verify: {said}");
        assert!(said.contains(&format!("[GNUPG:] VALIDSIG {fingerprint}")), "{said}");
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
