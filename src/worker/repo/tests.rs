//! Integration-style tests: gix writes, the real `git` CLI checks.
//!
//! In: temp directories. Out: assertions that git (fsck --strict, log, show,
//! ls-tree, fetch, push) accepts and reads exactly what `LocalRepo` wrote,
//! also on shallow clones and on top of commits made by plain git.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::*;
use crate::worker::limits::{Limit, Limits};

/// A sandbox: a temp HOME and git with no user or system config.
struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Sandbox { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs git in `cwd`, panics with stderr on failure, returns stdout.
    fn git(&self, cwd: &Path, args: &[&str]) -> Vec<u8> {
        let out = Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Other Writer")
            .env("GIT_AUTHOR_EMAIL", "other@example.com")
            .env("GIT_COMMITTER_NAME", "Other Writer")
            .env("GIT_COMMITTER_EMAIL", "other@example.com")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn git_str(&self, cwd: &Path, args: &[&str]) -> String {
        String::from_utf8(self.git(cwd, args)).unwrap().trim_end().to_owned()
    }

    /// `git fsck --strict` on a bare repository.
    fn fsck(&self, repo: &LocalRepo) {
        self.git(repo.git_dir(), &["fsck", "--strict", "--no-dangling"]);
    }

    /// A bare "remote" with `commits` commits made by plain git on `main`.
    fn origin_with_history(&self, commits: usize) -> PathBuf {
        let work = self.path("other-writer");
        self.git(self.dir.path(), &["init", "-q", "-b", "main", work.to_str().unwrap()]);
        for i in 0..commits {
            std::fs::create_dir_all(work.join("ns/core/configmaps")).unwrap();
            std::fs::write(work.join(format!("ns/core/configmaps/cm{i}.yaml")), format!("n: {i}\n")).unwrap();
            self.git(&work, &["add", "-A"]);
            self.git(&work, &["commit", "-q", "-m", &format!("other {i}")]);
        }
        let origin = self.path("origin.git");
        let (w, o) = (work.to_str().unwrap(), origin.to_str().unwrap());
        self.git(self.dir.path(), &["clone", "-q", "--bare", w, o]);
        origin
    }
}

fn who(name: &str) -> Identity {
    Identity { name: name.into(), email: format!("{}@example.com", name.to_lowercase()) }
}

fn spec<'a>(message: &'a str, author: &'a Identity, committer: &'a Identity) -> CommitSpec<'a> {
    CommitSpec {
        message,
        author,
        committer,
        time: Some(CommitTime { seconds: 1_700_000_000, offset_seconds: 3600 }),
        signer: None,
        allow_empty: false,
    }
}

fn write(path: &str, content: &[u8]) -> FileChange {
    FileChange::Write { path: path.into(), content: content.to_vec() }
}

