//! The controller: turns the configuration objects into running parts and
//! reports their state. Level-based: every pass recomputes the whole desired
//! state from the caches and moves the running parts towards it.
//!
//! In: GitProviders, GitTargets, WatchRules, ClusterWatchRules, Flux
//! GitRepositories, their Secrets. Out: one branch worker per (repository,
//! branch), the routing snapshot, the shared watches, and status.

mod access;
mod encryption;
mod publish;
pub mod resolve;
mod rule_access;
mod stores;
mod targets;
mod workers;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::api::{ClusterWatchRuleSpec, Layout, WatchRuleSpec};
use crate::route::{BranchKey, ResourceCatalog, RouteTable, RuleSource, TargetKey};
use crate::shard::{Ownership, ShardHandle};
use crate::status::writer::StatusWriter;
use crate::watch::dispatch::{Routing, TargetInfo};
use crate::watch::index::TargetId;
use crate::watch::{Notice, Snapshot, WatchManager};
use crate::worker::branch::{WorkerHandle, WorkerSettings};
use crate::worker::pushers::Pushers;
use crate::worker::queue::WorkItem;
use crate::worker::repo::Identity;
use crate::worker::store;
use access::AccessChecks;
use rule_access::{Question, RuleAccess, Verdict};
use stores::Stores;
use targets::{Resolved, TargetState};

/// How the controller runs.
#[derive(Clone)]
pub struct Settings {
    /// Local repositories live below this folder.
    pub data_dir: PathBuf,
    pub committer: Identity,
    /// This replica's name, for Events.
    pub instance: String,
    /// How often write access is verified again.
    pub access_check_interval: Duration,
    /// How often a branch's remote is compared with the cluster.
    pub audit_interval: Duration,
    /// One SSH connection per repository and identity.
    pub ssh_connection_sharing: bool,
    /// Stand by for the shards this replica is next in line for.
    pub warm_successors: bool,
    /// Bounds on what each remote may make its workers receive and read.
    pub limits: crate::worker::limits::Limits,
    /// Limit to one namespace; None: all.
    pub namespace: Option<String>,
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// Which shards this replica owns, and the fences of their pushes.
    pub shards: ShardHandle,
    /// How long a stopping worker may take to push what it holds.
    pub drain_timeout: Duration,
    /// Pushes this replica runs at once.
    pub max_concurrent_pushes: usize,
    /// How watches list before they follow changes.
    pub initial_list: crate::watch::InitialList,
    /// Hosts (globs) GitTargets may write to; empty: any.
    pub allowed_git_hosts: Vec<String>,
    /// Beaten after every pass (`/healthz`).
    pub heartbeat: Arc<crate::health::Heartbeat>,
    /// Where a failed pass is reported, and how a stalled one is called off.
    pub supervision: crate::supervise::Supervision,
    /// The ServiceAccount (in the rule's namespace, or a ClusterWatchRule's
    /// sink namespace) that bounds rules that name none; None: such rules
    /// mirror what the operator may read.
    pub default_service_account: Option<String>,
    /// (namespace, name) of the Secret holding the key of Secret digests
    /// (`crate::sops::digest`), made on first use.
    pub digest_key_secret: (String, String),
    /// `--write-all-secrets`: no Secret is excluded by default.
    pub write_all_secrets: bool,
}

/// How often discovery runs again, to pick up new CRDs.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);
/// Discovery is tried again this soon after it failed.
const DISCOVERY_RETRY: Duration = Duration::from_secs(2);
/// Status and housekeeping cadence.
const TICK: Duration = Duration::from_secs(1);

struct RunningWorker {
    handle: WorkerHandle,
    settings: WorkerSettings,
    /// Handing its shard over: it pushes what it holds by then, and then
    /// stands by, still taking in the changes routed to it.
    handover_deadline: Option<Instant>,
    /// Its handover ran out of time: it was aborted, and said what it lost.
    given_up: bool,
    /// Kept through a lapse of its shard (suspended); resumed when it is back.
    lapsed: bool,
}

impl RunningWorker {
    /// Its handover's drain is over: it stands by with what came since.
    fn handed_over(&self) -> bool {
        self.handover_deadline.is_some() && self.handle.state.borrow().handed_over
    }

    /// Its handover pushed what it must (or the task ended).
    fn drained(&self) -> bool {
        self.handle.is_finished() || self.handed_over()
    }
}

