//! A branch worker against the real git server, fed by a model cluster.
//!
//! The test plays the watch: it changes objects in the model and sends the
//! worker the same work items dispatch would. Afterwards it checks the
//! branch on the server against the model: the files now, and the history
//! (every value the model held is in some commit, unless the worker counted
//! it as coalesced, and no file's version ever goes backwards).
// Shared by two test binaries; each uses part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_reverser::api::Operation;
use gitops_reverser::route::{BranchKey, TargetKey};
use gitops_reverser::shard::Fence;
use gitops_reverser::telemetry::Metrics;
use gitops_reverser::telemetry::trace::EventTrace;
use gitops_reverser::worker::branch::{WorkerHandle, WorkerSettings, WorkerState};
use gitops_reverser::worker::credentials::Credentials;
use gitops_reverser::worker::policy::PushPolicy;
use gitops_reverser::worker::pushers::Pushers;
use gitops_reverser::worker::queue::{ChangeMeta, WorkItem};
use gitops_reverser::worker::repo::{Identity, LocalRepo, ObjectId};

use crate::support::git::{Auth, GitClient};
use crate::support::{self, Env};

pub const FOLDER: &str = "f";

/// Where the git server's test hooks look for their fault markers.
pub fn fault_dir(kind: &str) -> PathBuf {
    let dir = support::repo_root().join("target/env/git").join(kind);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn repo_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().trim_end_matches(".git").to_owned()
}

/// SSH credentials of the read-write user; `port` rewrites the known_hosts
/// entries for a proxy in front of the server.
pub fn ssh_credentials(env: &Env, url: &str, port: Option<u16>) -> Credentials {
    let mut known_hosts = std::fs::read_to_string(env.var("GITENV_KNOWN_HOSTS")).unwrap();
    if let Some(port) = port {
        let server = format!("]:{}", env.var("GITENV_SSH_PORT"));
        known_hosts = known_hosts.replace(&server, &format!("]:{port}"));
    }
    let identity = std::fs::read_to_string(env.var("GITENV_SSH_KEY_RW")).unwrap();
    let data = BTreeMap::from([
        ("identity".to_owned(), k8s_openapi::ByteString(identity.into_bytes())),
        ("known_hosts".to_owned(), k8s_openapi::ByteString(known_hosts.into_bytes())),
    ]);
    Credentials::from_secret_data("git-ssh", &data, url).unwrap()
}

/// One branch worker and the model cluster it mirrors.
pub struct Branch {
    pub url: String,
    pub worker: WorkerHandle,
    pub metrics: Arc<Metrics>,
    /// Object name → its value now (None: deleted).
    pub cluster: BTreeMap<String, Option<u64>>,
    /// Every (path, blob) the cluster held.
    written: BTreeSet<(String, ObjectId)>,
    seq: u64,
    /// Every worker state seen, in order (the status is computed from it).
    states: Arc<std::sync::Mutex<Vec<WorkerState>>>,
    git: GitClient,
    _dir: Option<tempfile::TempDir>,
}

pub struct Options {
    pub push: PushPolicy,
    pub audit_interval: Duration,
    /// The local repository's parent folder (a temporary one when None).
    pub data_dir: Option<PathBuf>,
    /// Connect through this URL instead of the repository's own.
    pub via: Option<(String, Credentials)>,
    /// One SSH connection for all git commands (the operator's default).
    pub shared_ssh_connection: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            push: PushPolicy { interval: Duration::from_millis(300), max_commits: 5 },
            audit_interval: Duration::from_secs(600),
            data_dir: None,
            via: None,
            shared_ssh_connection: true,
        }
    }
}

pub fn path_of(name: &str) -> String {
    format!("{FOLDER}/ns/core/configmaps/{name}.yaml")
}

pub fn content_of(name: &str, value: u64) -> Vec<u8> {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: ns\ndata:\n  v: \"{value}\"\n")
        .into_bytes()
}

