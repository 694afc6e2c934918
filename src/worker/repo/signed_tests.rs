//! Signed commits as git sees them: gix writes, the real `git verify-commit`
//! judges, with ssh-keygen (`gpg.format=ssh`) or gpg (OpenPGP) behind it.

use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

use super::*;
use crate::worker::signing::SigningKey;
use crate::worker::signing::testkeys::{GpgHome, ssh_key};

const EMAIL: &str = "bot@example.com";

/// git with no user or system config, and `env` on top.
fn git(dir: &Path, home: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut git = Command::new("git");
    git.arg("--git-dir")
        .arg(dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    for (name, value) in env {
        git.env(name, value);
    }
    git.output().expect("git runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A root commit, a change on top and a delete on top of that, each signed.
fn three_signed_commits(repo: &LocalRepo, key: &SigningKey) -> Vec<ObjectId> {
    let bot = Identity { name: "Bot".into(), email: EMAIL.into() };
    let spec = |message| CommitSpec {
        message,
        author: &bot,
        committer: &bot,
        time: None,
        signer: Some(key),
        allow_empty: false,
    };
    let write =
        |path: &str, content: &[u8]| FileChange::Write { path: path.into(), content: content.to_vec() };
    let first = repo.commit(None, &[write("ns/a.yaml", b"a: 1\n")], &spec("CREATE a")).unwrap().unwrap();
    let second = repo
        .commit(Some(first), &[write("ns/b.yaml", b"b: 1\n")], &spec("SYNC: b\n\nbody line"))
        .unwrap()
        .unwrap();
    let delete = FileChange::Delete { path: "ns/a.yaml".into() };
    let third = repo.commit(Some(second), &[delete], &spec("DELETE a")).unwrap().unwrap();
    repo.set_ref("refs/heads/main", third).unwrap();
    vec![first, second, third]
}

/// The commit `id` with its message changed, written as a new object: the
/// signature still names the old bytes.
fn tampered(dir: &Path, home: &Path, id: ObjectId) -> String {
    let raw = git(dir, home, &["cat-file", "commit", &id.to_string()], &[]).stdout;
    let forged = text(&raw).replacen("CREATE a", "CREATE b", 1);
    assert_ne!(forged, text(&raw));
    let mut hash = Command::new("git");
    hash.arg("--git-dir").arg(dir).args(["hash-object", "-t", "commit", "-w", "--stdin"]);
    let mut child =
        hash.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(forged.as_bytes()).unwrap();
    text(&child.wait_with_output().unwrap().stdout).trim().to_owned()
}

#[test]
fn ssh_signed_commits_pass_git_verify_commit() {
    let home = TempDir::new().unwrap();
    let pair = ssh_key("ed25519", "", "operator");
    let key = SigningKey::ssh(&pair.private, None).unwrap();
    let repo = LocalRepo::open_or_init(&home.path().join("repo.git")).unwrap();
    let commits = three_signed_commits(&repo, &key);
    let dir = repo.git_dir();
    let signers = home.path().join("allowed_signers");
    std::fs::write(&signers, format!("{EMAIL} {}\n", pair.public)).unwrap();
    let config = format!("gpg.ssh.allowedSignersFile={}", signers.display());
    let verify =
        |id: &str| git(dir, home.path(), &["-c", "gpg.format=ssh", "-c", &config, "verify-commit", id], &[]);

    assert!(git(dir, home.path(), &["fsck", "--strict", "--no-dangling"], &[]).status.success());
    for id in &commits {
        let out = verify(&id.to_string());
        let said = text(&out.stderr);
        assert!(out.status.success(), "{id}: {said}");
        assert!(
            said.contains(&format!(
                "Good \"git\" signature for {EMAIL} with ED25519 key {}",
                pair.fingerprint
            )),
            "{said}"
        );
    }
    let log = git(dir, home.path(), &["-c", &config, "log", "--format=%G? %GK", "main"], &[]);
    assert_eq!(text(&log.stdout).lines().collect::<Vec<_>>(), vec![format!("G {}", pair.fingerprint); 3]);

    let forged = tampered(dir, home.path(), commits[0]);
    let out = verify(&forged);
    assert!(!out.status.success(), "a tampered commit verified: {}", text(&out.stderr));
}

#[test]
fn openpgp_signed_commits_pass_git_verify_commit() {
    let gpg = GpgHome::new();
    let fingerprint = gpg.generate("Bot <bot@example.com>", "ed25519", "sign", "pw");
    let key = SigningKey::openpgp(&gpg.export_secret(&fingerprint, "pw"), Some("pw")).unwrap();
    // The verifier knows only the public key.
    let verifier = GpgHome::new();
    verifier.import(&gpg.export_public(&fingerprint));
    drop(gpg);

    let home = TempDir::new().unwrap();
    let repo = LocalRepo::open_or_init(&home.path().join("repo.git")).unwrap();
    let commits = three_signed_commits(&repo, &key);
    let dir = repo.git_dir();
    let env = [("GNUPGHOME", verifier.path())];
    for id in &commits {
        let out = git(dir, home.path(), &["verify-commit", "--raw", &id.to_string()], &env);
        let said = text(&out.stderr);
        assert!(out.status.success(), "{id}: {said}");
        assert!(said.contains(&format!("[GNUPG:] VALIDSIG {fingerprint}")), "{said}");
    }
    let forged = tampered(dir, home.path(), commits[0]);
    let out = git(dir, home.path(), &["verify-commit", &forged], &env);
    assert!(!out.status.success(), "a tampered commit verified: {}", text(&out.stderr));
}

#[test]
fn unsigned_without_a_signer() {
    let home = TempDir::new().unwrap();
    let repo = LocalRepo::open_or_init(&home.path().join("repo.git")).unwrap();
    let bot = Identity { name: "Bot".into(), email: EMAIL.into() };
    let spec = unsigned(&bot);
    let change = FileChange::Write { path: "a".into(), content: b"a".to_vec() };
    let id = repo.commit(None, &[change], &spec).unwrap().unwrap();
    let raw = git(repo.git_dir(), home.path(), &["cat-file", "commit", &id.to_string()], &[]).stdout;
    assert!(!text(&raw).contains("gpgsig"));
}

#[test]
fn what_another_key_signed_or_nobody_signed_is_refused() {
    let home = TempDir::new().unwrap();
    let (a, b) = (ssh_key("ed25519", "", "a"), ssh_key("ed25519", "", "b"));
    let (a, b) = (SigningKey::ssh(&a.private, None).unwrap(), SigningKey::ssh(&b.private, None).unwrap());
    let repo = LocalRepo::open_or_init(&home.path().join("repo.git")).unwrap();
    let commits = three_signed_commits(&repo, &a);
    repo.verify_signature(commits[2], &a).unwrap();
    let error = repo.verify_signature(commits[2], &b).unwrap_err();
    assert!(matches!(error, RepoError::Signing { .. }), "{error}");

    let bot = Identity { name: "Bot".into(), email: EMAIL.into() };
    let spec = unsigned(&bot);
    let change = FileChange::Write { path: "x".into(), content: b"x".to_vec() };
    let unsigned = repo.commit(Some(commits[2]), &[change], &spec).unwrap().unwrap();
    let error = repo.verify_signature(unsigned, &a).unwrap_err();
    assert!(error.to_string().contains("no gpgsig header"), "{error}");
}

/// An unsigned commit by `bot`.
fn unsigned(bot: &Identity) -> CommitSpec<'_> {
    CommitSpec { message: "m", author: bot, committer: bot, time: None, signer: None, allow_empty: false }
}
