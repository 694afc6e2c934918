//! Issue 16, limits against hostile git servers, end to end: the operator
//! binary against soft-serve, with one GitTarget on a normal repository and
//! one on each hostile one (a tree bomb, a fetch past the size limit, a
//! path past the length limit, a file past the size limit). Each hostile
//! target reports `Available=False`, reason `RemoteTooLarge`, naming the
//! flag; the normal target keeps mirroring meanwhile; the replica does not
//! fail, and no partial pack is left in its data volume.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::git::GitClient;
use support::scenario::Scenario;

/// A commit of `files` (path, bytes), made with plumbing so that no path
/// has to exist on disk; its id.
fn commit_of(git: &GitClient, dir: &Path, files: &[(String, Vec<u8>)]) -> String {
    git.ok(dir, &["read-tree", "--empty"]);
    for (path, bytes) in files {
        let output = git.run_input(dir, &["hash-object", "-w", "--stdin"], bytes);
        let blob = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        git.ok(dir, &["update-index", "--add", "--cacheinfo", &format!("100644,{blob},{path}")]);
    }
    let tree = git.ok(dir, &["write-tree"]).trim().to_owned();
    git.ok(dir, &["commit-tree", &tree, "-m", "hostile"]).trim().to_owned()
}

/// A commit whose tree has 16 entries per level, 8 levels of trees, every
/// entry of a level naming the same object: 10 objects, 16^8 paths.
fn tree_bomb(git: &GitClient, dir: &Path) -> String {
    let output = git.run_input(dir, &["hash-object", "-w", "--stdin"], b"boom\n");
    let mut id = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let mut kind = "100644 blob";
    for _ in 0..8 {
        let listing: String = (0..16).map(|i| format!("{kind} {id}\t{i:02}\n")).collect();
        let output = git.run_input(dir, &["mktree"], listing.as_bytes());
        assert!(output.status.success(), "mktree: {}", support::git::stderr(&output));
        id = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        kind = "040000 tree";
    }
    git.ok(dir, &["commit-tree", &id, "-m", "bomb"]).trim().to_owned()
}

/// Bytes no compression shrinks (xorshift), so a pack holds all of them.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend(seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Pushes `commit` of the local repository `dir` to `main` of `url`.
fn push(git: &GitClient, dir: &Path, url: &str, commit: &str) {
    git.ok(dir, &["push", "-q", url, &format!("{commit}:refs/heads/main")]);
}

/// Every `tmp_pack_*` below `dir`.
fn partial_packs(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            } else if entry.file_name().to_string_lossy().starts_with("tmp_pack_") {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn each_hostile_server_marks_only_its_target_remote_too_large() {
    let s = Scenario::new("limits").await;
    s.ssh_provider("good", json!({"interval": "1s"})).await;
    s.target("ok", "good", "main", "ok").await;
    s.rule("r", "ok", json!([{"resources": ["configmaps"]}])).await;
    s.configmap("before", json!({"v": "1"})).await;

    let work = s.git.workdir("hostile");
    s.git.ok(&work, &["init", "-q"]);
    let long_path = format!("{}/x.yaml", vec!["p".repeat(60); 5].join("/"));
    let hostile: [(&str, String, &str); 4] = [
        ("bomb", tree_bomb(&s.git, &work), "--max-tree-entries"),
        ("huge", commit_of(&s.git, &work, &[("blob.bin".into(), noise(4 << 20, 1))]), "--max-fetch-size"),
        ("long", commit_of(&s.git, &work, &[(long_path, b"x\n".to_vec())]), "--max-path-length"),
        ("big", commit_of(&s.git, &work, &[("big.yaml".into(), noise(128 << 10, 2))]), "--max-file-size"),
    ];
    for (name, commit, _) in &hostile {
        let repo = s.env.new_repo(&format!("limits-{name}"));
        push(&s.git, &work, &repo.ssh_url, commit);
        s.provider(name, &repo.ssh_url, &support::fixtures::Access::Ssh { read_only: false }, json!({}))
            .await;
        s.target(name, name, "main", "t").await;
    }

    let started = Instant::now();
    let mut operator =
        s.operator_with(&["--max-fetch-size", "1Mi", "--max-path-length", "200", "--max-file-size", "64Ki"]);
    for (name, _, flag) in &hostile {
        let (_, reason, message) = s.wait_condition(name, "Available", |c| c.0 == "False").await;
        assert_eq!(reason, "RemoteTooLarge", "{name}: {message}");
        assert!(message.contains(flag), "{name}: the message names {flag}: {message}");
        eprintln!("{name}: RemoteTooLarge after {:.1} s: {message}", started.elapsed().as_secs_f64());
        let (_, ready, _) = s.wait_condition(name, "Ready", |c| c.0 == "False").await;
        assert_eq!(ready, "RemoteTooLarge");
    }

    // Meanwhile the normal target mirrors, before and after.
    let path = s.core_path("ok", "configmaps", "before");
    s.wait_branch("the normal target's first object", "main", |view| view.files.contains_key(&path)).await;
    let changed = Instant::now();
    s.configmap("after", json!({"v": "2"})).await;
    let path = s.core_path("ok", "configmaps", "after");
    s.wait_branch("the normal target's next object", "main", |view| view.files.contains_key(&path)).await;
    eprintln!("the normal target took a change in {:.1} s", changed.elapsed().as_secs_f64());

    // Proven write access (every 3 s here) does not clear the condition.
    let recheck = Instant::now() + Duration::from_secs(7);
    while Instant::now() < recheck {
        for (name, _, _) in &hostile {
            let condition = support::fixtures::condition(&s.client, s.namespace(), name, "Available").await;
            let (status, reason, _) = condition.expect("Available is set");
            assert_eq!((status.as_str(), reason.as_str()), ("False", "RemoteTooLarge"), "{name}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let data = operator.data_dir();
    assert!(partial_packs(&data).is_empty(), "partial packs left: {:?}", partial_packs(&data));
    let logs = operator.logs();
    assert!(!logs.contains("panicked"), "the operator panicked");
    assert!(operator.is_running(), "the operator keeps running");
    let peak = operator.peak_memory_kib().expect("the operator's memory");
    eprintln!("the operator's peak memory: {} MiB", peak / 1024);
    // A listing of the bomb's 4 billion paths would take hundreds of GiB.
    assert!(peak < 512 * 1024, "peak memory {peak} KiB");
}
