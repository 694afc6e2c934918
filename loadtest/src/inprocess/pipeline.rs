//! The operator's data path built from its library, without an API server:
//! a RouteTable with one WatchRule per target, the watch's ObjectIndex,
//! `dispatch::on_apply` (route + sanitize), and real branch workers that
//! commit with gix and push to the run's repositories on the loopback git
//! server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_reverser::api::WatchRuleSpec;
use gitops_reverser::route::{BranchKey, RouteTable, Scope, ServedResource, TargetKey, WatchSpec};
use gitops_reverser::sanitize::normalize_base_folder;
use gitops_reverser::shard::Fence;
use gitops_reverser::telemetry::Metrics;
use gitops_reverser::watch::dispatch::{self, Routing, TargetInfo};
use gitops_reverser::watch::index::ObjectIndex;
use gitops_reverser::worker::branch::{WorkerHandle, WorkerSettings, WorkerState};
use gitops_reverser::worker::credentials::Credentials;
use gitops_reverser::worker::policy::PushPolicy;
use gitops_reverser::worker::queue::WorkItem;
use gitops_reverser::worker::repo::Identity;
use k8s_openapi::ByteString;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::objects::NAMESPACE;
use super::repos::{self, Repo};
use crate::cluster::branch_of;
use crate::env::Env;

/// The operator's default `--push-timeout`: the bound on one push.
const PUSH_TIMEOUT: Duration = Duration::from_secs(20);

pub fn configmaps() -> ServedResource {
    ServedResource {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
        namespaced: true,
        preferred: true,
        watchable: true,
    }
}

pub struct Pipeline {
    routing: Routing,
    spec: WatchSpec,
    index: ObjectIndex,
    queues: HashMap<TargetKey, mpsc::Sender<WorkItem>>,
    pub workers: Vec<WorkerHandle>,
    pub metrics: Arc<Metrics>,
}

/// Target `t<i>` in namespace `lt`, writing to folder `t<i>` of branch `b<i>`.
fn target(i: usize) -> TargetKey {
    TargetKey::new(NAMESPACE, format!("t{i}"))
}

/// One WatchRule per target selecting the ConfigMaps labelled for it, as
/// the other scenarios create them in the cluster.
fn routing(branches: usize) -> Result<Routing, String> {
    let mut table = RouteTable::default();
    let mut targets = HashMap::new();
    for i in 0..branches {
        let spec: WatchRuleSpec = serde_json::from_value(json!({
            "sinkRef": {"name": format!("t{i}")},
            "rules": [{"resources": ["configmaps"], "labelSelector": {"matchLabels": {"lt-target": format!("t{i}")}}}],
        }))
        .map_err(|e| format!("WatchRule r{i}: {e}"))?;
        table
            .set_watch_rule(NAMESPACE, &format!("r{i}"), &spec)
            .map_err(|e| format!("WatchRule r{i}: {e}"))?;
        let info =
            TargetInfo { id: i as u32, base_folder: normalize_base_folder(&format!("t{i}")), sealer: None };
        targets.insert(target(i), info);
    }
    Ok(Routing::new(table, targets))
}

/// The read-write SSH identity of the test environment, read the way the
/// operator reads a Flux-style Secret.
fn credentials(env: &Env, url: &str) -> Result<Credentials, String> {
    let data: BTreeMap<String, ByteString> = [
        ("identity".to_owned(), ByteString(env.file("GITENV_SSH_KEY_RW").into_bytes())),
        ("known_hosts".to_owned(), ByteString(env.file("GITENV_KNOWN_HOSTS").into_bytes())),
    ]
    .into();
    Credentials::from_secret_data("loadtest", &data, url).map_err(|e| format!("credentials: {e}"))
}

