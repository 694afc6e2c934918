//! The git CLI remote against the real soft-serve, over SSH and HTTPS: reading
//! tips, fetching, compare-and-swap pushes, proving write access, classifying
//! failures, killing hung processes, and never letting a secret out.

#[path = "git_remote/fixtures.rs"]
mod fixtures;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use fixtures::*;
use gitops_reverser::api::Reason;
use gitops_reverser::worker::credentials::Credentials;
use gitops_reverser::worker::remote::{PushOutcome, RefUpdate, Remote, RemoteError};

/// Expects an error, checks it for secrets, and returns it with its message.
fn expect_err<T: std::fmt::Debug>(result: Result<T, RemoteError>) -> (RemoteError, String) {
    let error = result.expect_err("expected an error");
    let message = checked(&error);
    (error, message)
}

/// branch_tip, verify, push, fetch, push again: the worker's whole cycle.
async fn round_trip(env: &support::Env, remote: &Remote, repo: &str) {
    assert_eq!(remote.branch_tip("main").await.unwrap(), None, "a new repository has no main");
    remote.verify_write_access("main").await.unwrap_or_else(|e| panic!("verify: {}", checked(&e)));

    let local = LocalRepo::new();
    let first = local.commit(None, "a.yaml", "a: 1\n");
    assert_eq!(remote.push(local.path(), &first, "main", None).await.unwrap(), PushOutcome::Pushed);
    assert_eq!(remote.branch_tip("main").await.unwrap().as_deref(), Some(first.as_str()));

    // A fresh repository catches up by fetching, then builds on the fetched tip.
    let worker = LocalRepo::new();
    assert_eq!(remote.fetch(worker.path(), "main").await.unwrap().as_deref(), Some(first.as_str()));
    assert_eq!(worker.rev("refs/remotes/origin/main").as_deref(), Some(first.as_str()));
    let second = worker.commit(Some(&first), "a.yaml", "a: 2\n");
    assert_eq!(remote.push(worker.path(), &second, "main", Some(&first)).await.unwrap(), PushOutcome::Pushed);
    assert_eq!(remote.branch_tip("main").await.unwrap().as_deref(), Some(second.as_str()));
    // Pushing what is already there (a retry whose reply was lost) is a success.
    assert_eq!(remote.push(worker.path(), &second, "main", Some(&first)).await.unwrap(), PushOutcome::Pushed);

    // A branch that does not exist: no tip, and the tracking ref goes away.
    assert_eq!(remote.fetch(worker.path(), "absent").await.unwrap(), None);
    assert_eq!(worker.rev("refs/remotes/origin/absent"), None);

    let log = pushlog(env, repo);
    assert_eq!(log.len(), 2, "exactly two ref updates reach the server: {log:?}");
}

/// The round trip over SSH with the read-write key, to the URL `url_of` picks.
async fn ssh_round_trip_to(name: &str, url_of: fn(&support::Repo) -> &str) {
    let env = env();
    let repo = env.new_repo(name);
    let url = url_of(&repo);
    let remote = new_remote(url, ssh_credentials(env, "GITENV_SSH_KEY_RW", url));
    round_trip(env, &remote, repo_name(url)).await;
    assert!(pushlog(env, repo_name(url)).iter().all(|l| l.contains(" rw ssh ")));
}

#[tokio::test]
async fn ssh_round_trip() {
    ssh_round_trip_to("remote-ssh", |repo| &repo.ssh_url).await;
}

#[tokio::test]
async fn sshd_git_shell_round_trip() {
    ssh_round_trip_to("remote-sshd", |repo| &repo.sshd_url).await;
}

#[tokio::test]
async fn https_basic_round_trip() {
    let env = env();
    let repo = env.new_repo("remote-basic");
    let remote = new_remote(&repo.https_url, basic_credentials(env, "RW", &repo.https_url));
    round_trip(env, &remote, repo_name(&repo.https_url)).await;
    assert!(pushlog(env, repo_name(&repo.https_url)).iter().all(|l| l.contains(" rw https ")));
}

#[tokio::test]
async fn https_bearer_round_trip() {
    let env = env();
    let repo = env.new_repo("remote-bearer");
    let token = mint_jwt(env, repo_name(&repo.https_url));
    let remote = new_remote(&repo.https_url, bearer_credentials(env, &token, &repo.https_url));
    round_trip(env, &remote, repo_name(&repo.https_url)).await;

    // An access token is no JWT: soft-serve refuses it as Bearer.
    let wrong = new_remote(
        &repo.https_url,
        bearer_credentials(env, env.var("GITENV_HTTPS_PASS_RW"), &repo.https_url),
    );
    let (error, message) = expect_err(wrong.branch_tip("main").await);
    assert_eq!(error.reason(), Reason::AuthenticationFailed, "{message}");
    assert!(message.contains("bearerToken"), "{message}");
}

