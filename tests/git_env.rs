//! The local git server enforces what the operator relies on: read-write
//! credentials can push, read-only ones cannot, over SSH and HTTPS, and a
//! host whose key is not the one in known_hosts is refused.

mod support;

use support::git::{Auth, GitClient, stderr};

/// Makes a commit in a new local repository and tries to push it to `url`.
fn push_one_commit(client: &GitClient, url: &str, label: &str) -> std::process::Output {
    let dir = client.workdir(label);
    client.ok(&dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("README.md"), format!("{label}\n")).unwrap();
    client.ok(&dir, &["add", "README.md"]);
    client.ok(&dir, &["commit", "--quiet", "-m", label]);
    client.run(&dir, &["push", url, "HEAD:refs/heads/main"])
}

fn remote_main(client: &GitClient, url: &str) -> String {
    let dir = client.workdir("ls-remote");
    client.ok(&dir, &["ls-remote", url, "refs/heads/main"])
}

fn assert_rw_pushes_and_ro_is_refused(url: &str, rw: Auth, ro: Auth) {
    let rw = GitClient::new(rw);
    let pushed = push_one_commit(&rw, url, "rw");
    assert!(pushed.status.success(), "read-write push failed: {}", stderr(&pushed));
    let before = remote_main(&rw, url);
    assert!(!before.is_empty(), "main does not exist after the read-write push");

    let ro = GitClient::new(ro);
    // The read-only credential can read, so a refusal below is about write access.
    assert_eq!(remote_main(&ro, url), before, "the read-only credential cannot read");
    let refused = push_one_commit(&ro, url, "ro");
    assert!(!refused.status.success(), "read-only push was accepted");
    assert_eq!(remote_main(&rw, url), before, "the read-only push changed the branch");
}

#[test]
fn ssh_read_write_pushes_and_read_only_is_refused() {
    let env = support::env();
    let repo = env.new_repo("ssh-access");
    assert_rw_pushes_and_ro_is_refused(&repo.ssh_url, Auth::ssh_rw(env), Auth::ssh_ro(env));
}

#[test]
fn https_read_write_pushes_and_read_only_is_refused() {
    let env = support::env();
    let repo = env.new_repo("https-access");
    assert_rw_pushes_and_ro_is_refused(&repo.https_url, Auth::https_rw(env), Auth::https_ro(env));
}

#[test]
fn ssh_with_a_wrong_known_hosts_entry_is_refused() {
    let env = support::env();
    let repo = env.new_repo("hostkey");
    let scratch = tempfile::tempdir().unwrap();

    // Same host and port as the real entry, but another key.
    let real = std::fs::read_to_string(env.var("GITENV_KNOWN_HOSTS")).unwrap();
    let host = real.split_whitespace().next().expect("known_hosts has an entry").to_owned();
    let other_key = scratch.path().join("other");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let public = std::fs::read_to_string(other_key.with_extension("pub")).unwrap();
    let mut fields = public.split_whitespace();
    let wrong = scratch.path().join("known_hosts");
    std::fs::write(&wrong, format!("{host} {} {}\n", fields.next().unwrap(), fields.next().unwrap()))
        .unwrap();

    let client = GitClient::new(Auth::Ssh { key: env.var("GITENV_SSH_KEY_RW").into(), known_hosts: wrong });
    let output = push_one_commit(&client, &repo.ssh_url, "wrong-host-key");
    assert!(!output.status.success(), "push succeeded despite a wrong host key");
    let message = stderr(&output);
    assert!(
        message.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || message.contains("Host key verification failed"),
        "unexpected error: {message}"
    );
}

#[test]
fn https_without_the_environment_ca_is_refused() {
    let env = support::env();
    let repo = env.new_repo("tls");
    let Auth::Https { user, pass, .. } = Auth::https_rw(env) else { unreachable!() };
    // The system trust store does not know the environment's CA.
    let client = GitClient::new(Auth::Https { user, pass, ca: "/etc/ssl/certs/ca-certificates.crt".into() });
    let output = push_one_commit(&client, &repo.https_url, "untrusted");
    assert!(!output.status.success(), "push succeeded without trusting the server's CA");
    assert!(stderr(&output).to_lowercase().contains("certificate"), "unexpected error: {}", stderr(&output));
}