#[test]
fn debug_output_leaves_content_out() {
    let shown = format!("{:?}", write("a.yaml", b"password: hunter2"));
    assert_eq!(shown, r#"Write { path: "a.yaml", bytes: 17 }"#);
}

fn delete(path: &str) -> FileChange {
    FileChange::Delete { path: path.into() }
}

/// Commits `changes` with a fixed spec; panics on error.
pub(super) fn commit(repo: &LocalRepo, parent: Option<ObjectId>, changes: &[FileChange]) -> Option<ObjectId> {
    let (a, c) = (who("Alice"), who("Bot"));
    repo.commit(parent, changes, &spec("update", &a, &c)).unwrap()
}

fn loose_objects(sandbox: &Sandbox, repo: &LocalRepo) -> String {
    sandbox.git_str(repo.git_dir(), &["count-objects"])
}

#[test]
fn git_reads_what_gix_wrote() {
    let sandbox = Sandbox::new();
    let repo = LocalRepo::open_or_init(&sandbox.path("repo.git")).unwrap();
    let binary = [0u8, 159, 146, 150, b'\n', b'x'];
    let changes = [
        write("ns1/apps/deployments/web.yaml", b"kind: Deployment\n"),
        write("ns1/core/configmaps/system:x.yaml", b"kind: ConfigMap\n"),
        write("_cluster/core/namespaces/ns1.yaml", &binary),
    ];
    let (author, committer) = (who("Alice"), who("Bot"));
    let message = "CREATE apps/v1 Deployment ns1/web\n\nTrace-Id: abc";
    let id = repo.commit(None, &changes, &spec(message, &author, &committer)).unwrap().unwrap();
    repo.set_ref("refs/heads/main", id).unwrap();
    sandbox.fsck(&repo);

    let dir = repo.git_dir();
    let log = sandbox.git_str(dir, &["log", "--format=%an <%ae> %at|%cn <%ce> %ct %cI|%P|%B", "main"]);
    assert_eq!(
        log,
        "Alice <alice@example.com> 1700000000|Bot <bot@example.com> 1700000000 \
         2023-11-14T23:13:20+01:00||CREATE apps/v1 Deployment ns1/web\n\nTrace-Id: abc"
    );
    for change in &changes {
        let FileChange::Write { path, content } = change else { unreachable!() };
        assert_eq!(&sandbox.git(dir, &["show", &format!("{id}:{path}")]), content);
        assert_eq!(repo.read_file(id, path).unwrap().as_ref(), Some(content));
    }

    let ls_tree = sandbox.git_str(dir, &["ls-tree", "-r", "--format=%(path) %(objectname)", "main"]);
    let listed: Vec<String> =
        repo.list_files(id, "").unwrap().into_iter().map(|(path, id)| format!("{path} {id}")).collect();
    assert_eq!(listed.join("\n"), ls_tree);

    let ns1: Vec<String> = repo.list_files(id, "ns1").unwrap().into_iter().map(|(p, _)| p).collect();
    assert_eq!(ns1, ["ns1/apps/deployments/web.yaml", "ns1/core/configmaps/system:x.yaml"]);
    assert!(repo.list_files(id, "ns2").unwrap().is_empty());
    assert!(repo.list_files(id, "ns1/apps/deployments/web.yaml").unwrap().is_empty());
}

/// The limit that refused a listing, if one did.
fn refused_by(result: Result<Vec<(String, ObjectId)>, RepoError>) -> Option<Limit> {
    match result {
        Ok(_) => None,
        Err(RepoError::TooLarge(too_large)) => Some(too_large.limit),
        Err(other) => panic!("not a limit: {other}"),
    }
}

/// Issue 16: each limit holds at its value and refuses one less.
#[test]
fn listing_stops_at_each_limit() {
    let sandbox = Sandbox::new();
    let mut repo = LocalRepo::open_or_init(&sandbox.path("repo.git")).unwrap();
    let big = "x".repeat(1000);
    let changes = [
        write("ns1/apps/deployments/web.yaml", b"kind: Deployment\n"),
        write("ns1/core/configmaps/big.yaml", big.as_bytes()),
    ];
    let id = commit(&repo, None, &changes).unwrap();
    // Below ns1: apps, core; deployments; web.yaml; configmaps; big.yaml.
    let at = |limits: Limits| {
        let mut probe = LocalRepo::open_or_init(repo.git_dir()).unwrap();
        probe.set_limits(limits);
        refused_by(probe.list_files(id, "ns1"))
    };
    let fits = Limits { tree_entries: 6, path_length: 29, file_size: 1000, ..Limits::default() };
    assert_eq!(at(fits), None);
    assert_eq!(at(Limits { tree_entries: 5, ..fits }), Some(Limit::TreeEntries));
    assert_eq!(at(Limits { path_length: 28, ..fits }), Some(Limit::PathLength));
    assert_eq!(at(Limits { file_size: 999, ..fits }), Some(Limit::FileSize));

    // Reading the big file is refused by its header, before its bytes.
    repo.set_limits(Limits { file_size: 999, ..fits });
    let error = repo.read_file(id, "ns1/core/configmaps/big.yaml").unwrap_err();
    assert!(error.to_string().contains("more than 999 bytes in one file"), "{error}");
    assert!(error.to_string().contains("--max-file-size"), "{error}");
}

/// A tree bomb: 16 entries per tree, each naming the same subtree, 8 deep,
/// so 16^8 (4 billion) paths from 9 trees and a blob. Listing it stops at
/// the entry limit, quickly.
#[test]
fn a_tree_bomb_is_refused_in_bounded_time() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("bomb.git");
    sandbox.git(sandbox.dir.path(), &["init", "-q", "--bare", dir.to_str().unwrap()]);
    let bomb = tree_bomb(&dir, 16, 8);
    // Packed, as a fetch leaves it.
    sandbox.git(&dir, &["repack", "-a", "-d", "-q"]);
    let repo = LocalRepo::open_or_init(&dir).unwrap();
    let started = std::time::Instant::now();
    let error = repo.list_files(bomb, "").unwrap_err();
    let took = started.elapsed();
    assert!(matches!(&error, RepoError::TooLarge(e) if e.limit == Limit::TreeEntries), "{error}");
    assert!(error.to_string().contains("more than 200000 files and folders"), "{error}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    eprintln!("tree bomb refused after {took:?}");
    // The history walk of a takeover is bounded by the same budget.
    let error = repo.changes_after(bomb, HistoryFrom::Time(std::time::SystemTime::now()), 10).unwrap_err();
    assert!(matches!(&error, RepoError::TooLarge(e) if e.limit == Limit::TreeEntries), "{error}");
}

/// A commit whose tree has `width` entries per level, `depth` levels of
/// trees over one blob, every entry of a level naming the same object.
fn tree_bomb(dir: &Path, width: usize, depth: usize) -> ObjectId {
    let hash = |args: &[&str], input: &[u8]| -> String {
        let mut child = Command::new("git")
            .arg(format!("--git-dir={}", dir.display()))
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let mut id = hash(&["hash-object", "-w", "--stdin"], b"boom\n");
    let mut kind = "100644 blob";
    for _ in 0..depth {
        let listing: String = (0..width).map(|i| format!("{kind} {id}\t{i:02}\n")).collect();
        id = hash(&["mktree"], listing.as_bytes());
        kind = "040000 tree";
    }
    let commit = hash(&["-c", "user.name=x", "-c", "user.email=x@x", "commit-tree", &id, "-m", "bomb"], b"");
    ObjectId::from_hex(commit.as_bytes()).unwrap()
}

#[test]
fn second_commit_edits_only_its_path() {
    let sandbox = Sandbox::new();
    let repo = LocalRepo::open_or_init(&sandbox.path("repo.git")).unwrap();
    let first = commit(&repo, None, &[write("a/x.yaml", b"1"), write("b/y.yaml", b"2")]).unwrap();
    let second = commit(&repo, Some(first), &[write("a/x.yaml", b"1b"), write("c/d/z.yaml", b"3")]).unwrap();
    repo.set_ref("refs/heads/main", second).unwrap();
    sandbox.fsck(&repo);

    let dir = repo.git_dir();
    assert_eq!(sandbox.git_str(dir, &["rev-parse", "main^"]), first.to_string());
    let diff = sandbox.git_str(dir, &["diff", "--name-status", "main^", "main"]);
    assert_eq!(diff, "M\ta/x.yaml\nA\tc/d/z.yaml");
    // The untouched folder keeps its tree id.
    let b = |rev: &str| sandbox.git_str(dir, &["rev-parse", &format!("{rev}:b")]);
    assert_eq!(b("main"), b("main^"));
}

#[test]
fn no_ops_write_no_commit_and_no_objects() {
    let sandbox = Sandbox::new();
    let repo = LocalRepo::open_or_init(&sandbox.path("repo.git")).unwrap();
    let base = commit(&repo, None, &[write("a/x.yaml", b"same"), write("f", b"file")]).unwrap();
    let before = loose_objects(&sandbox, &repo);

    assert_eq!(commit(&repo, Some(base), &[write("a/x.yaml", b"same")]), None);
    assert_eq!(commit(&repo, Some(base), &[delete("a/missing.yaml"), delete("nope/x")]), None);
    assert_eq!(commit(&repo, Some(base), &[delete("f/below-a-file")]), None);
    assert_eq!(commit(&repo, Some(base), &[]), None);
    assert_eq!(commit(&repo, None, &[delete("x")]), None);
    // Written and deleted again in the same batch: the last change wins.
    assert_eq!(commit(&repo, Some(base), &[write("new", b"n"), delete("new")]), None);
    assert_eq!(loose_objects(&sandbox, &repo), before);

    let id = LocalRepo::blob_id(b"same");
    assert_eq!(sandbox.git_str(repo.git_dir(), &["rev-parse", &format!("{base}:a/x.yaml")]), id.to_string());
}

/// A marker (a `prune: Never` target's delete) is written though its
/// tree is the parent's, with the author it names.
#[test]
fn an_allowed_empty_commit_keeps_the_tree_and_names_its_author() {
    let sandbox = Sandbox::new();
    let repo = LocalRepo::open_or_init(&sandbox.path("repo.git")).unwrap();
    let base = commit(&repo, None, &[write("a/x.yaml", b"same")]).unwrap();
    let (author, committer) = (who("kubectl-edit"), who("Bot"));
    let marker = CommitSpec { allow_empty: true, ..spec("delete x (file kept)", &author, &committer) };
    let id = repo.commit(Some(base), &[delete("a/missing.yaml")], &marker).unwrap().expect("a commit");
    assert_ne!(id, base);
    let dir = repo.git_dir();
    assert_eq!(
        sandbox.git_str(dir, &["rev-parse", &format!("{id}^{{tree}}"), &format!("{base}^{{tree}}")]),
        format!("{0}\n{0}", sandbox.git_str(dir, &["rev-parse", &format!("{base}^{{tree}}")]))
    );
    assert_eq!(
        sandbox.git_str(dir, &["log", "-1", "--format=%an|%cn|%s", &id.to_string()]),
        "kubectl-edit|Bot|delete x (file kept)"
    );
}

#[test]
fn deletes_remove_folders_left_empty() {
    let sandbox = Sandbox::new();
    let repo = LocalRepo::open_or_init(&sandbox.path("repo.git")).unwrap();
    let base = commit(&repo, None, &[write("a/b/c/x.yaml", b"x"), write("a/y.yaml", b"y")]).unwrap();
    let one = commit(&repo, Some(base), &[delete("a/b/c/x.yaml")]).unwrap();
    let dir = repo.git_dir();
    assert_eq!(
        sandbox.git_str(dir, &["ls-tree", "-r", "-t", "--name-only", &one.to_string()]),
        "a\na/y.yaml"
    );

    let empty = commit(&repo, Some(one), &[delete("a/y.yaml")]).unwrap();
    assert_eq!(
        sandbox.git_str(dir, &["rev-parse", &format!("{empty}^{{tree}}")]),
        "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    );
    assert!(repo.list_files(empty, "").unwrap().is_empty());
    repo.set_ref("refs/heads/main", empty).unwrap();
    sandbox.fsck(&repo);
    assert!(dir.join("objects/4b/825dc642cb6eb9a060e54bf8d69288fbee4904").exists());
}

#[test]
fn conflicts_and_bad_input_are_refused() {
    let sandbox = Sandbox::new();
    let repo = LocalRepo::open_or_init(&sandbox.path("repo.git")).unwrap();
    let base = commit(&repo, None, &[write("dir/file.yaml", b"x")]).unwrap();
    let (a, c) = (who("Alice"), who("Bot"));
    let try_commit = |changes: &[FileChange]| repo.commit(Some(base), changes, &spec("m", &a, &c));

    let cases: [(&[FileChange], &str); 6] = [
        (&[write("dir", b"replaces a folder")], "path conflict at \"dir\""),
        (&[write("dir/file.yaml/x", b"below a file")], "\"dir/file.yaml\" is a file"),
        (&[delete("dir")], "only files can be deleted"),
        (&[write("../x", b"")], "invalid path \"../x\""),
        (&[write("a/.git/hooks", b"")], "'.git' segments"),
        (&[write("/etc/x", b"")], "absolute paths"),
    ];
    for (changes, expected) in cases {
        let err = try_commit(changes).unwrap_err().to_string();
        assert!(err.contains(expected), "{changes:?}: {err}");
    }
    // A refused batch writes nothing, not even the blobs of its valid changes.
    let before = loose_objects(&sandbox, &repo);
    assert!(try_commit(&[write("fine.yaml", b"new bytes"), write("dir", b"x")]).is_err());
    assert_eq!(loose_objects(&sandbox, &repo), before);

    let bad = Identity { name: "Eve <evil>".into(), email: "e@x".into() };
    let err = repo.commit(Some(base), &[write("x", b"")], &spec("m", &bad, &c)).unwrap_err();
    assert!(matches!(err, RepoError::InvalidIdentity { .. }), "{err}");

    let missing = ObjectId::from_hex(b"0123456789012345678901234567890123456789").unwrap();
    let err = commit_err(&repo, Some(missing));
    assert!(err.contains("commit 0123456789012345678901234567890123456789 not found"), "{err}");
    let blob = LocalRepo::blob_id(b"x");
    assert!(commit_err(&repo, Some(blob)).contains("is a blob, expected a commit"));
}

fn commit_err(repo: &LocalRepo, parent: Option<ObjectId>) -> String {
    let (a, c) = (who("Alice"), who("Bot"));
    repo.commit(parent, &[write("x", b"")], &spec("m", &a, &c)).unwrap_err().to_string()
}

#[test]
fn refs_resolve_and_update() {
    let sandbox = Sandbox::new();
    let path = sandbox.path("repo.git");
    let repo = LocalRepo::open_or_init(&path).unwrap();
    assert_eq!(repo.resolve("refs/heads/main").unwrap(), None);
    assert_eq!(repo.resolve("HEAD").unwrap(), None, "unborn HEAD");

    let id = commit(&repo, None, &[write("x", b"1")]).unwrap();
    repo.set_ref("refs/remotes/origin/main", id).unwrap();
    assert_eq!(repo.resolve("refs/remotes/origin/main").unwrap(), Some(id));
    let head_target = sandbox.git_str(repo.git_dir(), &["symbolic-ref", "HEAD"]);
    repo.set_ref(&head_target, id).unwrap();
    assert_eq!(repo.resolve("HEAD").unwrap(), Some(id));
    assert_eq!(sandbox.git_str(repo.git_dir(), &["rev-parse", "origin/main"]), id.to_string());

    let missing = ObjectId::from_hex(b"0123456789012345678901234567890123456789").unwrap();
    assert!(matches!(repo.set_ref("refs/heads/x", missing), Err(RepoError::MissingObject { .. })));
    // A ref that only a partial-name search would find does not count.
    repo.set_ref("refs/heads/refs/tags/v1", id).unwrap();
    assert_eq!(repo.resolve("refs/tags/v1").unwrap(), None);
    for bad in ["main", "refs/heads/a..b", "refs/heads/x.lock", ""] {
        let err = repo.resolve(bad).unwrap_err();
        assert!(matches!(err, RepoError::InvalidRefName { .. }), "{bad:?}: {err}");
    }

    // Reopening finds the same repository and refs; a non-repository is refused.
    drop(repo);
    let again = LocalRepo::open_or_init(&path).unwrap();
    assert_eq!(again.resolve("refs/remotes/origin/main").unwrap(), Some(id));
    let junk = sandbox.path("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("file"), "x").unwrap();
    let err = LocalRepo::open_or_init(&junk).err().expect("not a repository").to_string();
    assert!(err.starts_with(&format!("open repository {} failed: ", junk.display())), "{err}");
}

#[test]
fn builds_on_plain_git_commits_in_a_shallow_fetch_and_pushes() {
    let sandbox = Sandbox::new();
    let origin = sandbox.origin_with_history(3);
    let url = format!("file://{}", origin.display());
    // Opened before the fetch: gix must notice the pack git adds afterwards.
    let repo = LocalRepo::open_or_init(&sandbox.path("repo.git")).unwrap();
    let dir = repo.git_dir().to_owned();
    sandbox.git(&dir, &["fetch", "-q", "--depth", "1", &url, "+refs/heads/main:refs/remotes/origin/main"]);
    assert!(dir.join("shallow").exists(), "the fetch is shallow");

    let tip = repo.resolve("refs/remotes/origin/main").unwrap().unwrap();
    let ours = commit(
        &repo,
        Some(tip),
        &[write("ns/core/configmaps/cm0.yaml", b"n: changed\n"), write("ns/apps/deployments/d.yaml", b"d\n")],
    )
    .unwrap();
    sandbox.fsck(&repo);
    assert_eq!(repo.read_file(ours, "ns/core/configmaps/cm2.yaml").unwrap().unwrap(), b"n: 2\n");
    assert_eq!(repo.list_files(ours, "ns/core").unwrap().len(), 3);
    let log = sandbox.git_str(&dir, &["log", "--format=%s", &ours.to_string()]);
    assert_eq!(log, "update\nother 2", "history stops at the shallow boundary");

    // A compare-and-swap push, as the remote module does it.
    let lease = format!("--force-with-lease=refs/heads/main:{tip}");
    sandbox.git(&dir, &["push", "-q", "--porcelain", &lease, &url, &format!("{ours}:refs/heads/main")]);
    let remote_log = sandbox.git_str(&origin, &["log", "--format=%s", "main"]);
    assert_eq!(remote_log, "update\nother 2\nother 1\nother 0");
    sandbox.git(&origin, &["fsck", "--strict", "--no-dangling"]);
    assert_eq!(sandbox.git(&origin, &["show", "main:ns/apps/deployments/d.yaml"]), b"d\n");

    // After `git gc` moved everything into a new pack, the open handle still finds it.
    // (Only referenced commits survive a prune, so the ref comes first.)
    repo.set_ref("refs/heads/main", ours).unwrap();
    sandbox.git(&dir, &["gc", "-q", "--prune=now"]);
    assert!(sandbox.git_str(&dir, &["count-objects", "-v"]).contains("packs: 1"));
    assert!(!dir.join("refs/heads/main").exists(), "gc packed the refs");
    assert_eq!(repo.resolve("refs/heads/main").unwrap(), Some(ours));
    let next = commit(&repo, Some(ours), &[delete("ns/apps/deployments/d.yaml")]).unwrap();
    repo.set_ref("refs/heads/main", next).unwrap();
    assert_eq!(sandbox.git_str(&dir, &["rev-parse", "main"]), next.to_string());
    sandbox.fsck(&repo);
    let names = sandbox.git_str(&dir, &["ls-tree", "-r", "--name-only", &next.to_string()]);
    assert_eq!(
        names,
        "ns/core/configmaps/cm0.yaml\nns/core/configmaps/cm1.yaml\nns/core/configmaps/cm2.yaml"
    );
}

fn commit_at(repo: &LocalRepo, parent: Option<ObjectId>, changes: &[FileChange], seconds: i64) -> ObjectId {
    let (a, c) = (who("Alice"), who("Bot"));
    let spec = CommitSpec { time: Some(CommitTime { seconds, offset_seconds: 0 }), ..spec("update", &a, &c) };
    repo.commit(parent, changes, &spec).unwrap().expect("a change")
}

fn at(seconds: u64) -> HistoryFrom {
    HistoryFrom::Time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

/// A takeover reads what the previous owner wrote since the standby began:
/// the files at that time, then each later commit's changes, in order.
#[test]
fn changes_after_a_time_are_the_files_then_each_commit() {
    let sandbox = Sandbox::new();
    let repo = LocalRepo::open_or_init(&sandbox.path("r.git")).unwrap();
    let first = commit_at(&repo, None, &[write("f/a.yaml", b"1"), write("f/sub/b.yaml", b"1")], 1_000);
    let second = commit_at(&repo, Some(first), &[write("f/a.yaml", b"2"), delete("f/sub/b.yaml")], 2_000);
    let third = commit_at(&repo, Some(second), &[write("f/sub/b.yaml", b"3")], 3_000);
    let blob = |text: &str| Some(LocalRepo::blob_id(text.as_bytes()));
    let history = repo.changes_after(third, at(1_500), 100).unwrap().expect("within the limit");
    assert!(history.complete);
    assert_eq!(
        history.changes,
        vec![
            ("f/a.yaml".to_owned(), blob("1")),
            ("f/sub/b.yaml".to_owned(), blob("1")),
            ("f/a.yaml".to_owned(), blob("2")),
            ("f/sub/b.yaml".to_owned(), None),
            ("f/sub/b.yaml".to_owned(), blob("3")),
        ]
    );
    let all = repo.changes_after(third, at(0), 100).unwrap().unwrap();
    assert_eq!(all.changes.len(), 5, "from the root: every commit's changes, no starting files");
    assert!(repo.changes_after(third, at(0), 2).unwrap().is_none(), "past the limit");
}

/// A standby's trim asks what came after the tip it fetched before: that
/// commit's files, then each later commit, whatever the committer times
/// say (an owner may push commits it made long before).
#[test]
fn changes_after_a_commit_start_at_that_commit() {
    let sandbox = Sandbox::new();
    let repo = LocalRepo::open_or_init(&sandbox.path("r.git")).unwrap();
    let first = commit_at(&repo, None, &[write("f/a.yaml", b"1")], 3_000);
    let second = commit_at(&repo, Some(first), &[write("f/a.yaml", b"2")], 1_000);
    let third = commit_at(&repo, Some(second), &[delete("f/a.yaml")], 2_000);
    let blob = |text: &str| Some(LocalRepo::blob_id(text.as_bytes()));
    let history = repo.changes_after(third, HistoryFrom::Commit(first), 100).unwrap().unwrap();
    assert!(history.complete);
    assert_eq!(
        history.changes,
        vec![
            ("f/a.yaml".to_owned(), blob("1")),
            ("f/a.yaml".to_owned(), blob("2")),
            ("f/a.yaml".to_owned(), None)
        ]
    );
    let unknown = ObjectId::from_hex(b"00000000000000000000000000000000000000aa").unwrap();
    let from_root = repo.changes_after(third, HistoryFrom::Commit(unknown), 100).unwrap().unwrap();
    assert_eq!(from_root.changes.len(), 3, "a commit not on the line: from the root");
}

/// A shallow clone ends at its boundary: the walk starts there, and says so.
#[test]
fn changes_after_stop_at_a_shallow_boundary() {
    let sandbox = Sandbox::new();
    let origin = LocalRepo::open_or_init(&sandbox.path("origin.git")).unwrap();
    let first = commit_at(&origin, None, &[write("a.yaml", b"1")], 1_000);
    let second = commit_at(&origin, Some(first), &[write("a.yaml", b"2")], 2_000);
    let third = commit_at(&origin, Some(second), &[write("b.yaml", b"3")], 3_000);
    origin.set_ref("refs/heads/main", third).unwrap();
    let url = format!("file://{}", origin.git_dir().display());
    sandbox.git(sandbox.dir.path(), &["clone", "--bare", "--depth=2", &url, "shallow.git"]);
    let shallow = LocalRepo::open_or_init(&sandbox.path("shallow.git")).unwrap();
    let history = shallow.changes_after(third, at(0), 100).unwrap().unwrap();
    assert!(!history.complete);
    let blob = |text: &str| Some(LocalRepo::blob_id(text.as_bytes()));
    assert_eq!(
        history.changes,
        vec![("a.yaml".to_owned(), blob("2")), ("b.yaml".to_owned(), blob("3"))],
        "the boundary's files, then the commit after it"
    );
}

/// Every fetch keeps its own pack, also those of the other workers sharing
/// the repository, so a handle opened long ago must read objects from many
/// packs that did not exist when it was opened (gix's default slots, sized
/// at open, failed with "too few index slots" after a few dozen).
#[test]
fn a_handle_reads_from_packs_added_after_it_was_opened() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("shared.git");
    sandbox.git(sandbox.dir.path(), &["init", "-q", "--bare", dir.to_str().unwrap()]);
    let repo = LocalRepo::open_or_init(&dir).unwrap();
    let tree = sandbox.git_str(&dir, &["mktree"]);
    let mut newest: Option<String> = None;
    for i in 0..120 {
        let message = format!("pack {i}");
        let mut args = vec!["commit-tree", tree.as_str(), "-m", message.as_str()];
        if let Some(parent) = &newest {
            args.extend(["-p", parent.as_str()]);
        }
        let commit = sandbox.git_str(&dir, &args);
        sandbox.git(&dir, &["update-ref", "refs/heads/main", &commit]);
        // An incremental repack: one new pack holding just this commit.
        sandbox.git(&dir, &["repack", "-d", "-q"]);
        newest = Some(commit);
    }
    let packs = std::fs::read_dir(dir.join("objects/pack"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "idx"))
        .count();
    assert!(packs >= 100, "{packs} packs");
    let newest: ObjectId = newest.unwrap().parse().unwrap();
    assert_eq!(repo.resolve("refs/heads/main").unwrap(), Some(newest));
    assert_eq!(repo.list_files(newest, "").unwrap(), Vec::new(), "the newest commit reads from pack {packs}");
    // What the worker does after a gix failure: a fresh handle, same limits.
    let mut limited = repo;
    limited.set_limits(Limits { tree_entries: 7, ..Limits::default() });
    let fresh = limited.reopened().unwrap();
    assert_eq!(fresh.resolve("refs/heads/main").unwrap(), Some(newest));
    assert_eq!(fresh.limits.tree_entries, 7, "the limits carry over");
}

fn packs(repo: &LocalRepo) -> Vec<String> {
    let dir = repo.git_dir().join("objects/pack");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".idx"))
        .collect();
    names.sort();
    names
}

/// A worker's handle commits into memory; git sees the objects only once
/// they are persisted, as one pack it verifies and reads back the same.
#[test]
fn objects_held_in_memory_are_persisted_as_one_pack_git_reads() {
    let sandbox = Sandbox::new();
    let mut repo = LocalRepo::open_or_init(&sandbox.path("repo.git")).unwrap();
    repo.hold_objects_in_memory();
    // Several zlib rounds and a size header of several bytes.
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let first = commit(&repo, None, &[write("a/x.yaml", b"one"), write("b/big.bin", &big)]).unwrap();
    let second = commit(&repo, Some(first), &[write("a/x.yaml", b"two"), delete("b/big.bin")]).unwrap();
    assert_eq!(loose_objects(&sandbox, &repo), "0 objects, 0 kilobytes");
    assert_eq!(repo.read_file(second, "a/x.yaml").unwrap().as_deref(), Some(&b"two"[..]));

    let held = repo.objects_in_memory();
    assert!(held >= 8, "two commits, their trees and blobs: {held}");
    assert_eq!(repo.persist_objects().unwrap(), held);
    assert_eq!((repo.objects_in_memory(), repo.persist_objects().unwrap()), (0, 0));
    assert_eq!(packs(&repo).len(), 1, "one pack, and none for nothing");
    let idx = repo.git_dir().join("objects/pack").join(&packs(&repo)[0]);
    sandbox.git(repo.git_dir(), &["verify-pack", idx.to_str().unwrap()]);
    repo.set_ref("refs/heads/main", second).unwrap();
    sandbox.fsck(&repo);
    assert_eq!(sandbox.git(repo.git_dir(), &["show", &format!("{first}:b/big.bin")]), big);
    assert_eq!(sandbox.git(repo.git_dir(), &["show", "main:a/x.yaml"]), b"two");

    // This handle and a fresh one read the pack; commits go on from it.
    let fresh = repo.reopened().unwrap();
    assert_eq!(fresh.read_file(first, "b/big.bin").unwrap().as_deref(), Some(&big[..]));
    let third = commit(&repo, Some(second), &[write("a/x.yaml", b"three")]).unwrap();
    assert_eq!(repo.persist_objects().unwrap(), 4, "a commit, the root tree, a/ and its blob: {third}");
    repo.set_ref("refs/heads/main", third).unwrap();
    sandbox.fsck(&repo);
    assert_eq!(packs(&repo).len(), 2);
}

/// Two handles of one store hand copies of what they hold to one pack
/// written for both (the repository's pusher does this); each then drops
/// what was written and keeps holding what it committed since.
#[test]
fn held_objects_of_two_handles_go_into_one_pack_and_are_then_forgotten() {
    let sandbox = Sandbox::new();
    let path = sandbox.path("repo.git");
    let (mut a, mut b) = (LocalRepo::open_shared(&path).unwrap(), LocalRepo::open_shared(&path).unwrap());
    a.hold_objects_in_memory();
    b.hold_objects_in_memory();
    // The same blob in both: written once.
    let first = commit(&a, None, &[write("x.yaml", b"same")]).unwrap();
    let other = commit(&b, None, &[write("y.yaml", b"same")]).unwrap();
    let (held_a, held_b) = (a.held_objects(), b.held_objects());
    assert_eq!((held_a.len(), held_b.len()), (3, 3), "a commit, a tree and the blob each");
    assert_eq!(a.objects_in_memory(), 3, "a copy: still held");
    let later = commit(&a, Some(first), &[write("x.yaml", b"later")]).unwrap();

    assert_eq!(write_held(&path, &[&held_a, &held_b]).unwrap(), 5, "the shared blob once");
    assert_eq!(packs(&a).len(), 1);
    a.forget_written(&held_a);
    b.forget_written(&held_b);
    assert_eq!((a.objects_in_memory(), b.objects_in_memory()), (3, 0), "what came after the copy stays");
    let fresh = LocalRepo::open_or_init(&path).unwrap();
    assert_eq!(fresh.read_file(other, "y.yaml").unwrap().as_deref(), Some(&b"same"[..]));
    assert_eq!(a.read_file(first, "x.yaml").unwrap().as_deref(), Some(&b"same"[..]), "read from the pack");
    assert!(
        matches!(fresh.read_file(later, "x.yaml"), Err(RepoError::MissingObject { .. })),
        "not written yet"
    );
    assert_eq!(a.persist_objects().unwrap(), 3);
    a.set_ref("refs/heads/main", later).unwrap();
    a.set_ref("refs/heads/other", other).unwrap();
    sandbox.fsck(&a);
}

/// A pack that cannot be written leaves every object in memory, so the
/// next try (or a reopened handle) still has them.
#[test]
fn objects_stay_in_memory_when_their_pack_cannot_be_written() {
    let sandbox = Sandbox::new();
    let mut repo = LocalRepo::open_or_init(&sandbox.path("repo.git")).unwrap();
    repo.hold_objects_in_memory();
    let id = commit(&repo, None, &[write("a.yaml", b"a")]).unwrap();
    let pack_dir = repo.git_dir().join("objects/pack");
    std::fs::remove_dir_all(&pack_dir).unwrap();
    assert!(matches!(repo.persist_objects(), Err(RepoError::WritePack { .. })));
    assert_eq!(repo.objects_in_memory(), 3);

    let mut repo = repo.reopened().unwrap();
    assert_eq!(repo.objects_in_memory(), 3, "a reopened handle carries them over");
    std::fs::create_dir(&pack_dir).unwrap();
    assert_eq!(repo.persist_objects().unwrap(), 3);
    repo.set_ref("refs/heads/main", id).unwrap();
    sandbox.fsck(&repo);
}