#[tokio::test]
async fn stale_expectations_are_reported_and_change_nothing() {
    let env = env();
    let repo = env.new_repo("remote-cas");
    let remote = new_remote(&repo.ssh_url, ssh_credentials(env, "GITENV_SSH_KEY_RW", &repo.ssh_url));
    let local = LocalRepo::new();
    let base = local.commit(None, "a.yaml", "base\n");
    let ours = local.commit(Some(&base), "a.yaml", "ours\n");
    let elsewhere = local.commit(None, "a.yaml", "never pushed\n");
    assert_eq!(remote.push(local.path(), &base, "main", None).await.unwrap(), PushOutcome::Pushed);

    // Expecting a commit the remote does not have.
    assert_eq!(remote.push(local.path(), &ours, "main", Some(&elsewhere)).await.unwrap(), PushOutcome::Stale);
    // Expecting no branch where one exists.
    assert_eq!(remote.push(local.path(), &ours, "main", None).await.unwrap(), PushOutcome::Stale);
    assert_eq!(remote.branch_tip("main").await.unwrap().as_deref(), Some(base.as_str()));
    assert_eq!(pushlog(env, repo_name(&repo.ssh_url)).len(), 1, "no stale push reached the server");
}

#[tokio::test]
async fn a_push_that_loses_the_race_is_stale() {
    // Another writer moves the branch between our ls-remote and our push: git's
    // --force-with-lease, not our pre-check, must catch it.
    let env = env();
    let repo = env.new_repo("remote-race");
    let local = LocalRepo::new();
    let base = local.commit(None, "a.yaml", "base\n");
    let theirs = local.commit(Some(&base), "a.yaml", "theirs\n");
    let ours = local.commit(Some(&base), "a.yaml", "ours\n");
    let credentials = || ssh_credentials(env, "GITENV_SSH_KEY_RW", &repo.ssh_url);
    assert_eq!(
        new_remote(&repo.ssh_url, credentials()).push(local.path(), &base, "main", None).await.unwrap(),
        PushOutcome::Pushed
    );

    // A `git` on PATH that, before our real push (not the dry run), force-pushes
    // their commit with the same sandbox environment, then runs the real git.
    let path = tempfile::tempdir().unwrap();
    let marker = path.path().join("raced");
    let url = repo.ssh_url.replacen("ssh://", "ssh://git@", 1);
    let git = which("git");
    let script = format!(
        "#!/bin/sh\ncase \" $* \" in *\" push --porcelain \"*)\n\
         \x20 if [ ! -e '{m}' ]; then : > '{m}'; '{g}' --git-dir='{d}' push --quiet --force -- '{url}' \
         {theirs}:refs/heads/main || exit 99; fi;;\nesac\nexec '{g}' \"$@\"\n",
        m = marker.display(),
        g = git.display(),
        d = local.path().display(),
    );
    write_executable(&path.path().join("git"), &script);
    let search_path = format!("{}:/usr/local/bin:/usr/bin:/bin", path.path().display());
    let racing = new_remote(&repo.ssh_url, credentials()).with_search_path(search_path);
    assert_eq!(racing.push(local.path(), &ours, "main", Some(&base)).await.unwrap(), PushOutcome::Stale);
    assert!(marker.exists(), "the competing push ran");
    assert_eq!(
        racing.branch_tip("main").await.unwrap().as_deref(),
        Some(theirs.as_str()),
        "their commit stays"
    );
}

/// A `git` on PATH that counts the pushes it runs (one line each in `count`).
fn counting_git(dir: &Path, count: &Path) -> String {
    let git = which("git");
    let script = format!(
        "#!/bin/sh\ncase \" $* \" in *\" push --porcelain \"*) echo push >> '{c}';; esac\nexec '{g}' \"$@\"\n",
        c = count.display(),
        g = git.display(),
    );
    write_executable(&dir.join("git"), &script);
    format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display())
}

#[tokio::test]
async fn one_push_carries_many_branches_each_with_its_own_lease() {
    let env = env();
    let repo = env.new_repo("remote-multi");
    multi_ref_push(env, &repo.ssh_url).await;
    multi_ref_push(env, &repo.sshd_url).await;
}

