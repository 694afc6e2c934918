//! Issue 21 acceptance 3: the git server is killed in the middle of a push,
//! after it updated the branch but before the worker heard so (the answer is
//! lost). The worker must recognise its own commit on the remote: no commit
//! is replayed on top of itself, no file's version goes backwards, and the
//! branch ends equal to the cluster.
//!
//! This stops the shared git server, so it lives alone in its own test binary.

#[path = "worker_faults/harness.rs"]
mod harness;
mod support;

use std::time::Duration;

use harness::{Branch, Options, repo_name};

/// The push log's lines of `repo`, split into fields.
fn pushes(repo: &str) -> Vec<Vec<String>> {
    let log = std::fs::read_to_string(support::env().var("GITENV_PUSHLOG")).unwrap_or_default();
    log.lines()
        .map(|l| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| f.get(1).map(String::as_str) == Some(repo))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_whose_answer_was_lost_is_recognised_not_replayed() {
    let env = support::env();
    let repo = env.new_repo("killed");
    let name = repo_name(&repo.ssh_url);
    let options = Options {
        push: gitops_reverser::worker::policy::PushPolicy {
            interval: Duration::from_millis(200),
            max_commits: 3,
        },
        ..Options::default()
    };
    let mut branch = Branch::start(env, &repo.ssh_url, options);
    branch.set("a").await;
    branch.wait_equal("the first push", Duration::from_secs(60)).await;
    // The branch moves before the server's post-receive hook logs the push:
    // wait for the log, or a late line of this push looks like the held one.
    let head = branch.remote_head().expect("the first push made the branch");
    support::wait_for("the first push in the server's push log", Duration::from_secs(30), || {
        let logged = pushes(&name).iter().any(|f| f.get(6) == Some(&head));
        async move { logged.then_some(()) }
    })
    .await;

    // The next push's ref update is held for 60 s after it is committed, before
    // the server answers: git's reference-transaction hook, in the repository.
    let applied = tempfile::tempdir().unwrap();
    let marker = applied.path().join("applied");
    let hook =
        support::repo_root().join(format!("target/env/soft/repos/{name}.git/hooks/reference-transaction"));
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n# worker_git_killed.rs: hold the answer once the branch moved\n[ \"$1\" = committed ] || exit 0\ncat >/dev/null\ntouch '{}'\nsleep 60\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = pushes(&name).len();
    for _ in 0..3 {
        branch.set("a").await;
    }
    branch.set("b").await;
    support::wait_for("the server to apply the push", Duration::from_secs(60), || {
        let done = marker.exists();
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(pushes(&name).len(), before, "the answer (and the post-receive log) is still held");
    let restart = support::StartOnDrop("git");
    support::component("kill", "git");
    std::fs::remove_file(&hook).unwrap();
    let failed = branch
        .wait_state("the lost answer to be reported", Duration::from_secs(60), |s| s.last_push_failed)
        .await;
    eprintln!("while the server was down: {:?}", failed.error);
    // More changes while the server is gone, to the same file and others.
    for _ in 0..2 {
        branch.set("a").await;
    }
    branch.set("c").await;
    drop(restart);

    branch.wait_equal("the branch after the server returned", Duration::from_secs(120)).await;
    let (commits, missing) = branch.check_history();
    eprintln!("{commits} commits on the branch, {missing} values coalesced away");
}