impl Pipeline {
    /// Starts one worker per branch, each on its branch's repository, and
    /// waits until each fetched its branch.
    pub async fn start(
        env: &Env,
        repos: &[Repo],
        branches: usize,
        push: PushPolicy,
        dir: &Path,
    ) -> Result<Self, String> {
        let credentials: Vec<Credentials> =
            repos.iter().map(|r| credentials(env, &r.url)).collect::<Result<_, _>>()?;
        let metrics = Arc::new(Metrics::new());
        let mut workers = Vec::with_capacity(branches);
        let pushers = gitops_reverser::worker::pushers::Pushers::new(
            gitops_reverser::cli::DEFAULT_MAX_CONCURRENT_PUSHES,
        );
        let mut queues = HashMap::new();
        for i in 0..branches {
            let url = &repos::of_branch(repos, i).url;
            let key = BranchKey::new(url, &branch_of(i));
            let settings = WorkerSettings {
                repo_dir: gitops_reverser::worker::store::dir_of(&dir.join("repos"), &key.url),
                key,
                url: url.clone(),
                credentials: repos::of_branch(&credentials, i).clone(),
                signing: None,
                push,
                committer: Identity {
                    name: "gitops-reverser".into(),
                    email: "gitops-reverser@configbutler.ai".into(),
                },
                folders: vec![(target(i), normalize_base_folder(&format!("t{i}")))],
                kustomize: Default::default(),
                policies: Default::default(),
                metrics: metrics.clone(),
                // No Leases here: this process holds every shard for good.
                fence: Fence::unfenced(PUSH_TIMEOUT),
                replica: "in-process".into(),
                pushers: pushers.clone(),
                audit_interval: WorkerSettings::DEFAULT_AUDIT_INTERVAL,
                shared_ssh_connection: true,
                limits: Default::default(),
                standby: false,
            };
            let worker = WorkerHandle::spawn(settings);
            queues.insert(target(i), worker.queue.clone());
            workers.push(worker);
        }
        let pipeline = Self {
            routing: routing(branches)?,
            spec: WatchSpec { resource: configmaps(), scope: Scope::All },
            index: ObjectIndex::default(),
            queues,
            workers,
            metrics,
        };
        pipeline.wait_active(Duration::from_secs(60)).await?;
        Ok(pipeline)
    }

    async fn wait_active(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for (i, worker) in self.workers.iter().enumerate() {
            let mut state = worker.state.clone();
            let active = tokio::time::timeout_at(deadline.into(), state.wait_for(|s| s.active)).await;
            if !matches!(active, Ok(Ok(_))) {
                let error = worker.state.borrow().error.clone();
                return Err(format!("worker of {} did not start: {error:?}", branch_of(i)));
            }
        }
        Ok(())
    }

    /// One watch event: dispatch (sanitize + route) as the watch task does,
    /// then send each item, waiting while a queue is full (backpressure).
    /// Returns the number of items sent.
    pub async fn apply(&mut self, object: &Value, listing: bool) -> Result<usize, String> {
        let dispatched = dispatch::on_apply(
            &self.routing,
            &self.spec.resource,
            object,
            &mut self.index,
            Instant::now(),
            listing,
        )
        .map_err(|e| format!("dispatch: {}", e.error))?;
        self.send_all(dispatched.items).await
    }

    /// The end of a list: the sweeps that let a fresh worker push at once.
    pub async fn list_complete(&mut self, names: &HashSet<String>) -> Result<usize, String> {
        let items =
            dispatch::on_list_complete(&self.routing, &self.spec, names, &mut self.index, Instant::now());
        self.send_all(items).await
    }

    async fn send_all(&self, items: Vec<(TargetKey, WorkItem)>) -> Result<usize, String> {
        let count = items.len();
        for (target, item) in items {
            let queue = self.queues.get(&target).ok_or_else(|| format!("no worker for {target}"))?;
            queue.send(item).await.map_err(|_| format!("the worker of {target} stopped"))?;
        }
        Ok(count)
    }

    pub fn states(&self) -> Vec<WorkerState> {
        self.workers.iter().map(|w| w.state.borrow().clone()).collect()
    }

    /// Items sent but not yet taken off the channels by the workers.
    pub fn in_channels(&self) -> usize {
        self.queues.values().map(|q| q.max_capacity() - q.capacity()).sum()
    }

    pub async fn drain(self, timeout: Duration) {
        for worker in self.workers {
            worker.drain(timeout).await;
        }
    }
}