async fn multi_ref_push(env: &support::Env, url: &str) {
    let credentials = || ssh_credentials(env, "GITENV_SSH_KEY_RW", url);
    let seed = LocalRepo::new();
    let base_a = seed.commit(None, "a.yaml", "a: 0\n");
    let base_b = seed.commit(None, "b.yaml", "b: 0\n");
    let plain = new_remote(url, credentials());
    assert_eq!(plain.push(seed.path(), &base_a, "a", None).await.unwrap(), PushOutcome::Pushed);
    assert_eq!(plain.push(seed.path(), &base_b, "b", None).await.unwrap(), PushOutcome::Pushed);

    // Every branch in one shallow store, as a replica keeps a repository.
    let store = LocalRepo::new();
    let (wa, wb, wc) = (&store, &store, &store);
    assert_eq!(plain.fetch(wa.path(), "a").await.unwrap().as_deref(), Some(base_a.as_str()));
    assert_eq!(plain.fetch(wb.path(), "b").await.unwrap().as_deref(), Some(base_b.as_str()));
    let next_a = wa.commit(Some(&base_a), "a.yaml", "a: 1\n");
    let next_a = wa.commit(Some(&next_a), "a.yaml", "a: 2\n");
    let next_b = wb.commit(Some(&base_b), "b.yaml", "b: 1\n");
    let new_c = wc.commit(None, "c.yaml", "c: 1\n");

    let bin = tempfile::tempdir().unwrap();
    let count = bin.path().join("pushes");
    let remote = new_remote(url, credentials()).with_search_path(counting_git(bin.path(), &count));
    let update = |dir: &LocalRepo, branch: &str, local: &str, expected: Option<&str>| RefUpdate {
        git_dir: dir.path().to_owned(),
        branch: branch.to_owned(),
        local: local.to_owned(),
        expected: expected.map(str::to_owned),
    };
    let updates = [
        update(wa, "a", &next_a, Some(&base_a)),
        // b is not where this update expects it: only b is held back.
        update(wb, "b", &next_b, Some(&base_a)),
        update(wc, "c", &new_c, None),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let outcomes =
        remote.push_refs_until(deadline, &updates).await.unwrap_or_else(|e| panic!("{}", checked(&e)));
    let outcomes: Vec<PushOutcome> = outcomes.into_iter().map(|o| o.unwrap()).collect();
    assert_eq!(outcomes, [PushOutcome::Pushed, PushOutcome::Stale, PushOutcome::Pushed]);
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1, "one git push for all three");
    assert_eq!(plain.branch_tip("a").await.unwrap().as_deref(), Some(next_a.as_str()));
    assert_eq!(plain.branch_tip("b").await.unwrap().as_deref(), Some(base_b.as_str()), "b unchanged");
    assert_eq!(plain.branch_tip("c").await.unwrap().as_deref(), Some(new_c.as_str()));

    // The fixed b goes out next, with a again (already there: up to date).
    let retry = [update(wa, "a", &next_a, Some(&base_a)), update(wb, "b", &next_b, Some(&base_b))];
    // Refs of two stores never share a push.
    let elsewhere = LocalRepo::new();
    let mixed = [update(wa, "a", &next_a, Some(&base_a)), update(&elsewhere, "d", &new_c, None)];
    assert!(remote.push_refs_until(deadline, &mixed).await.is_err(), "refs of two stores in one push");
    let outcomes = remote.push_refs_until(deadline, &retry).await.unwrap();
    assert!(outcomes.iter().all(|o| o.as_ref().is_ok_and(|o| *o == PushOutcome::Pushed)), "{outcomes:?}");
    assert_eq!(plain.branch_tip("b").await.unwrap().as_deref(), Some(next_b.as_str()));
    // The server holds the whole history of a: both new commits came in the pack.
    let check = LocalRepo::new();
    assert_eq!(plain.fetch_full(check.path(), "a").await.unwrap().as_deref(), Some(next_a.as_str()));
    assert_eq!(check.rev(&format!("{next_a}~2")).as_deref(), Some(base_a.as_str()));
}