pub struct Controller {
    client: kube::Client,
    /// For requests other than watches: a hung one fails in seconds.
    calls: kube::Client,
    settings: Settings,
    changed: Arc<Notify>,
    stores: Stores,
    catalog: Arc<ResourceCatalog>,
    /// The newest discovery result, from a task of its own: a pass never
    /// waits for discovery (an API server coming back answered it slowly,
    /// and routing, hence every watch, waited seconds for it).
    catalogs: watch::Receiver<Option<Arc<ResourceCatalog>>>,
    workers: HashMap<BranchKey, RunningWorker>,
    targets: HashMap<TargetKey, TargetState>,
    ids: HashMap<TargetKey, TargetId>,
    watches: WatchManager,
    snapshot: watch::Sender<Arc<Snapshot>>,
    notices: mpsc::UnboundedReceiver<Notice>,
    access: AccessChecks,
    writer: StatusWriter,
    rule_problems: BTreeMap<RuleSource, Vec<String>>,
    /// Per rule, what its ServiceAccount may not read (or is not known to).
    rule_denials: BTreeMap<RuleSource, Vec<String>>,
    rule_access: RuleAccess,
    /// The rules suspended in the last pass, to see which resume.
    suspended_rules: BTreeSet<RuleSource>,
    written: publish::Written,
    /// Stopped workers still pushing what they hold, by branch. A branch
    /// gets a new worker only once its old one is gone: both would use the
    /// same local repository.
    draining: HashMap<BranchKey, tokio::task::JoinHandle<()>>,
    /// Branches of each shard being handed over whose workers were stopped.
    handing_over: HashMap<u32, Vec<BranchKey>>,
    /// The ownership this pass works with.
    ownership: Arc<Ownership>,
    /// Shared by every worker: see `--max-concurrent-pushes`.
    pushers: Pushers,
    /// Set once stopping: hand-overs must be done by then.
    stop_deadline: Option<Instant>,
    /// The incoming shards last reported as on standby.
    standby_reported: BTreeSet<u32>,
    /// A pass has failed: the replica is on its way out.
    failed: bool,
    /// The cluster's key of Secret digests, read or made on first use.
    digest_key: tokio::sync::OnceCell<crate::sops::DigestKey>,
    /// Per branch, the `.sops.yaml` its worker last fetched, parsed.
    sops_rules: HashMap<BranchKey, SopsRules>,
}

type SopsRules = (Arc<[u8]>, Result<Option<Arc<crate::sops::rules::CreationRules>>, String>);

impl Controller {
    /// `client` serves watches; `calls`, with a short read timeout, every
    /// other request (see `run::api_call_client`).
    pub fn new(client: kube::Client, calls: kube::Client, settings: Settings) -> Self {
        let changed = Arc::new(Notify::new());
        let (snapshot, snapshots) = watch::channel(Arc::new(Snapshot::default()));
        let (notices_tx, notices) = mpsc::unbounded_channel();
        let catalogs = spawn_discovery(calls.clone(), changed.clone());
        Self {
            stores: Stores::start(&client, settings.namespace.as_deref(), changed.clone()),
            watches: WatchManager::new(
                client.clone(),
                snapshots,
                notices_tx,
                settings.metrics.clone(),
                settings.initial_list,
            ),
            writer: StatusWriter::new(calls.clone(), &settings.instance),
            access: AccessChecks::new(changed.clone()),
            rule_access: RuleAccess::new(calls.clone(), changed.clone()),
            suspended_rules: BTreeSet::new(),
            pushers: Pushers::new(settings.max_concurrent_pushes),
            settings,
            changed,
            catalog: Arc::default(),
            catalogs,
            client,
            calls,
            workers: HashMap::new(),
            targets: HashMap::new(),
            ids: HashMap::new(),
            snapshot,
            notices,
            rule_problems: BTreeMap::new(),
            rule_denials: BTreeMap::new(),
            written: publish::Written::default(),
            draining: HashMap::new(),
            handing_over: HashMap::new(),
            ownership: Arc::new(Ownership::default()),
            stop_deadline: None,
            standby_reported: BTreeSet::new(),
            failed: false,
            digest_key: tokio::sync::OnceCell::new(),
            sops_rules: HashMap::new(),
        }
    }

