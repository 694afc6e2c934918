//! Commit cost in a 10,000-file repository, one commit per change.
//!
//! In: a bare repository built with `LocalRepo` in the operator's layout,
//! `{namespace}/{group}/{resource}/{name}.yaml` (100 namespaces, 1–4 KB
//! files), once with all objects loose (as gix writes them) and once as the
//! worker sees it: a shallow `--depth 1` fetch of that repository (a pack). Out: criterion timings and, per case, the
//! median and p90 of single commits measured one by one:
//! - `change`: write blob + tree edit + commit, each on the previous tip;
//! - `delete`: one file removed on the previous tip (re-added untimed);
//! - `noop`: identical bytes, so no commit.

use std::cell::RefCell;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use gitops_reverser::worker::repo::{CommitSpec, FileChange, Identity, LocalRepo, ObjectId};

const NAMESPACES: usize = 100;
const FILES: usize = 10_000;
const RESOURCES: [(&str, &str); 6] = [
    ("core", "configmaps"),
    ("core", "services"),
    ("core", "serviceaccounts"),
    ("apps", "deployments"),
    ("networking.k8s.io", "ingresses"),
    ("rbac.authorization.k8s.io", "roles"),
];

fn path_of(i: usize) -> String {
    let (group, resource) = RESOURCES[i / NAMESPACES % RESOURCES.len()];
    format!("tenant-{:03}/{group}/{resource}/object-{i:05}.yaml", i % NAMESPACES)
}

/// YAML-looking bytes of 1–4 KB, different for each (file, version).
fn content_of(i: usize, version: usize) -> Vec<u8> {
    let size = 1024 + (i * 7919 % 3072);
    let mut out = format!(
        "apiVersion: v1\nkind: Object\nmetadata:\n  name: object-{i}\n  version: \"{version}\"\ndata:\n"
    );
    let mut line = 0;
    while out.len() < size {
        out.push_str(&format!("  key-{line:04}: value-{i}-{line}-abcdefghijklmnopqrstuvwxyz\n"));
        line += 1;
    }
    out.into_bytes()
}

struct Fixture {
    label: &'static str,
    _dir: tempfile::TempDir,
    repo: LocalRepo,
    tip: ObjectId,
}

fn who() -> Identity {
    Identity { name: "gitops-reverser".into(), email: "bot@example.com".into() }
}

fn commit(repo: &LocalRepo, parent: ObjectId, change: FileChange) -> Option<ObjectId> {
    let id = who();
    let spec = CommitSpec {
        message: "UPDATE v1 Object tenant/object",
        author: &id,
        committer: &id,
        time: None,
        signer: None,
        allow_empty: false,
    };
    repo.commit(Some(parent), &[change], &spec).expect("commit")
}

/// All objects loose, as gix writes them.
fn build_loose() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = LocalRepo::open_or_init(&dir.path().join("source.git")).expect("init");
    let changes: Vec<FileChange> =
        (0..FILES).map(|i| FileChange::Write { path: path_of(i), content: content_of(i, 0) }).collect();
    let id = who();
    let spec = CommitSpec {
        message: "initial",
        author: &id,
        committer: &id,
        time: None,
        signer: None,
        allow_empty: false,
    };
    let tip = repo.commit(None, &changes, &spec).expect("commit").expect("not empty");
    repo.set_ref("refs/heads/main", tip).expect("set ref");
    Fixture { label: "loose", _dir: dir, repo, tip }
}

/// The worker's real situation: a shallow `--depth 1` fetch, kept as a pack.
/// (Built by fetching rather than `git gc`: mass deletion of loose objects
/// makes the next file creations on ext4 several times slower, which would
/// measure the file system, not the commit.)
fn build_fetched(source: &Fixture) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = LocalRepo::open_or_init(&dir.path().join("repo.git")).expect("init");
    let url = format!("file://{}", source.repo.git_dir().display());
    git(repo.git_dir(), &["fetch", "-q", "--depth", "1", &url, "+refs/heads/main:refs/remotes/origin/main"]);
    let tip = repo.resolve("refs/remotes/origin/main").expect("resolve").expect("fetched");
    Fixture { label: "fetched", _dir: dir, repo, tip }
}

fn git(git_dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// Single-commit durations per case, for the medians printed at the end.
#[derive(Default)]
struct Samples(RefCell<Vec<(String, Vec<Duration>)>>);

impl Samples {
    fn record(&self, case: &str, d: Duration) {
        let mut all = self.0.borrow_mut();
        match all.iter_mut().find(|(c, _)| c == case) {
            Some((_, v)) => v.push(d),
            None => all.push((case.to_owned(), vec![d])),
        }
    }

    fn print(&self) {
        println!("\nsingle-commit latency in a {FILES}-file repository:");
        for (case, v) in self.0.borrow_mut().iter_mut() {
            v.sort();
            let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
            println!("  {case:<14} median {:>8.1?}  p90 {:>8.1?}  (n = {})", at(0.5), at(0.9), v.len());
        }
    }
}

fn bench(c: &mut Criterion, samples: &Samples, fx: &Fixture) {
    let label = fx.label;
    let mut group = c.benchmark_group(format!("commit_10k_{label}"));
    let tip = RefCell::new(fx.tip);
    let version = RefCell::new(1usize);
    let next = |step: usize| {
        let mut v = version.borrow_mut();
        *v += 1;
        (*v * step % FILES, *v)
    };

    group.bench_function("change", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (i, v) = next(7919);
                let change = FileChange::Write { path: path_of(i), content: content_of(i, v) };
                let start = Instant::now();
                let new = commit(&fx.repo, *tip.borrow(), change).expect("changed");
                let took = start.elapsed();
                samples.record(&format!("{label}/change"), took);
                total += took;
                *tip.borrow_mut() = new;
            }
            total
        })
    });

    group.bench_function("delete", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (i, v) = next(6007);
                let start = Instant::now();
                let deleted = commit(&fx.repo, *tip.borrow(), FileChange::Delete { path: path_of(i) });
                let took = start.elapsed();
                samples.record(&format!("{label}/delete"), took);
                total += took;
                // Put it back (untimed) so the repository keeps its size.
                let restore = FileChange::Write { path: path_of(i), content: content_of(i, v) };
                *tip.borrow_mut() = commit(&fx.repo, deleted.expect("deleted"), restore).expect("restored");
            }
            total
        })
    });

    group.bench_function("noop", |b| {
        let current = *tip.borrow();
        let i = 4242;
        let content = fx.repo.read_file(current, &path_of(i)).expect("read").expect("exists");
        b.iter(|| {
            let change = FileChange::Write { path: path_of(i), content: content.clone() };
            let start = Instant::now();
            let none = commit(&fx.repo, current, change);
            samples.record(&format!("{label}/noop"), start.elapsed());
            assert!(none.is_none());
        })
    });
    group.finish();
}

fn main() {
    let samples = Samples::default();
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    // Both built first: removing one fixture's files before measuring the
    // other would slow its file creation (see `build_fetched`).
    let loose = build_loose();
    let fetched = build_fetched(&loose);
    bench(&mut c, &samples, &loose);
    bench(&mut c, &samples, &fetched);
    c.final_summary();
    samples.print();
}