/// Waits for `path` to exist, up to `limit`.
async fn wait_for_file(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} did not appear within {limit:?}", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_push_stalled_past_the_lease_cannot_overwrite_the_next_owner() {
    // The fence bounds when a push starts, not how long it takes. Here the
    // former owner's push hangs at the server (after its pack came in) for
    // longer than any Lease, the next owner fetches and pushes meanwhile,
    // and then the stalled push goes on: its lease must fail at the server.
    let env = env();
    let repo = env.new_repo("remote-stall");
    let url = repo.sshd_url.as_str();
    let credentials = || ssh_credentials(env, "GITENV_SSH_KEY_RW", url);
    let local = LocalRepo::new();
    let base = local.commit(None, "a.yaml", "a: 0\n");
    let late = local.commit(Some(&base), "a.yaml", "a: late\n");
    let former = new_remote(url, credentials());
    assert_eq!(former.push(local.path(), &base, "main", None).await.unwrap(), PushOutcome::Pushed);

    let env_dir = Path::new(env.var("GITENV_PUSHLOG")).parent().unwrap().to_owned();
    let stall_dir = env_dir.join("git/stall");
    std::fs::create_dir_all(&stall_dir).unwrap();
    // The hook runs as the server's user; it writes the ".stalled" marker here.
    std::fs::set_permissions(&stall_dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let marker = stall_dir.join(repo_name(url));
    std::fs::write(&marker, &late).unwrap();
    let stalled = stall_dir.join(format!("{}.stalled", repo_name(url)));

    let dir = local.path().to_owned();
    let (late_push, base_for_late) = (late.clone(), base.clone());
    let pending = tokio::spawn(async move {
        former
            .push_until(
                Instant::now() + Duration::from_secs(60),
                &dir,
                &late_push,
                "main",
                Some(&base_for_late),
            )
            .await
    });
    wait_for_file(&stalled, Duration::from_secs(30)).await;

    // The next owner: fetch, commit on the fetched tip, push.
    let next = new_remote(url, credentials());
    let worker = LocalRepo::new();
    assert_eq!(next.fetch(worker.path(), "main").await.unwrap().as_deref(), Some(base.as_str()));
    let newer = worker.commit(Some(&base), "a.yaml", "a: newer\n");
    assert_eq!(next.push(worker.path(), &newer, "main", Some(&base)).await.unwrap(), PushOutcome::Pushed);

    std::fs::remove_file(&marker).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), pending).await.unwrap().unwrap();
    assert_eq!(outcome.unwrap(), PushOutcome::Stale, "the late push lost its compare-and-swap");
    assert_eq!(
        next.branch_tip("main").await.unwrap().as_deref(),
        Some(newer.as_str()),
        "the next owner's tip stays"
    );
    let log = pushlog(env, repo_name(url));
    assert!(
        log.iter().all(|line| !line.ends_with(late.as_str())),
        "the late commit never became a tip: {log:?}"
    );
    let _ = std::fs::remove_file(&stalled);
}

#[tokio::test]
async fn read_only_credentials_lack_write_access() {
    let env = env();
    let repo = env.new_repo("remote-ro");
    let cases = [
        (repo.ssh_url.clone(), ssh_credentials(env, "GITENV_SSH_KEY_RO", &repo.ssh_url)),
        (repo.https_url.clone(), basic_credentials(env, "RO", &repo.https_url)),
        (repo.sshd_url.clone(), ssh_credentials(env, "GITENV_SSH_KEY_RO", &repo.sshd_url)),
    ];
    for (url, credentials) in cases {
        let remote = new_remote(&url, credentials);
        assert_eq!(remote.branch_tip("main").await.unwrap(), None, "read-only credentials can read");
        let (error, message) = expect_err(remote.verify_write_access("main").await);
        assert_eq!(error.reason(), Reason::AuthenticationFailed, "{message}");
        assert!(matches!(error, RemoteError::NoWriteAccess { .. }), "{message}");
        assert!(message.contains("can read") && message.contains("write access"), "{message}");

        let local = LocalRepo::new();
        let commit = local.commit(None, "a.yaml", "a\n");
        let (error, message) = expect_err(remote.push(local.path(), &commit, "main", None).await);
        assert_eq!(error.reason(), Reason::AuthenticationFailed, "{message}");
    }
    assert!(pushlog(env, repo_name(&repo.ssh_url)).is_empty());
}

#[tokio::test]
async fn an_unknown_repository_is_not_found_and_not_created() {
    let env = env();
    let repo = env.new_repo("remote-known");
    let missing = |url: &str| url.replace("remote-known", "remote-missing");
    let cases = [
        (missing(&repo.ssh_url), ssh_credentials(env, "GITENV_SSH_KEY_RW", &repo.ssh_url)),
        (missing(&repo.https_url), basic_credentials(env, "RW", &repo.https_url)),
    ];
    for (url, credentials) in cases {
        let remote = new_remote(&url, credentials);
        let (error, message) = expect_err(remote.verify_write_access("main").await);
        assert_eq!(error.reason(), Reason::RepositoryNotFound, "{message}");
        let local = LocalRepo::new();
        let commit = local.commit(None, "a.yaml", "a\n");
        let (error, message) = expect_err(remote.push(local.path(), &commit, "main", None).await);
        assert_eq!(error.reason(), Reason::RepositoryNotFound, "{message}");
        // soft-serve creates repositories on push: none was attempted.
        let (error, _) = expect_err(remote.branch_tip("main").await);
        assert_eq!(error.reason(), Reason::RepositoryNotFound);
    }
}

