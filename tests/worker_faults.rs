//! Issue 21 acceptance 3, with real parts: a branch worker against the real
//! git server (soft-serve over SSH) through faults. Each test ends with the
//! branch equal to the model cluster and every value it held in some
//! commit; while the fault lasts, the worker's state (which the GitTarget
//! status is computed from) says why, and other branches keep flowing.
//!
//! The git server keeps running here; `worker_git_killed.rs` stops it.

#[path = "worker_faults/harness.rs"]
mod harness;
#[path = "worker_faults/proxy.rs"]
mod proxy;
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::{Branch, Options, fault_dir, median, push_by_hand, repo_name};

const CONVERGE: Duration = Duration::from_secs(120);

/// Changes `other` and measures how long until the server has it.
async fn lag_of(other: &mut Branch, name: &str) -> Duration {
    other.set(name).await;
    other.wait_equal("the other branch to take a change", Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_that_refuses_every_push_for_60_s_quarantines_only_its_branch() {
    let env = support::env();
    let refused = env.new_repo("hook");
    let healthy = env.new_repo("hook-other");
    let mut branch = Branch::start(env, &refused.ssh_url, Options::default());
    let mut other = Branch::start(env, &healthy.ssh_url, Options::default());
    branch.set("a").await;
    branch.wait_equal("the first push", CONVERGE).await;

    let until = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 60;
    let marker = fault_dir("refuse").join(repo_name(&refused.ssh_url));
    std::fs::write(&marker, until.to_string()).unwrap();
    let started = Instant::now();
    branch.set("a").await;
    branch.set("b").await;
    branch.set("c").await;
    branch.delete("b").await;
    let quarantined = branch
        .wait_state("the branch to be quarantined", Duration::from_secs(45), |s| s.quarantined.is_some())
        .await;
    let message = quarantined.quarantined.unwrap();
    assert!(message.contains("push declined by policy"), "the server's words are shown: {message}");
    assert!(!message.contains("BEGIN OPENSSH"), "no credentials in the message");
    eprintln!("quarantined {:.1} s after the hook began: {message}", started.elapsed().as_secs_f64());

    // While it lasts, commits go on locally and the other branch flows.
    let mut lags = Vec::new();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(55) {
        branch.set(&format!("during-{}", round % 3)).await;
        lags.push(lag_of(&mut other, &format!("o{}", round % 4)).await);
        round += 1;
    }
    let state = branch.worker.state.borrow().clone();
    assert!(state.quarantined.is_some() && state.unpushed > 0, "still refused, commits waiting: {state:?}");
    eprintln!(
        "other branch while quarantined: {} changes, lag median {:.2} s, max {:.2} s",
        lags.len(),
        median(lags.clone()),
        lags.iter().max().unwrap().as_secs_f64()
    );
    assert!(lags.iter().all(|l| *l < Duration::from_secs(15)), "the other branch was held up: {lags:?}");

    // After the hook stops refusing, the branch recovers by itself.
    let recovered = branch.wait_equal("the branch to catch up after the hook", CONVERGE).await;
    std::fs::remove_file(&marker).unwrap();
    branch.forget_states();
    branch.set("after").await;
    branch.wait_equal("a change after recovery", CONVERGE).await;
    assert!(branch.worker.state.borrow().quarantined.is_none());
    let (commits, missing) = branch.check_history();
    eprintln!(
        "caught up {:.1} s after the hook began ({:.1} s of waiting at the end); {commits} commits, {missing} values coalesced away",
        started.elapsed().as_secs_f64(),
        recovered.as_secs_f64()
    );
    other.check_history();
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_edits_on_the_remote_are_repaired_by_the_audit() {
    let env = support::env();
    let repo = env.new_repo("hand");
    let options = Options { audit_interval: Duration::from_secs(3), ..Options::default() };
    let mut branch = Branch::start(env, &repo.ssh_url, options);
    for name in ["a", "b", "c"] {
        branch.set(name).await;
    }
    branch.wait_equal("the first push", CONVERGE).await;
    push_by_hand(env, &repo.ssh_url, |work| {
        std::fs::write(work.join(harness::path_of("a")), "edited: by hand\n").unwrap();
        std::fs::remove_file(work.join(harness::path_of("b"))).unwrap();
        std::fs::write(work.join(harness::path_of("extra")), "not in the cluster\n").unwrap();
        std::fs::write(work.join("NOTES.md"), "someone's notes\n").unwrap();
    });
    let repaired = branch.wait_equal("the audit to repair the hand edits", CONVERGE).await;
    let view = support::git::GitClient::new(support::git::Auth::ssh_rw(env))
        .read_branch(&repo.ssh_url, "main")
        .unwrap();
    assert_eq!(
        view.files.get("NOTES.md").map(String::as_str),
        Some("someone's notes\n"),
        "files outside the folder stay"
    );
    assert!(
        view.subjects.iter().any(|s| s.starts_with("sync 3 files")),
        "one repair commit: {:?}",
        view.subjects
    );
    let drift = branch.metric("gitops_reverser_drift_repaired_files_total");
    assert_eq!(drift, 3.0, "the drift is counted");
    eprintln!("hand edits repaired {:.1} s after they were pushed", repaired.as_secs_f64());
    branch.check_history();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_that_fails_right_after_a_stale_push_loses_nothing() {
    let env = support::env();
    let repo = env.new_repo("stale");
    let proxy = proxy::Proxy::start(env.var("GITENV_SSH_PORT").parse().unwrap()).await;
    let via_url =
        repo.ssh_url.replace(&format!(":{}/", env.var("GITENV_SSH_PORT")), &format!(":{}/", proxy.port));
    let credentials = harness::ssh_credentials(env, &via_url, Some(proxy.port));
    // The proxy scripts what happens to each new connection, so every git
    // command must make one.
    let options =
        Options { via: Some((via_url, credentials)), shared_ssh_connection: false, ..Options::default() };
    let mut branch = Branch::start(env, &repo.ssh_url, options);
    branch.set("a").await;
    branch.wait_equal("the first push", CONVERGE).await;

    // Someone else moves the branch; the next push is stale, and the fetch
    // right after it (the connection after the push's) fails twice.
    push_by_hand(env, &repo.ssh_url, |work| std::fs::write(work.join("NOTES.md"), "moved\n").unwrap());
    let connections = proxy.connections();
    proxy.script([proxy::Action::Pass, proxy::Action::Refuse, proxy::Action::Refuse]);
    let pending = [branch.set("a").await, branch.set("b").await];
    let failed = branch
        .wait_state("the failed fetch to be reported", Duration::from_secs(60), |s| s.error.is_some())
        .await;
    eprintln!("reported while the fetch failed: {:?}", failed.error);
    assert!(proxy.connections() >= connections + 2, "the push and the fetch went through the proxy");
    branch.wait_equal("the pending changes on the moved branch", CONVERGE).await;
    let view = support::git::GitClient::new(support::git::Auth::ssh_rw(env))
        .read_branch(&repo.ssh_url, "main")
        .unwrap();
    assert_eq!(view.files.get("NOTES.md").map(String::as_str), Some("moved\n"), "the other push is kept");
    for (name, value) in ["a", "b"].iter().zip(pending) {
        let content = &view.files[&harness::path_of(name)];
        assert_eq!(harness::value_of(content), Some(value));
    }
    branch.check_history();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_holds_changes_until_there_is_room_again() {
    let env = support::env();
    let repo = env.new_repo("disk");
    let healthy = env.new_repo("disk-other");
    let mount = tmpfs::Tmpfs::mount(8 * 1024 * 1024);
    let options = Options { data_dir: Some(mount.path().to_owned()), ..Options::default() };
    let mut branch = Branch::start(env, &repo.ssh_url, options);
    let mut other = Branch::start(env, &healthy.ssh_url, Options::default());
    branch.set("a").await;
    branch.wait_equal("the first push", CONVERGE).await;

    let filler = mount.fill();
    branch.set("a").await;
    branch.set("b").await;
    // Commits stay in memory; the pack each push writes first meets the full disk.
    let failing = branch
        .wait_state("the failing pack write to be reported", Duration::from_secs(60), |s| s.error.is_some())
        .await;
    let (_, message) = failing.error.unwrap();
    assert!(message.to_lowercase().contains("space"), "says why: {message}");
    let mut lags = Vec::new();
    for round in 0..5 {
        branch.set(&format!("during-{round}")).await;
        lags.push(lag_of(&mut other, &format!("o{round}")).await);
    }
    eprintln!("other branch while the disk was full: lag median {:.2} s", median(lags.clone()));
    assert!(lags.iter().all(|l| *l < Duration::from_secs(15)), "the other branch was held up: {lags:?}");
    assert!(branch.worker.state.borrow().error.is_some(), "still failing while the disk is full");

    drop(filler);
    let took = branch.wait_equal("the held changes after room was made", CONVERGE).await;
    eprintln!("caught up {:.1} s after the disk had room again", took.as_secs_f64());
    let state = branch.worker.state.borrow().clone();
    assert!(state.error.is_none() && state.local_error.is_none(), "{state:?}");
    branch.check_history();
    other.check_history();
}

mod tmpfs {
    use std::path::Path;
    use std::process::Command;

    /// A small tmpfs, unmounted on drop; the test runs as root.
    pub struct Tmpfs {
        dir: tempfile::TempDir,
    }

    pub struct Filler(std::path::PathBuf);

    impl Drop for Filler {
        fn drop(&mut self) {
            std::fs::remove_file(&self.0).unwrap();
        }
    }

    impl Tmpfs {
        pub fn mount(bytes: u64) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .expect("run mount");
            assert!(status.success(), "cannot mount a tmpfs (this test needs root)");
            Self { dir }
        }

        pub fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Fills the file system up to the last byte.
        pub fn fill(&self) -> Filler {
            use std::io::Write;
            let path = self.dir.path().join("filler");
            let mut file = std::fs::File::create(&path).unwrap();
            let block = vec![0u8; 64 * 1024];
            loop {
                match file.write(&block) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            // Byte by byte for the rest of the last block.
            while file.write(&[0]).is_ok_and(|n| n == 1) {}
            Filler(path)
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}