impl Branch {
    pub fn start(env: &Env, url: &str, options: Options) -> Self {
        let (dir, data_dir) = match options.data_dir {
            Some(dir) => (None, dir),
            None => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().to_owned();
                (Some(dir), path)
            }
        };
        let (connect, credentials) =
            options.via.unwrap_or_else(|| (url.to_owned(), ssh_credentials(env, url, None)));
        let metrics = Arc::new(Metrics::new());
        let settings = WorkerSettings {
            key: BranchKey::new(&connect, "main"),
            url: connect,
            credentials,
            signing: None,
            push: options.push,
            committer: Identity { name: "gitops-reverser".into(), email: "gitops-reverser@test".into() },
            repo_dir: data_dir.join("repo"),
            folders: vec![(TargetKey::new("ns", "t"), FOLDER.into())],
            kustomize: Default::default(),
            policies: Default::default(),
            metrics: metrics.clone(),
            fence: Fence::unfenced(Duration::from_secs(30)),
            replica: "test".into(),
            pushers: Pushers::new(4),
            audit_interval: options.audit_interval,
            shared_ssh_connection: options.shared_ssh_connection,
            limits: Default::default(),
            standby: false,
        };
        let worker = WorkerHandle::spawn(settings);
        let states = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut watch = worker.state.clone();
        let seen = states.clone();
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let state = watch.borrow_and_update().clone();
                seen.lock().unwrap().push(state);
            }
        });
        Self {
            url: url.to_owned(),
            worker,
            metrics,
            cluster: BTreeMap::new(),
            written: BTreeSet::new(),
            seq: 0,
            states,
            git: GitClient::new(Auth::ssh_rw(env)),
            _dir: dir,
        }
    }

    fn meta(&self, name: &str, operation: Operation) -> ChangeMeta {
        ChangeMeta {
            target: TargetKey::new("ns", "t"),
            operation,
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            resource_version: None,
            manager: None,
            namespace: Some("ns".into()),
            name: name.to_owned(),
            received_at: Instant::now(),
            resync: false,
            trace: EventTrace::default(),
        }
    }

    /// The object gets a new value; returns it.
    pub async fn set(&mut self, name: &str) -> u64 {
        self.seq += 1;
        let value = self.seq;
        let operation = if self.cluster.get(name).copied().flatten().is_some() {
            Operation::Update
        } else {
            Operation::Create
        };
        self.cluster.insert(name.to_owned(), Some(value));
        let content = content_of(name, value);
        self.written.insert((path_of(name), LocalRepo::blob_id(&content)));
        let item = WorkItem::Write {
            path: path_of(name),
            content: Arc::from(content),
            meta: self.meta(name, operation),
        };
        self.worker.queue.send(item).await.expect("the worker takes items");
        value
    }

    pub async fn delete(&mut self, name: &str) {
        self.cluster.insert(name.to_owned(), None);
        let item = WorkItem::Delete { path: path_of(name), meta: self.meta(name, Operation::Delete) };
        self.worker.queue.send(item).await.expect("the worker takes items");
    }

    /// The model's files.
    pub fn expected(&self) -> BTreeMap<String, String> {
        self.cluster
            .iter()
            .filter_map(|(name, value)| {
                Some((path_of(name), String::from_utf8(content_of(name, (*value)?)).unwrap()))
            })
            .collect()
    }

    /// The server's files of the folder.
    pub fn remote_files(&self) -> BTreeMap<String, String> {
        let view = self.git.read_branch(&self.url, "main");
        view.map(|v| v.files.into_iter().filter(|(p, _)| p.starts_with(&format!("{FOLDER}/"))).collect())
            .unwrap_or_default()
    }

    /// The server's tip of the branch, if it has one.
    pub fn remote_head(&self) -> Option<String> {
        self.git.read_branch(&self.url, "main").map(|v| v.head)
    }

    /// Waits until the server's folder equals the model; returns how long it took.
    pub async fn wait_equal(&self, what: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        let expected = self.expected();
        support::wait_for(what, timeout, || {
            let got = self.remote_files();
            let equal = got == expected;
            async move { equal.then_some(()) }
        })
        .await;
        started.elapsed()
    }

    /// Waits until the worker reported a state `check` accepts; returns it.
    pub async fn wait_state(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&WorkerState) -> bool,
    ) -> WorkerState {
        support::wait_for(what, timeout, || {
            let found = self.states.lock().unwrap().iter().find(|s| check(s)).cloned();
            async move { found }
        })
        .await
    }

    /// Clears the record of states seen, so a later wait sees only new ones.
    pub fn forget_states(&self) {
        self.states.lock().unwrap().clear();
    }

    /// A metric of this worker, summed over its series.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Checks the server's history: every value in some commit (unless
    /// coalesced) and no version going backwards; returns (commits, missing).
    pub fn check_history(&self) -> (usize, usize) {
        let dir = self.git.workdir(&format!("history-{}", support::unique_name("h")));
        self.git.ok(&dir, &["clone", "--quiet", "--bare", &self.url, "repo.git"]);
        let repo = dir.join("repo.git");
        let commits: Vec<String> = self
            .git
            .ok(&repo, &["rev-list", "--first-parent", "--reverse", "main"])
            .lines()
            .map(str::to_owned)
            .collect();
        let mut seen: BTreeSet<(String, ObjectId)> = BTreeSet::new();
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut backwards = Vec::new();
        let values: HashMap<ObjectId, u64> = self
            .written
            .iter()
            .filter_map(|(path, blob)| {
                let name = path.rsplit('/').next()?.trim_end_matches(".yaml");
                let value = (1..=self.seq).find(|v| LocalRepo::blob_id(&content_of(name, *v)) == *blob)?;
                Some((*blob, value))
            })
            .collect();
        for commit in &commits {
            for line in self.git.ok(&repo, &["ls-tree", "-r", commit, &format!("{FOLDER}/")]).lines() {
                let Some((meta, path)) = line.split_once('\t') else { continue };
                let Some(id) = meta.split(' ').nth(2).and_then(|h| ObjectId::from_hex(h.as_bytes()).ok())
                else {
                    continue;
                };
                seen.insert((path.to_owned(), id));
                if let Some(value) = values.get(&id) {
                    let previous = last.insert(path.to_owned(), *value).unwrap_or(0);
                    if *value < previous {
                        backwards.push(format!("{path}: {previous} → {value} at {commit}"));
                    }
                }
            }
        }
        assert!(backwards.is_empty(), "file versions went backwards: {backwards:?}");
        let missing: Vec<&(String, ObjectId)> = self.written.iter().filter(|w| !seen.contains(*w)).collect();
        let coalesced = self.metric("gitops_reverser_events_coalesced_total") as usize;
        assert!(
            missing.len() <= coalesced,
            "{} values are in no commit but only {coalesced} were coalesced: {:?}",
            missing.len(),
            missing
                .iter()
                .take(5)
                .map(|(p, id)| format!("{p} {}", values.get(id).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
        );
        let _ = std::fs::remove_dir_all(&dir);
        (commits.len(), missing.len())
    }
}

/// The value a file written by `content_of` holds.
pub fn value_of(content: &str) -> Option<u64> {
    content.lines().find_map(|l| l.trim().strip_prefix("v: \"")?.trim_end_matches('"').parse().ok())
}

/// Pushes a commit to the branch as someone else would (a hand edit).
pub fn push_by_hand(env: &Env, url: &str, edit: impl FnOnce(&Path)) {
    let git = GitClient::new(Auth::ssh_rw(env));
    let dir = git.workdir("hand");
    let work = dir.join("work");
    git.ok(&dir, &["clone", "--quiet", "--branch", "main", url, work.to_str().unwrap()]);
    edit(&work);
    git.ok(&work, &["add", "-A"]);
    git.ok(
        &work,
        &["-c", "user.name=someone", "-c", "user.email=someone@example.com", "commit", "-q", "-m", "by hand"],
    );
    git.ok(&work, &["push", "-q", "origin", "HEAD:main"]);
}

/// Median of some durations, in seconds.
pub fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples.get(samples.len() / 2).map_or(0.0, Duration::as_secs_f64)
}