#[tokio::test]
async fn a_closed_port_is_a_network_error() {
    let env = env();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ssh_url = format!("ssh://127.0.0.1:{port}/r.git");
    let https_url = format!("https://127.0.0.1:{port}/r.git");
    let cases = [
        (ssh_url.clone(), ssh_credentials(env, "GITENV_SSH_KEY_RW", &ssh_url)),
        (https_url.clone(), basic_credentials(env, "RW", &https_url)),
    ];
    for (url, credentials) in cases {
        let (error, message) = expect_err(new_remote(&url, credentials).verify_write_access("main").await);
        assert_eq!(error.reason(), Reason::NetworkError, "{message}");
        assert!(message.contains("cannot reach"), "{message}");
    }
}

#[tokio::test]
async fn a_wrong_or_missing_host_key_is_refused_not_trusted() {
    let env = env();
    let repo = env.new_repo("remote-hostkey");
    let real = read_file(env.var("GITENV_KNOWN_HOSTS"));
    let scratch = tempfile::tempdir().unwrap();
    let other = scratch.path().join("other");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status();
    assert!(status.unwrap().success());
    let other_key = read_file(&format!("{}.pub", other.display()));
    let other_key: Vec<&str> = other_key.split_whitespace().take(2).collect();
    let changed: String =
        real.lines().map(|l| format!("{} {}\n", l.split(' ').next().unwrap(), other_key.join(" "))).collect();
    let unrelated = format!("[example.com]:22 {}\n", other_key.join(" "));

    for (known_hosts, expected) in [(changed, "has changed"), (unrelated, "host key is known")] {
        let data =
            secret(&[("identity", &read_file(env.var("GITENV_SSH_KEY_RW"))), ("known_hosts", &known_hosts)]);
        let credentials = Credentials::from_secret_data("git-ssh", &data, &repo.ssh_url).unwrap();
        let remote = new_remote(&repo.ssh_url, credentials);
        for _ in 0..2 {
            // Twice: a first failure must not have taught the remote the key.
            let (error, message) = expect_err(remote.branch_tip("main").await);
            assert!(matches!(error, RemoteError::HostKeyRejected { .. }), "{message}");
            assert_eq!(error.reason(), Reason::NetworkError);
            assert!(message.contains("known_hosts") && message.contains("Secret `git-ssh`"), "{message}");
            assert!(message.to_lowercase().contains(expected), "{message}");
        }
    }
}

#[tokio::test]
async fn https_without_the_ca_is_a_certificate_error() {
    let env = env();
    let repo = env.new_repo("remote-noca");
    let data = secret(&[
        ("username", env.var("GITENV_HTTPS_USER_RW")),
        ("password", env.var("GITENV_HTTPS_PASS_RW")),
    ]);
    let credentials = Credentials::from_secret_data("git-https", &data, &repo.https_url).unwrap();
    let (error, message) =
        expect_err(new_remote(&repo.https_url, credentials).verify_write_access("main").await);
    assert!(matches!(error, RemoteError::UntrustedCertificate { .. }), "{message}");
    assert_eq!(error.reason(), Reason::NetworkError);
    assert!(message.contains("certificate") && message.contains("ca.crt"), "{message}");
}

/// A `PATH` whose `git` sends every request for `https://127.0.0.1:PORT` to
/// `https://localhost:PORT` instead: the same soft-serve (its certificate
/// names both), so the same credentials would be accepted there, but another
/// origin, as a redirect or a confused URL would make it.
fn git_sent_to_localhost(dir: &Path) -> String {
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do\n  case \"$a\" in https://127.0.0.1:*) a=\"https://localhost:${{a#https://127.0.0.1:}}\" ;; esac\n  \
         set -- \"$@\" \"$a\"; shift\ndone\nexec '{}' \"$@\"\n",
        which("git").display()
    );
    write_executable(&dir.join("git"), &script);
    format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display())
}