    /// Runs until `stop` turns true; then goes on routing and pushing each
    /// shard until the coordinator hands it over (once its new owner is on
    /// standby), and drains whatever is left at the drain timeout.
    pub async fn run(mut self, mut stop: watch::Receiver<Option<Instant>>) {
        let mut tick = tokio::time::interval(TICK);
        forward_ownership(self.settings.shards.view.clone(), self.changed.clone());
        loop {
            tokio::select! {
                _ = self.changed.notified() => {
                    // Let a burst of changes settle into one pass.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ = tick.tick() => {}
                at = stopped(&mut stop), if self.stop_deadline.is_none() => {
                    info!(workers = self.workers.len(), "stopping: handing over the shards");
                    self.stop_deadline = Some(at + self.settings.drain_timeout);
                }
                _ = tokio::time::sleep_until(self.next_deadline().into()) => {}
            }
            if let Err(cause) = self.guarded_pass().await {
                let again = std::mem::replace(&mut self.failed, true);
                error!(%cause, again, "a controller pass failed; the replica hands its shards over and exits");
                self.settings.supervision.report(format!("the controller {cause}"));
                if again {
                    // Passes cannot be trusted to hand over: push what is held.
                    self.settings.heartbeat.beat();
                    break;
                }
            }
            self.settings.heartbeat.beat();
            if let Some(deadline) = self.stop_deadline {
                let handed_over = self.ownership.held.is_empty() && self.draining.is_empty();
                if handed_over || Instant::now() >= deadline {
                    break;
                }
            }
        }
        info!(workers = self.workers.len(), "stopping: draining branch workers");
        self.watches.stop_all();
        let mut drains: BTreeMap<u32, Vec<tokio::task::JoinHandle<()>>> = BTreeMap::new();
        for (branch, handle) in self.draining.drain() {
            drains.entry(self.settings.shards.shard_of(&branch)).or_default().push(handle);
        }
        let budget = self.drain_budget();
        for (branch, worker) in self.workers.drain() {
            let shard = self.settings.shards.shard_of(&branch);
            let handles = drains.entry(shard).or_default();
            // One given up already said what it lost; its task is aborted.
            if !worker.given_up {
                handles.push(tokio::spawn(worker.handle.drain(budget)));
            }
        }
        // Each shard is released as soon as its own workers pushed, so one
        // slow branch does not hold the others' Leases until they expire.
        for shard in (0..self.settings.shards.shards).filter(|s| !drains.contains_key(s)) {
            self.settings.shards.report_drained(shard);
        }
        let mut pending: futures::stream::FuturesUnordered<_> = drains
            .into_iter()
            .map(|(shard, handles)| async move {
                futures::future::join_all(handles).await;
                shard
            })
            .collect();
        while let Some(shard) = futures::StreamExt::next(&mut pending).await {
            self.settings.shards.report_drained(shard);
        }
    }

    /// One pass, with the notices before it. A panic in it, or its being
    /// called off because it made no progress, is an `Err` with the cause:
    /// the controller lives on to hand its shards over.
    async fn guarded_pass(&mut self) -> Result<(), String> {
        let abandon = self.settings.supervision.abandon.clone();
        // Unwind safety: after a failed pass the state is only used to
        // hand over and drain, and every pass recomputes it from the caches.
        let pass = std::panic::AssertUnwindSafe(async {
            while let Ok(notice) = self.notices.try_recv() {
                self.note(notice).await;
            }
            if crate::fault::fires(crate::fault::Fault::PanicController) {
                panic!("fault injection: the controller panics");
            }
            self.reconcile().await;
        });
        tokio::select! {
            outcome = futures::FutureExt::catch_unwind(pass) => {
                outcome.map_err(|panic| format!("panicked: {}", crate::supervise::panic_message(panic.as_ref())))
            }
            () = abandon.notified() => Err("made no progress within the stall timeout (pass called off)".to_owned()),
        }
    }

    /// Takes the newest discovery result, if a new one came; false until
    /// the first one (a pass would see no resources).
    fn refresh_catalog(&mut self) -> bool {
        if self.catalogs.has_changed().unwrap_or(false)
            && let Some(catalog) = self.catalogs.borrow_and_update().clone()
        {
            if catalog.find(crate::api::FLUX_SOURCE_GROUP, "gitrepositories").is_some() {
                self.stores.start_flux(
                    &self.client,
                    self.settings.namespace.as_deref(),
                    self.changed.clone(),
                );
            }
            self.catalog = catalog;
        }
        self.catalogs.borrow().is_some()
    }

    fn rule_table(&mut self) -> RouteTable {
        let mut table = RouteTable::default();
        self.rule_problems.clear();
        for rule in self.stores.watch_rules.state() {
            let (ns, name) = (
                rule.metadata.namespace.clone().unwrap_or_default(),
                rule.metadata.name.clone().unwrap_or_default(),
            );
            if let Err(error) = table.set_watch_rule(&ns, &name, &rule.spec) {
                self.rule_problems
                    .insert(RuleSource::WatchRule { namespace: ns, name }, vec![error.to_string()]);
            }
        }
        for rule in self.stores.cluster_watch_rules.state() {
            if self.settings.namespace.as_ref().is_some_and(|ns| ns != &rule.spec.sink_ref.namespace) {
                continue;
            }
            let name = rule.metadata.name.clone().unwrap_or_default();
            if let Err(error) = table.set_cluster_watch_rule(&name, &rule.spec) {
                self.rule_problems.insert(RuleSource::ClusterWatchRule { name }, vec![error.to_string()]);
            }
        }
        self.restrict_to_service_accounts(&mut table);
        self.resync_resumed_rules(&table);
        table
    }

    /// A rule that was suspended and no longer is resyncs its target: one
    /// sync commit catches up with what it missed.
    fn resync_resumed_rules(&mut self, table: &RouteTable) {
        let suspended = table.suspended();
        for source in self.suspended_rules.difference(&suspended) {
            for target in table.targets_of(source) {
                if let Some(state) = self.targets.get_mut(&target) {
                    info!(rule = ?source, git_target = %target, "rule resumed: resyncing its target");
                    state.synced_as = None;
                }
            }
        }
        self.suspended_rules = suspended;
    }

    /// Bounds every rule that names a ServiceAccount (or falls under
    /// `--default-service-account`) to what that account may list and watch.
    fn restrict_to_service_accounts(&mut self, table: &mut RouteTable) {
        let default = self.settings.default_service_account.as_deref();
        let mut accounts: Vec<(RuleSource, String, String)> = Vec::new();
        for rule in self.stores.watch_rules.state() {
            let namespace = rule.metadata.namespace.clone().unwrap_or_default();
            let name = rule.metadata.name.clone().unwrap_or_default();
            if let Some(account) = rule.spec.service_account_name.as_deref().or(default) {
                accounts.push((
                    RuleSource::WatchRule { namespace: namespace.clone(), name },
                    namespace,
                    account.into(),
                ));
            }
        }
        for rule in self.stores.cluster_watch_rules.state() {
            let name = rule.metadata.name.clone().unwrap_or_default();
            if let Some(account) = rule.spec.service_account_name.as_deref().or(default) {
                let namespace = rule.spec.sink_ref.namespace.clone();
                accounts.push((RuleSource::ClusterWatchRule { name }, namespace, account.into()));
            }
        }
        let now = Instant::now();
        let mut asked = HashSet::new();
        self.rule_denials.clear();
        for (source, account_namespace, account) in accounts {
            let mut denied = BTreeSet::new();
            let mut reasons = Vec::new();
            for ((group, plural), namespace) in table.selected_resources(&source, &self.catalog) {
                let question = Question {
                    account_namespace: account_namespace.clone(),
                    account: account.clone(),
                    group: group.clone(),
                    plural: plural.clone(),
                    namespace,
                };
                let refused = match self.rule_access.verdict(&question, now) {
                    Verdict::Allowed => None,
                    Verdict::Denied(why) => Some(why),
                    Verdict::Unknown => Some(format!(
                        "checking whether ServiceAccount {account_namespace}/{account} may list and watch {}",
                        question.describe()
                    )),
                };
                if let Some(why) = refused {
                    reasons.push(why);
                    denied.insert((group, plural));
                }
                asked.insert(question);
            }
            if !denied.is_empty() {
                table.deny(&source, &denied);
                self.rule_denials.insert(source, reasons);
            }
        }
        self.rule_access.retain(&asked);
    }

    fn target_id(&mut self, key: &TargetKey) -> TargetId {
        let next = self.ids.len() as TargetId;
        *self.ids.entry(key.clone()).or_insert(next)
    }

    /// One level-based pass.
    async fn reconcile(&mut self) {
        if !self.refresh_catalog() {
            return;
        }
        let table = self.rule_table();
        self.resolve_targets().await;
        self.access.schedule(&mut self.targets, self.settings.access_check_interval);
        self.access.collect(&mut self.targets);
        self.reject_shared_folders();

        // One worker per branch of an active shard, configured from its targets.
        self.ownership = self.settings.shards.view.borrow().clone();
        let mut branches: BTreeMap<BranchKey, Vec<(TargetKey, Resolved)>> = BTreeMap::new();
        for (key, state) in &self.targets {
            if let Some(resolved) = state.resolved().filter(|r| {
                let shard = self.settings.shards.shard_of(&r.branch_key);
                state.may_write()
                    && !state.suspended
                    && (self.ownership.is_active(shard) || self.stands_by(shard))
            }) {
                branches
                    .entry(resolved.branch_key.clone())
                    .or_default()
                    .push((key.clone(), resolved.clone()));
            }
        }
        // Targets sharing a branch share a worker configured from the first
        // by name: in a fixed order, not the HashMap's, or the worker's
        // settings would flap between passes.
        for members in branches.values_mut() {
            members.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let mut overridden = overridden_push_settings(&branches);
        for (key, state) in self.targets.iter_mut() {
            state.settings_overridden = overridden.remove(key);
        }
        self.draining.retain(|_, handle| !handle.is_finished());
        let now = Instant::now();
        let late = self.workers.values_mut().filter(|w| w.handover_deadline.is_some_and(|d| d <= now));
        for worker in late.filter(|w| !w.given_up && !w.drained()) {
            worker.handle.give_up();
            worker.given_up = true;
        }
        let wanted: BTreeSet<BranchKey> = branches.keys().cloned().collect();
        let running: BTreeMap<BranchKey, workers::Running> = self
            .workers
            .iter()
            .map(|(branch, worker)| {
                let changed = branches.get(branch).is_some_and(|members| {
                    let settings = self.worker_settings(branch, members);
                    worker.settings.folders != settings.folders
                        || worker.settings.kustomize != settings.kustomize
                        || worker.settings.policies != settings.policies
                        || worker.settings.credentials != settings.credentials
                        || worker.settings.signing != settings.signing
                        || worker.settings.push != settings.push
                        || worker.settings.standby != settings.standby
                });
                let finished = worker.handle.is_finished();
                let handing_over = worker.handover_deadline.is_some();
                let handed_over = worker.handed_over();
                let (tenure, lapsed) = (worker.settings.fence.tenure(), worker.lapsed);
                let running =
                    workers::Running { finished, changed, handing_over, handed_over, tenure, lapsed };
                (branch.clone(), running)
            })
            .collect();
        let draining: BTreeSet<BranchKey> = self.draining.keys().cloned().collect();
        let shards = self.settings.shards.clone();
        let plan = workers::plan(&wanted, &running, &draining, &self.ownership, |b| shards.shard_of(b));
        for branch in &plan.wait {
            debug!(%branch, "the branch's previous worker is still pushing; starting it later");
            branches.remove(branch);
        }
        let mut resync: Vec<TargetKey> = Vec::new();
        for branch in &plan.update {
            let mut settings = self.worker_settings(branch, &branches[branch]);
            let running = self.workers.get_mut(branch).expect("planned from the running workers");
            // Its fence stays bound to the tenure its commits were made in.
            settings.fence = running.settings.fence.clone();
            running.handle.update(settings.clone()).await;
            running.settings = settings;
        }
        for branch in &plan.start {
            let members = &branches[branch];
            let settings = self.worker_settings(branch, members);
            info!(%branch, targets = members.len(), "starting branch worker");
            let handle = WorkerHandle::spawn(settings.clone());
            forward_changes(&handle, self.changed.clone());
            self.workers.insert(
                branch.clone(),
                RunningWorker { handle, settings, handover_deadline: None, given_up: false, lapsed: false },
            );
            resync.extend(members.iter().map(|(k, _)| k.clone()));
        }
        for branch in &plan.abort {
            // A superseded worker of a wanted branch: a fresh one starts next pass.
            branches.remove(branch);
            let Some(worker) = self.workers.remove(branch) else { continue };
            // Lost: another replica may own it soon; the fence already
            // blocks pushes, and nothing more may be written.
            warn!(%branch, "shard lost to another replica: stopping branch worker at once");
            worker.handle.abort();
        }
        let budget = self.drain_budget();
        for (shard, branch) in &plan.hand_over {
            let Some(worker) = self.workers.get_mut(branch) else { continue };
            info!(%branch, shard, "handing over: draining branch worker");
            self.handing_over.entry(*shard).or_default().push(branch.clone());
            worker.handle.hand_over().await;
            worker.handover_deadline = Some(Instant::now() + budget);
        }
        for branch in &plan.suspend {
            let Some(worker) = self.workers.get_mut(branch) else { continue };
            info!(%branch, "shard lapsed: the branch's worker keeps what it has not pushed until the Lease is back");
            worker.lapsed = true;
        }
        for branch in &plan.resume {
            let Some(worker) = self.workers.get_mut(branch) else { continue };
            if worker.lapsed {
                info!(%branch, "shard back in the same tenure: the branch's worker goes on");
            } else {
                info!(%branch, "handover called off: the branch's worker goes on");
            }
            worker.handle.resume().await;
            worker.handover_deadline = None;
            worker.lapsed = false;
        }
        for branch in &plan.adopt {
            let settings = self.worker_settings(branch, &branches[branch]);
            let Some(worker) = self.workers.get_mut(branch) else { continue };
            info!(%branch, standby = settings.standby, "handed over: the branch's worker stays on with what it holds");
            worker.handle.update(settings.clone()).await;
            worker.settings = settings;
            worker.handover_deadline = None;
        }
        for branch in &plan.finished {
            self.workers.remove(branch);
        }
        for branch in &plan.retire {
            let Some(worker) = self.workers.remove(branch) else { continue };
            info!(%branch, "stopping branch worker: no target uses it any more");
            self.draining.insert(branch.clone(), tokio::spawn(worker.handle.drain(self.drain_budget())));
        }
        self.report_drained();

        // Routing for the targets that have a worker.
        let mut infos = HashMap::new();
        let mut queues = HashMap::new();
        let active: Vec<(TargetKey, Resolved)> = branches.values().flatten().cloned().collect();
        for (key, resolved) in &active {
            let id = self.target_id(key);
            let sealer =
                resolved.encryption.as_ref().map(|sealer| self.following(sealer, &resolved.branch_key));
            let recipients = sealer.as_ref().map(|sealer| sealer.describe());
            infos.insert(key.clone(), TargetInfo { id, base_folder: resolved.folder.clone(), sealer });
            queues.insert(key.clone(), self.workers[&resolved.branch_key].handle.queue.clone());
            let rules = self.rules_hash(key);
            let state = self.targets.get_mut(key).expect("active targets are known");
            // A new layout resyncs too: the resync writes its kustomization.yaml.
            let fingerprint = (
                resolved.branch_key.clone(),
                resolved.folder.clone(),
                table.owned_resources(key, &self.catalog),
                rules,
                state.layout,
                recipients,
            );
            if state.synced_as.as_ref() != Some(&fingerprint) {
                state.synced_as = Some(fingerprint);
                resync.push(key.clone());
            }
        }
        // A worker handing its shard over keeps receiving its targets'
        // changes until it ends: if the handover is called off, it goes on
        // with none missing (the new owner's standby has them as well).
        let handing_over: Vec<(TargetKey, String, mpsc::Sender<WorkItem>)> = self
            .workers
            .values()
            .filter(|w| w.handover_deadline.is_some() && !w.handle.is_finished())
            .flat_map(|w| {
                w.settings.folders.iter().map(|(k, f)| (k.clone(), f.clone(), w.handle.queue.clone()))
            })
            .filter(|(key, _, _)| !infos.contains_key(key))
            .collect();
        for (key, folder, queue) in handing_over {
            let id = self.target_id(&key);
            // Its Secrets stay sealed for it: withheld, a relist's sweep
            // would delete their files from the branch it still writes.
            let sealer = self.targets.get(&key).and_then(|state| state.resolved()).and_then(|resolved| {
                let branch = resolved.branch_key.clone();
                resolved.encryption.clone().map(|sealer| (sealer, branch))
            });
            let sealer = sealer.map(|(sealer, branch)| self.following(&sealer, &branch));
            infos.insert(key.clone(), TargetInfo { id, base_folder: folder, sealer });
            queues.insert(key, queue);
        }
        // A target that leaves this replica (its shard moved, its worker
        // stopped) must resync when it comes back: the branch moved on
        // without us, so whatever we synced before proves nothing. One
        // still routed to a worker handing over has not left yet.
        let active_keys: std::collections::HashSet<&TargetKey> = infos.keys().collect();
        for (key, state) in self.targets.iter_mut() {
            if !active_keys.contains(key) && state.synced_as.take().is_some() {
                info!(git_target = %key, "target no longer written by this replica");
            }
        }
        let mut active_table = table.clone();
        active_table.retain_targets(|t| infos.contains_key(t));
        let plan = active_table.plan(&self.catalog);
        for (source, problems) in &plan.problems {
            self.rule_problems.entry(source.clone()).or_default().extend(problems.iter().cloned());
        }
        let routing =
            Routing::new(active_table.clone(), infos).with_secret_exclusions(self.secret_exclusions());
        self.snapshot.send_replace(Arc::new(Snapshot { routing, queues }));
        if crate::fault::fires(crate::fault::Fault::WedgeWatchManager) {
            warn!("fault injection: the watch manager hangs");
            std::future::pending::<()>().await;
        }
        let started = self.watches.reconcile(&plan);
        self.report_standby(&branches);

        resync.sort();
        resync.dedup();
        if !resync.is_empty() {
            info!(targets = ?resync.iter().map(ToString::to_string).collect::<Vec<_>>(), "resyncing targets");
        }
        for key in &resync {
            let owned = active_table.owned_resources(key, &self.catalog);
            let queue = self.snapshot.borrow().queues.get(key).cloned();
            if let Some(queue) = queue {
                let _ = queue.send(WorkItem::Retain { target: key.clone(), owned: owned.clone() }).await;
            }
            self.watches.resync(|spec| {
                !started.contains(spec)
                    && owned.contains(&(spec.resource.group.clone(), spec.resource.plural.clone()))
                    && active_table.feeds(key, &spec.scope)
            });
        }

        self.publish_statuses().await;
    }

    /// A hash of every rule that writes to `target`: any change to them
    /// (a label selector, an operation) calls for a resync.
    fn rules_hash(&self, target: &TargetKey) -> u64 {
        let mut specs: Vec<String> = self
            .stores
            .watch_rules
            .state()
            .iter()
            .filter(|r| {
                r.metadata.namespace.as_deref() == Some(&target.namespace)
                    && r.spec.sink_ref.name == target.name
            })
            // Suspending is no reason to resync; resuming is (`resync_resumed_rules`).
            .map(|r| {
                format!("wr/{:?}/{:?}", r.metadata.name, WatchRuleSpec { suspend: false, ..r.spec.clone() })
            })
            .chain(
                self.stores
                    .cluster_watch_rules
                    .state()
                    .iter()
                    .filter(|r| {
                        r.spec.sink_ref.namespace == target.namespace && r.spec.sink_ref.name == target.name
                    })
                    .map(|r| {
                        let spec = ClusterWatchRuleSpec { suspend: false, ..r.spec.clone() };
                        format!("cwr/{:?}/{:?}", r.metadata.name, spec)
                    }),
            )
            .collect();
        specs.sort();
        xxhash_rust::xxh3::xxh3_64(specs.join("\n").as_bytes())
    }

    /// Incoming shards whose branches all have a standby worker that
    /// receives their changes: the current owner may stop writing them.
    fn report_standby(&mut self, branches: &BTreeMap<BranchKey, Vec<(TargetKey, Resolved)>>) {
        let shards = self.settings.shards.clone();
        let standbys =
            branches.keys().filter(|b| self.ownership.is_incoming(shards.shard_of(b))).map(|branch| {
                (
                    shards.shard_of(branch),
                    self.workers.get(branch).is_some_and(|w| w.handle.state.borrow().listed),
                )
            });
        // A branch still waiting for its old worker here has no standby yet,
        // nor has one whose target's write access is still being checked.
        // Before the stores' first lists, any shard may have such a branch.
        let undecided =
            self.targets.values().filter(|t| matches!(t.access, crate::status::target::Access::Checking));
        let waiting: BTreeSet<u32> = if self.stores.ready() {
            self.draining
                .keys()
                .chain(undecided.filter_map(|t| t.resolved()).map(|r| &r.branch_key))
                .map(|b| shards.shard_of(b))
                .filter(|s| self.ownership.is_incoming(*s))
                .collect()
        } else {
            self.ownership.incoming.clone()
        };
        let ready =
            workers::standby_ready(&self.ownership.incoming, standbys, &waiting, &self.standby_reported);
        self.standby_reported = ready.clone();
        shards.report_standby(ready);
    }

    /// The stop deadline or a handover's, whichever comes first: acting on
    /// them late would leave no time to release the shards.
    fn next_deadline(&self) -> Instant {
        let handovers =
            self.workers.values().filter(|w| !w.given_up && !w.drained()).filter_map(|w| w.handover_deadline);
        handovers.chain(self.stop_deadline).min().unwrap_or_else(|| Instant::now() + TICK)
    }

    /// How long a drain may take: the drain timeout, and once stopping no
    /// longer than the time left.
    fn drain_budget(&self) -> Duration {
        self.stop_deadline.map_or(self.settings.drain_timeout, |deadline| {
            deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(500))
        })
    }

    /// Releasing shards whose workers all finished draining may be released.
    fn report_drained(&mut self) {
        let handing_over: BTreeMap<u32, Vec<BranchKey>> =
            self.handing_over.iter().map(|(s, b)| (*s, b.clone())).collect();
        let workers = &self.workers;
        let done = workers::drained_shards(&self.ownership, &handing_over, |b| {
            workers.get(b).is_none_or(RunningWorker::drained)
        });
        for shard in done {
            self.handing_over.remove(&shard);
            self.settings.shards.report_drained(shard);
        }
        let ownership = self.ownership.clone();
        self.handing_over.retain(|shard, _| ownership.is_releasing(*shard));
    }

    fn worker_settings(&self, branch: &BranchKey, members: &[(TargetKey, Resolved)]) -> WorkerSettings {
        // Targets sharing a branch share one worker; the first (by name) decides its connection.
        let (_, first) = &members[0];
        let shard = self.settings.shards.shard_of(branch);
        WorkerSettings {
            fence: self.settings.shards.fence(shard),
            replica: self.settings.instance.clone(),
            key: branch.clone(),
            url: first.provider.url.clone(),
            credentials: first.credentials.clone(),
            signing: first.signing.clone(),
            push: first.provider.push,
            committer: self.settings.committer.clone(),
            repo_dir: store::dir_of(&self.settings.data_dir.join("repos"), &branch.url),
            folders: members.iter().map(|(k, r)| (k.clone(), r.folder.clone())).collect(),
            policies: members.iter().map(|(k, r)| (k.clone(), r.policy.clone())).collect(),
            kustomize: members
                .iter()
                .filter(|(k, _)| self.targets.get(k).is_some_and(|state| state.layout == Layout::Kustomize))
                .map(|(k, _)| k.clone())
                .collect(),
            metrics: self.settings.metrics.clone(),
            pushers: self.pushers.clone(),
            audit_interval: self.settings.audit_interval,
            shared_ssh_connection: self.settings.ssh_connection_sharing,
            limits: self.settings.limits,
            standby: self.stands_by(shard),
        }
    }

    /// Its workers stand by: the shard is coming here (a planned handover),
    /// or comes here if its owner dies (a warm successor).
    fn stands_by(&self, shard: u32) -> bool {
        self.ownership.is_incoming(shard)
            || (self.settings.warm_successors && self.ownership.is_successor(shard))
    }

    /// A warning Event on GitTarget `key`, if it still exists.
    async fn warn_target(&self, key: &TargetKey, reason: &str, note: String) {
        let found = self.stores.targets.find(|t| {
            TargetKey::new(
                t.metadata.namespace.clone().unwrap_or_default(),
                t.metadata.name.clone().unwrap_or_default(),
            ) == *key
        });
        if let Some(target) = found {
            self.writer.warn(target.as_ref(), reason, note).await;
        }
    }

    async fn note(&mut self, notice: Notice) {
        match notice {
            Notice::SecretWithheld { target, namespace, name } => {
                let Some(state) = self.targets.get_mut(&target) else { return };
                let object = format!("{}/{name}", namespace.unwrap_or_default());
                if state.withheld.insert(object.clone()) {
                    let note = format!(
                        "Secret {object} was not written: Secrets are never written in plain text and no encryption is configured"
                    );
                    self.warn_target(&target, "SecretWithheld", note).await;
                }
            }
            Notice::Backlogged { target } => {
                if let Some(state) = self.targets.get_mut(&target) {
                    state.backlogged = true;
                }
            }
            Notice::Resync { target } => {
                // The next pass sees it unsynced and resyncs it.
                if let Some(state) = self.targets.get_mut(&target) {
                    state.synced_as = None;
                    state.backlogged = false;
                }
            }
            Notice::Unsanitizable { targets, object, error } => {
                for target in targets {
                    let Some(state) = self.targets.get_mut(&target) else { continue };
                    let first =
                        state.unsanitizable.insert(object.clone(), error.clone()).as_ref() != Some(&error);
                    if first {
                        let note = format!(
                            "{object} cannot be written ({error}); its file keeps the last version written"
                        );
                        self.warn_target(&target, "SanitizeFailed", note).await;
                    }
                }
            }
            Notice::Sanitizable { object } => {
                for state in self.targets.values_mut() {
                    state.unsanitizable.remove(&object);
                }
            }
        }
    }
}

/// The targets on a shared branch whose provider's push settings differ
/// from the first member's, which apply, each with a note that says so;
/// the first member is named only to targets of its own namespace.
fn overridden_push_settings(
    branches: &BTreeMap<BranchKey, Vec<(TargetKey, Resolved)>>,
) -> HashMap<TargetKey, String> {
    let mut overridden = HashMap::new();
    for members in branches.values() {
        let Some(((first_key, first), rest)) = members.split_first() else { continue };
        for (key, _) in rest.iter().filter(|(_, r)| r.provider.push != first.provider.push) {
            let whose = if key.namespace == first_key.namespace {
                format!("GitTarget {}", first_key.name)
            } else {
                "a GitTarget of another namespace".to_owned()
            };
            overridden.insert(
                key.clone(),
                format!(
                    "its provider's push settings do not apply: the branch is shared, and {whose} (the first by \
                     namespace and name) sets them"
                ),
            );
        }
    }
    overridden
}

/// Runs discovery every [`DISCOVERY_INTERVAL`] (every few seconds while it
/// fails, keeping the previous result) and wakes the controller with each
/// result.
fn spawn_discovery(
    client: kube::Client,
    changed: Arc<Notify>,
) -> watch::Receiver<Option<Arc<ResourceCatalog>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        loop {
            let next = match crate::watch::discovery::discover(&client).await {
                Ok(catalog) => {
                    if tx.send(Some(Arc::new(catalog))).is_err() {
                        return;
                    }
                    changed.notify_one();
                    DISCOVERY_INTERVAL
                }
                Err(error) => {
                    warn!(%error, "discovery failed; keeping the previous resource list");
                    DISCOVERY_RETRY
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

/// When the stop signal came (now, if its sender is gone).
async fn stopped(stop: &mut watch::Receiver<Option<Instant>>) -> Instant {
    match stop.wait_for(Option::is_some).await {
        Ok(at) => at.unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    }
}

/// Wakes the controller whenever shards are gained, lost or handed over.
fn forward_ownership(mut view: crate::shard::OwnershipView, changed: Arc<Notify>) {
    tokio::spawn(async move {
        while view.changed().await.is_ok() {
            changed.notify_one();
        }
    });
}

/// Wakes the controller whenever a worker's state changes, so status follows.
fn forward_changes(handle: &WorkerHandle, changed: Arc<Notify>) {
    let mut state = handle.state.clone();
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            changed.notify_one();
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::controller::resolve::ProviderConfig;
    use crate::worker::credentials::Credentials;
    use crate::worker::policy::PushPolicy;

    fn member(namespace: &str, name: &str, interval_s: u64) -> (TargetKey, Resolved) {
        let url = "https://git.example.com/shared.git";
        let provider = ProviderConfig {
            describe: format!("GitProvider {name}"),
            url: url.into(),
            secret: None,
            allowed_branches: Vec::new(),
            push: PushPolicy { interval: Duration::from_secs(interval_s), ..PushPolicy::default() },
            insecure: false,
            signing: None,
        };
        let resolved = Resolved {
            provider,
            credentials: Credentials::anonymous(url).unwrap(),
            signing: None,
            branch_key: BranchKey::new(url, "main"),
            branch: "main".into(),
            folder: name.into(),
            policy: Default::default(),
            encryption: None,
        };
        (TargetKey::new(namespace, name), resolved)
    }

    #[test]
    fn targets_whose_push_settings_lose_on_a_shared_branch_are_told_without_naming_other_tenants() {
        let key = BranchKey::new("https://git.example.com/shared.git", "main");
        let members = vec![
            member("team-a", "first", 5),
            member("team-a", "same", 5),
            member("team-a", "slow", 60),
            member("team-b", "other", 1),
        ];
        let overridden = overridden_push_settings(&BTreeMap::from([(key, members)]));
        assert_eq!(overridden.len(), 2, "{overridden:?}");
        let slow = &overridden[&TargetKey::new("team-a", "slow")];
        assert!(slow.contains("GitTarget first (the first by namespace and name) sets them"), "{slow}");
        let other = &overridden[&TargetKey::new("team-b", "other")];
        assert!(other.contains("a GitTarget of another namespace") && !other.contains("team-a"), "{other}");
    }
}