/// Issue 20: the askpass script answered any prompt and the bearer header
/// went to every URL. Now git that talks to another origin gets neither,
/// while the provider's own origin works with the very same sandbox setup.
#[tokio::test]
async fn credentials_go_to_the_provider_origin_only() {
    let env = env();
    let repo = env.new_repo("remote-origin");
    let token = mint_jwt(env, repo_name(&repo.https_url));
    let elsewhere = tempfile::tempdir().unwrap();
    let search_path = git_sent_to_localhost(elsewhere.path());
    let port = env.var("GITENV_HTTPS_PORT");
    let cases = [
        ("basic", basic_credentials(env, "RW", &repo.https_url)),
        ("bearer", bearer_credentials(env, &token, &repo.https_url)),
    ];
    for (auth, credentials) in cases {
        let own = new_remote(&repo.https_url, credentials.clone());
        own.verify_write_access("main")
            .await
            .unwrap_or_else(|e| panic!("{auth}, own origin: {}", checked(&e)));

        let other = new_remote(&repo.https_url, credentials).with_search_path(&search_path);
        let (error, message) = expect_err(other.branch_tip("main").await);
        assert_eq!(error.reason(), Reason::AuthenticationFailed, "{auth}: {message}");
        // git asked for a user name at the other origin, and askpass gave none
        // (no header was sent either: else soft-serve had not asked).
        let refused = format!("could not read Username for 'https://localhost:{port}'");
        assert!(message.contains(&refused), "{auth}: {message}");
    }
}

#[tokio::test]
async fn an_encrypted_identity_is_unlocked_without_argv() {
    let env = env();
    let repo = env.new_repo("remote-passphrase");
    let scratch = tempfile::tempdir().unwrap();
    let key = scratch.path().join("id");
    let passphrase = format!("pass-{}", support::unique_name("phrase"));
    register_secret(&passphrase);
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", &passphrase, "-f"])
        .arg(&key)
        .status();
    assert!(status.unwrap().success());
    let identity = read_file(&key.display().to_string());
    register_secret(&identity);
    let public = read_file(&format!("{}.pub", key.display()));
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    let user = support::unique_name("enc").replace('-', "");
    let admin = Path::new(env.var("GITENV_ADMIN_KEY"));
    soft(env, admin, &["user", "create", &user, "-k", &format!("'{}'", public.join(" "))]);
    soft(env, admin, &["repo", "collab", "add", repo_name(&repo.ssh_url), &user, "read-write"]);

    let known_hosts = read_file(env.var("GITENV_KNOWN_HOSTS"));
    let with = |passphrase: &str| {
        let data =
            secret(&[("identity", &identity), ("known_hosts", &known_hosts), ("password", passphrase)]);
        Credentials::from_secret_data("git-ssh", &data, &repo.ssh_url).unwrap()
    };
    let path = RecordingPath::new();
    let unlocked = new_remote(&repo.ssh_url, with(&passphrase)).with_search_path(path.search_path());
    round_trip(env, &unlocked, repo_name(&repo.ssh_url)).await;
    assert!(path.log().contains("argv ssh"), "ssh ran through the recording PATH");
    assert_clean("argv and environment of git and ssh", &path.log());

    let wrong = new_remote(&repo.ssh_url, with("not-the-passphrase"));
    let (error, message) = expect_err(wrong.branch_tip("main").await);
    assert_eq!(error.reason(), Reason::AuthenticationFailed, "{message}");
    assert!(message.contains("passphrase"), "{message}");
}

#[tokio::test]
async fn a_hung_server_times_out_and_every_process_is_killed() {
    let _env = env();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, never answers, and reports when the client side closes the socket.
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let _ = std::io::Read::read_to_end(&mut socket, &mut Vec::new());
        let _ = closed_tx.send(Instant::now());
    });
    let url = format!("https://127.0.0.1:{port}/r.git");
    let remote = new_remote(&url, Credentials::anonymous(&url).unwrap()).with_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let (error, message) = expect_err(remote.branch_tip("main").await);
    let failed = Instant::now();
    assert!(matches!(error, RemoteError::Timeout { .. }), "{message}");
    assert_eq!(error.reason(), Reason::NetworkError);
    assert!(failed - started < Duration::from_secs(5), "took {:?}", failed - started);
    // git-remote-https held the socket; it died with git's process group.
    let closed = closed_rx.recv_timeout(Duration::from_secs(5)).expect("the connection was never closed");
    assert!(closed.saturating_duration_since(failed) < Duration::from_secs(3));
}

#[tokio::test]
async fn no_secret_reaches_argv_environment_logs_or_messages() {
    let env = env();
    let repo = env.new_repo("remote-secrets");
    let token = mint_jwt(env, repo_name(&repo.https_url));
    let wrong_password = "wrong-password-5ec4e7-never-shown";
    register_secret(wrong_password);
    // tracing-core's one-dispatch shortcut caches `Interest::never` when a thread
    // without a subscriber (another test) registers a callsite first
    // (tokio-rs/tracing#3611); a second live Dispatch forces the general path.
    let _second_dispatch = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer({
            let logs = logs.clone();
            move || LogWriter(logs.clone())
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let path = RecordingPath::new();
    let wrong_data = secret(&[
        ("username", "rw"),
        ("password", wrong_password),
        ("ca.crt", &read_file(env.var("GITENV_CA_CRT"))),
    ]);
    let remotes = [
        (repo.ssh_url.clone(), ssh_credentials(env, "GITENV_SSH_KEY_RW", &repo.ssh_url)),
        (repo.https_url.clone(), basic_credentials(env, "RW", &repo.https_url)),
        (repo.https_url.clone(), basic_credentials(env, "RO", &repo.https_url)),
        (repo.https_url.clone(), bearer_credentials(env, &token, &repo.https_url)),
        (
            repo.https_url.clone(),
            Credentials::from_secret_data("wrong", &wrong_data, &repo.https_url).unwrap(),
        ),
    ];
    let local = LocalRepo::new();
    for (url, credentials) in remotes {
        let remote = new_remote(&url, credentials).with_search_path(path.search_path());
        let tip = remote.branch_tip("main").await;
        let _ = remote.verify_write_access("main").await.map_err(|e| checked(&e));
        let commit = local.commit(tip.as_ref().ok().cloned().flatten().as_deref(), "x.yaml", &url);
        let expected = tip.as_ref().ok().cloned().flatten();
        let _ =
            remote.push(local.path(), &commit, "main", expected.as_deref()).await.map_err(|e| checked(&e));
        let _ = remote.fetch(local.path(), "main").await.map_err(|e| checked(&e));
        let _ = tip.map_err(|e| checked(&e));
    }
    let log = path.log();
    assert!(
        log.contains("argv git [ls-remote]") && log.contains("argv ssh") && log.contains("[push]"),
        "{log}"
    );
    assert_clean("argv and environment of git and ssh", &log);
    for line in log.lines().filter_map(|l| l.strip_prefix("env ")) {
        let name = line.split('=').next().unwrap();
        let allowed = name.starts_with("GIT_")
            || name.starts_with("SSH_ASKPASS")
            || name.to_ascii_lowercase().ends_with("_proxy")
            || ["PATH", "HOME", "LC_ALL", "PWD", "OLDPWD", "SHLVL", "_"].contains(&name);
        assert!(allowed, "a variable from outside the sandbox reached git: {name}");
    }
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("git finished"), "tracing captured the runs: {logs}");
    assert_clean("tracing output", &logs);
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `ssh` on PATH that logs (`-v -E log`) what each real ssh does.
fn logging_ssh(dir: &Path, log: &Path) -> String {
    let script = format!("#!/bin/sh\nexec '{}' -v -E '{}' \"$@\"\n", which("ssh").display(), log.display());
    write_executable(&dir.join("ssh"), &script);
    format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display())
}

/// Issue 15: one SSH handshake per repository and identity, not one per
/// fetch or push. Every ssh after the first runs its session through the
/// first one's connection; another identity never does.
#[tokio::test]
async fn fetches_and_pushes_of_a_repository_share_one_ssh_connection() {
    let env = env();
    let repo = env.new_repo("remote-shared-connection");
    let url = &repo.sshd_url;
    let bin = tempfile::tempdir().unwrap();
    let log = bin.path().join("ssh.log");
    let search_path = logging_ssh(bin.path(), &log);
    let rw = || ssh_credentials(env, "GITENV_SSH_KEY_RW", url);
    let (one, two) = (
        new_remote(url, rw()).with_search_path(&search_path),
        new_remote(url, rw()).with_search_path(&search_path),
    );

    let local = LocalRepo::new();
    let first = local.commit(None, "a.yaml", "a: 1\n");
    assert_eq!(one.push(local.path(), &first, "main", None).await.unwrap(), PushOutcome::Pushed);
    let second = local.commit(Some(&first), "a.yaml", "a: 2\n");
    assert_eq!(two.push(local.path(), &second, "main", Some(&first)).await.unwrap(), PushOutcome::Pushed);
    let check = LocalRepo::new();
    assert_eq!(two.fetch(check.path(), "main").await.unwrap().as_deref(), Some(second.as_str()));
    let text = std::fs::read_to_string(&log).unwrap();
    let handshakes = text.matches("Authenticated to").count();
    let shared = text.matches("mux_client_request_session: master session id").count();
    assert_eq!(handshakes, 1, "one handshake for the repository:\n{text}");
    assert!(shared >= 3, "the later sessions went through the shared connection ({shared}):\n{text}");

    // The read-only key reads the same repository over a connection of its own.
    let ro = new_remote(url, ssh_credentials(env, "GITENV_SSH_KEY_RO", url)).with_search_path(&search_path);
    assert_eq!(ro.branch_tip("main").await.unwrap().as_deref(), Some(second.as_str()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("Authenticated to").count(), 2, "another identity, another handshake:\n{text}");
}

/// A takeover deepens a shallow repository to the commits made since its
/// standby began (`git fetch --shallow-since`), on both git servers.
#[tokio::test]
async fn a_shallow_repository_is_deepened_to_the_commits_since_a_time() {
    let env = env();
    let repo = env.new_repo("remote-deepen");
    for url in [repo.ssh_url.as_str(), repo.sshd_url.as_str()] {
        let remote = new_remote(url, ssh_credentials(env, "GITENV_SSH_KEY_RW", url));
        let branch = if url == repo.ssh_url { "soft" } else { "sshd" };
        let local = LocalRepo::new();
        let first = local.commit_dated(None, "a.yaml", "a: 1\n", Some("2020-01-01T00:00:00Z"));
        let second = local.commit_dated(Some(&first), "a.yaml", "a: 2\n", Some("2021-01-01T00:00:00Z"));
        let third = local.commit_dated(Some(&second), "a.yaml", "a: 3\n", Some("2022-01-01T00:00:00Z"));
        assert_eq!(remote.push(local.path(), &third, branch, None).await.unwrap(), PushOutcome::Pushed);

        let worker = LocalRepo::new();
        assert_eq!(remote.fetch(worker.path(), branch).await.unwrap().as_deref(), Some(third.as_str()));
        assert_eq!(worker.rev(&format!("{second}^{{commit}}")), None, "depth 1 holds the tip only");
        let since = std::time::UNIX_EPOCH + Duration::from_secs(1_590_969_600); // 2020-06-01
        remote
            .deepen_since(worker.path(), branch, since)
            .await
            .unwrap_or_else(|e| panic!("{url}: {}", checked(&e)));
        assert_eq!(worker.rev(&format!("{second}^{{commit}}")).as_deref(), Some(second.as_str()), "{url}");
        assert_eq!(worker.rev(&format!("{first}^{{commit}}")), None, "{url}: older commits stay out");
    }
}

/// Issue 18: branches of one store that wait to fetch at once share one
/// `git fetch`; a branch the remote lacks is answered alone, and the others
/// still get their tips.
#[tokio::test]
async fn waiting_fetches_of_one_store_share_one_git_fetch() {
    use gitops_reverser::worker::fetches::{self, Depth};
    use std::sync::Arc;

    let env = env();
    let repo = env.new_repo("remote-batched-fetch");
    let url = &repo.sshd_url;
    let remote = Arc::new(new_remote(url, ssh_credentials(env, "GITENV_SSH_KEY_RW", url)));
    let seed = LocalRepo::new();
    let names: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
    let mut tips = Vec::new();
    for name in &names {
        let base = seed.commit(None, &format!("{name}.yaml"), "v: 0\n");
        let tip = seed.commit(Some(&base), &format!("{name}.yaml"), "v: 1\n");
        assert_eq!(remote.push(seed.path(), &tip, name, None).await.unwrap(), PushOutcome::Pushed);
        tips.push((base, tip));
    }

    let store = LocalRepo::new();
    let before = fetches::runs();
    let fetched = futures::future::join_all(
        names.iter().map(|name| fetches::fetch(store.path(), &remote, name, Depth::Full)),
    )
    .await;
    let runs = fetches::runs() - before;
    for ((fetched, (base, tip)), name) in fetched.into_iter().zip(&tips).zip(&names) {
        let fetched = fetched.unwrap_or_else(|e| panic!("{name}: {}", checked(&e)));
        assert_eq!(fetched.as_deref(), Some(tip.as_str()), "{name}");
        assert_eq!(
            store.rev(&format!("{tip}~1")).as_deref(),
            Some(base.as_str()),
            "{name}: the full history"
        );
    }
    assert!(runs <= 2, "six waiting fetches took {runs} git fetches");

    // A branch the remote lacks fails the batch; each is then fetched alone.
    let mixed = ["b0", "absent", "b5"];
    let fetched = futures::future::join_all(
        mixed.iter().map(|name| fetches::fetch(store.path(), &remote, name, Depth::Tip)),
    )
    .await;
    let fetched: Vec<Option<String>> =
        fetched.into_iter().map(|f| f.unwrap_or_else(|e| panic!("{}", checked(&e)))).collect();
    assert_eq!(fetched, [Some(tips[0].1.clone()), None, Some(tips[5].1.clone())]);
    assert_eq!(store.rev("refs/remotes/origin/absent"), None);
}
