//! The branch worker's shell: one task per (repository URL, branch). It
//! feeds work items, settings and the results of git operations to the
//! [`BranchCore`], which decides everything, and runs the commands the core
//! returns: commits with gix on a blocking thread, fetches and pushes with
//! the git CLI. A commit and a push may run at the same time.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, warn};

pub use super::core::WorkerState;
use super::core::{
    At, BranchCore, Change, Command, CommitFailure, Content, CoreSettings, DEFAULT_AUDIT_INTERVAL, Fetched,
    HistoryFrom, Input, Note, PushReply, TargetPolicy,
};
use super::credentials::Credentials;
use super::fetches::{self, Depth};
use super::files::fingerprint;
use super::handle::{self, RepoSlot, ensure_open, with_repo};
use super::limits::Limits;
use super::observe::{self, Source};
use super::policy::PushPolicy;
use super::pushers::{PushRequest, Pushers};
use super::queue::WorkItem;
use super::remote::{RefUpdate, Remote, RemoteError};
use super::repo::{CommitSpec, FileChange, Identity, ObjectId, RepoError};
use super::signing::SigningKey;
use super::store;
use crate::api::Reason;
use crate::route::{BranchKey, TargetKey};
use crate::shard::Fence;
use crate::sops::rules::SOPS_CONFIG_PATH;
use crate::telemetry::{BranchMetrics, Metrics};

pub use super::core::INTAKE_LIMIT;
/// Capacity of the channel in front of the queue.
pub const CHANNEL_CAPACITY: usize = 1024;
/// Loose objects git may keep before it packs them (git's own default).
const LOOSE_OBJECT_THRESHOLD: u32 = 6_700;
/// Commits written at once by all workers of the replica. Each commit is
/// CPU and small-file work; a hundred of them at once on two cores only
/// contend for the allocator's arenas and the object folders' locks.
static COMMITS_AT_ONCE: LazyLock<Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    Semaphore::new(2 * cores)
});
/// Objects a worker holds in memory at most before it writes them as a
/// pack without waiting for its push (about 5 per commit).
const MAX_OBJECTS_HELD: usize = 50_000;
/// Commits the ancestry walk after a fetch reads at most.
const ANCESTRY_LIMIT: usize = 100_000;
/// Most commits a takeover reads the changes of; past it, it judges by the tip alone.
const HISTORY_LIMIT: usize = 10_000;

/// Everything a worker needs; sent again to change it while running.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub key: BranchKey,
    /// The URL as the user wrote it (the key holds a normalised form).
    pub url: String,
    pub credentials: Credentials,
    /// Signs every commit; `None` only when the provider names no signing key.
    pub signing: Option<Arc<SigningKey>>,
    pub push: PushPolicy,
    pub committer: Identity,
    /// The local store of the repository, shared with its other branches
    /// ([`store`]).
    pub repo_dir: PathBuf,
    /// (target, normalised base folder) of every target on this branch.
    pub folders: Vec<(TargetKey, String)>,
    /// The targets with `layout: kustomize`.
    pub kustomize: std::collections::BTreeSet<TargetKey>,
    /// Each target's message template and prune policy.
    pub policies: std::collections::BTreeMap<TargetKey, TargetPolicy>,
    pub metrics: Arc<Metrics>,
    /// Checked before every push: the branch's shard Lease must be held.
    pub fence: Fence,
    /// This replica's name, in every commit's `Replica:` trailer.
    pub replica: String,
    /// The replica's pushes: one at a time per repository, shared by all its workers.
    pub pushers: Pushers,
    /// How often the remote is compared with the cluster (anti-entropy).
    pub audit_interval: Duration,
    /// One SSH connection per repository and identity (`--ssh-connection-sharing`).
    pub shared_ssh_connection: bool,
    /// Bounds on what the remote may make this worker receive and read.
    pub limits: Limits,
    /// Prepare only: the shard's current owner still writes the branch.
    pub standby: bool,
}

impl WorkerSettings {
    pub const DEFAULT_AUDIT_INTERVAL: Duration = DEFAULT_AUDIT_INTERVAL;

    fn core(&self) -> CoreSettings {
        let salt = xxhash_rust::xxh3::xxh3_64(&self.key.stable_bytes());
        CoreSettings {
            push: self.push,
            folders: self.folders.clone(),
            kustomize: self.kustomize.clone(),
            policies: self.policies.clone(),
            replica: self.replica.clone(),
            salt,
            audit_interval: self.audit_interval,
            first_audit: super::core::first_audit(self.audit_interval, salt),
            standby: self.standby,
        }
    }
}

enum Control {
    Update(Box<WorkerSettings>),
    /// Stop intake, push, end; answer when done.
    Drain(oneshot::Sender<()>),
    /// Push, then stand by; changes routed meanwhile are still taken in.
    HandOver,
    Resume,
}

/// A running worker.
pub struct WorkerHandle {
    pub queue: mpsc::Sender<WorkItem>,
    pub state: watch::Receiver<WorkerState>,
    key: BranchKey,
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

impl WorkerHandle {
    pub fn spawn(settings: WorkerSettings) -> Self {
        let (queue, intake) = mpsc::channel(CHANNEL_CAPACITY);
        let (control, control_rx) = mpsc::channel(8);
        let (state_tx, state) = watch::channel(WorkerState::default());
        let key = settings.key.clone();
        let task = tokio::spawn(run(settings, intake, control_rx, state_tx));
        Self { queue, state, key, control, task }
    }

    /// Changes credentials, batching or the targets on this branch.
    pub async fn update(&self, settings: WorkerSettings) {
        let _ = self.control.send(Control::Update(Box::new(settings))).await;
    }

    /// Stops intake, commits what is queued, pushes, and ends the task.
    pub async fn drain(self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        if self.control.send(Control::Drain(done)).await.is_ok()
            && tokio::time::timeout(timeout, wait).await.is_err()
        {
            self.give_up();
        }
        self.task.abort();
    }

    /// Hands the branch over: commit and push what is held, then stand by
    /// (`WorkerState::handed_over`). It goes on taking in what is routed to
    /// it, so a handover called off leaves no gap, and a new owner that
    /// dies before its first push loses nothing (this worker has it too).
    pub async fn hand_over(&self) {
        let _ = self.control.send(Control::HandOver).await;
    }

    /// Calls a handover off: the worker goes on as if it never began.
    pub async fn resume(&self) {
        let _ = self.control.send(Control::Resume).await;
    }

    /// Ends a drain that ran out of time, saying what it did not push.
    pub fn give_up(&self) {
        let state = self.state.borrow().clone();
        warn!(
            branch = %self.key,
            unpushed = state.unpushed,
            queued = state.queued,
            "drain timed out: these changes were not pushed; the next owner's resync restores the final state, not these versions"
        );
        self.task.abort();
    }

    pub fn abort(&self) {
        self.task.abort();
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

fn at() -> At {
    At { now: Instant::now(), wall: SystemTime::now() }
}

async fn run(
    settings: WorkerSettings,
    mut intake: mpsc::Receiver<WorkItem>,
    mut control: mpsc::Receiver<Control>,
    state: watch::Sender<WorkerState>,
) {
    let mut shell = Shell::new(settings);
    let mut core = BranchCore::new(shell.settings.core(), at());
    let mut running: FuturesUnordered<BoxFuture<'static, Option<Input>>> = FuturesUnordered::new();
    let mut drained: Vec<oneshot::Sender<()>> = Vec::new();
    let mut commands = core.handle(Input::Tick, at());
    let mut started = false;
    let (mut intake_open, mut control_open, mut rounds_open) = (true, true, true);
    let mut rounds = shell.settings.pushers.rounds(&shell.settings.key.url);
    loop {
        for command in commands.drain(..) {
            if let Command::Done = command {
                for done in drained.drain(..) {
                    let _ = done.send(());
                }
                return;
            }
            let behind = core.state().unpushed + core.state().queued;
            if let Some(work) = shell.run(command, behind) {
                running.push(work);
            }
        }
        shell.publish(&core, &state);
        if !started && core.state().active {
            started = true;
            info!(branch = %shell.settings.key, files = core.files(), "branch worker started");
        }
        let wake = core.wake_at(Instant::now()).unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        // Settings before items: the controller sends an update before it
        // routes anything under it.
        let input = tokio::select! {
            biased;
            message = control.recv(), if control_open => match message {
                Some(Control::Update(settings)) => {
                    shell.reconfigure(*settings);
                    Input::Settings(shell.settings.core())
                }
                Some(Control::Drain(done)) => {
                    drained.push(done);
                    intake.close();
                    Input::Drain
                }
                Some(Control::HandOver) => Input::HandOver,
                Some(Control::Resume) => Input::Resume,
                None => {
                    control_open = false;
                    intake.close();
                    Input::Drain
                }
            },
            Some(result) = running.next() => match result {
                Some(input) => input,
                None => continue,
            },
            item = intake.recv(), if intake_open && core.wants_items() => match item {
                Some(item) => {
                    log_listing(&shell.settings.key, &item);
                    Input::Item(item)
                }
                None => {
                    intake_open = false;
                    Input::Drain
                }
            },
            changed = rounds.changed(), if rounds_open => match changed {
                Ok(()) => Input::PushRound,
                Err(_) => {
                    rounds_open = false;
                    continue;
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => Input::Tick,
        };
        // A push the round brings out joins it rather than opening another.
        shell.joins_round = matches!(input, Input::PushRound);
        commands = core.handle(input, at());
    }
}

/// Where a target's resync begins and each list ends, for the logs.
fn log_listing(branch: &BranchKey, item: &WorkItem) {
    match item {
        WorkItem::Retain { target, owned } => {
            debug!(%branch, git_target = %target, resources = owned.len(), "resync begins");
        }
        WorkItem::Sweep { scope, live } => {
            debug!(%branch, git_target = %scope.target, resource = %scope.plural, live = live.len(), "list ended");
        }
        _ => {}
    }
}

/// The I/O side of one worker: the remote, the local repository, metrics.
struct Shell {
    settings: WorkerSettings,
    remote: Result<Arc<Remote>, (Reason, String)>,
    repo: RepoSlot,
    remote_tip: Option<ObjectId>,
    metrics: Arc<BranchMetrics>,
    /// The commands being run answer a round of the repository's pushes.
    joins_round: bool,
}

impl Shell {
    fn new(settings: WorkerSettings) -> Self {
        let remote = remote_of(&settings).map(Arc::new).map_err(|error| (error.reason(), error.to_string()));
        let repository =
            remote.as_ref().map(|r| r.url().to_owned()).unwrap_or_else(|_| settings.key.url.clone());
        let metrics = Arc::new(settings.metrics.branch(&repository, &settings.key.branch));
        Self { settings, remote, repo: handle::empty(), remote_tip: None, metrics, joins_round: false }
    }

    fn reconfigure(&mut self, settings: WorkerSettings) {
        if settings.credentials != self.settings.credentials || settings.url != self.settings.url {
            match remote_of(&settings) {
                Ok(remote) => self.remote = Ok(Arc::new(remote)),
                Err(error) => {
                    warn!(branch = %settings.key, %error, "new credentials rejected; keeping the old ones");
                }
            }
        }
        self.settings = settings;
    }

    fn publish(&self, core: &BranchCore, state: &watch::Sender<WorkerState>) {
        let age = core.oldest_queued().map(|at| at.elapsed()).unwrap_or_default();
        self.metrics.queue(core.state().queued, age);
        state.send_if_modified(|s| {
            let changed = s != core.state();
            if changed {
                *s = core.state().clone();
            }
            changed
        });
    }

    /// Starts `command`; the future yields the input that answers it.
    /// `behind` is what the worker holds that no push carried yet.
    fn run(&mut self, command: Command, behind: usize) -> Option<BoxFuture<'static, Option<Input>>> {
        match command {
            Command::Fetch { known, since, history } => {
                debug!(branch = %self.settings.key, known = known.len(), ?history, "fetching");
                Some(self.fetch(known, since, history).map(Some).boxed())
            }
            Command::Commit { parent, changes, message, source, author, allow_empty } => {
                debug!(branch = %self.settings.key, changes = changes.len(), "committing");
                Some(self.commit(parent, changes, message, source, author, allow_empty).map(Some).boxed())
            }
            Command::Push { local, expected, commits, sources } => {
                Some(self.push(local, expected, commits, sources).map(Some).boxed())
            }
            Command::KeepTip(tip) => {
                self.remote_tip = Some(tip);
                let (repo, branch, key) =
                    (self.repo.clone(), self.settings.key.branch.clone(), self.settings.key.clone());
                Some(
                    async move {
                        let refname = format!("refs/heads/{branch}");
                        let kept = with_repo(repo, move |r| r.set_ref(&refname, tip)).await;
                        if let Err(error) = kept {
                            warn!(branch = %key, %error, "cannot record the pushed tip locally");
                        }
                        None
                    }
                    .boxed(),
                )
            }
            Command::Maintain => {
                let (remote, git_dir, key) =
                    (self.remote.clone().ok()?, self.settings.repo_dir.clone(), self.settings.key.clone());
                Some(
                    async move {
                        let _store = store::exclusive(&git_dir).await;
                        if let Err(error) = remote.maintain(&git_dir, LOOSE_OBJECT_THRESHOLD).await {
                            warn!(branch = %key, %error, "repository maintenance failed");
                        }
                        None
                    }
                    .boxed(),
                )
            }
            Command::Note(note) => {
                self.note(note, behind);
                None
            }
            Command::Done => None,
        }
    }

    fn note(&self, note: Note, behind: usize) {
        let key = &self.settings.key;
        match note {
            Note::Coalesced => self.metrics.coalesced(),
            Note::Acked { sources } => {
                // `left: 0` says everything the worker had taken in is on the
                // remote (the HA tests' completeness check relies on it).
                debug!(branch = %key, commits = sources.len(), left = behind, "pushed");
                for source in sources {
                    self.metrics.pushed_change(source.received_at.elapsed(), source.trace_id());
                }
            }
            Note::Drift { paths } => {
                warn!(branch = %key, files = paths, "the remote branch differed from the cluster; repairing");
                self.metrics.drift_repaired(paths);
            }
            Note::Unwritable { path, message } => {
                warn!(branch = %key, path, %message, "a change can never be written; skipped");
            }
            Note::TakenOver { dropped, pending, by_history } => {
                info!(branch = %key, dropped, pending, by_history, "took the branch over from standby");
            }
            Note::Trimmed { dropped, pending } => {
                debug!(branch = %key, dropped, pending, "standby: dropped what the owner pushed");
            }
            Note::HandedOver { pending } => {
                info!(branch = %key, pending, "handed over: standing by with what the new owner writes");
            }
        }
    }

    fn fetch(
        &self,
        known: Vec<ObjectId>,
        since: Option<ObjectId>,
        history_from: Option<HistoryFrom>,
    ) -> impl Future<Output = Input> + 'static {
        let remote = self.remote.clone();
        let (repo, dir, branch) =
            (self.repo.clone(), self.settings.repo_dir.clone(), self.settings.key.branch.clone());
        let limits = self.settings.limits;
        async move {
            let result = async {
                let remote = remote.map_err(|(reason, message)| Failure::Remote(reason, message))?;
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|e| Failure::Local(format!("cannot create the local repository folder: {e}")))?;
                ensure_open(&repo, &dir, limits).await.map_err(Failure::from)?;
                // Shallow only when no local commit's fate, nor history, must be known.
                let depth = match known.is_empty() && history_from.is_none() {
                    true => Depth::Tip,
                    false => Depth::Full,
                };
                let tip = fetches::fetch(&dir, &remote, &branch, depth)
                    .await
                    .map_err(|error| Failure::Remote(error.reason(), error.to_string()))?;
                let tip = tip
                    .map(|t| {
                        ObjectId::from_hex(t.as_bytes()).map_err(|_| {
                            Failure::Local(format!("the remote reported an invalid commit id {t:?}"))
                        })
                    })
                    .transpose()?;
                let Some(tip) = tip else {
                    debug!(%branch, "fetched: the branch does not exist");
                    return Ok(Fetched::default());
                };
                let history = match history_from {
                    Some(from) => takeover_history(&repo, &remote, &dir, &branch, tip, from).await?,
                    None => None,
                };
                with_repo(repo, move |r| {
                    let files = r.list_files(tip, "")?;
                    let contains = r.newest_contained(tip, &known, since, ANCESTRY_LIMIT)?;
                    let mut sealed = Vec::new();
                    for (path, _) in
                        files.iter().filter(|(p, _)| p.ends_with(crate::sanitize::SEALED_EXTENSION))
                    {
                        let print = r.read_file(tip, path)?.and_then(|bytes| fingerprint(path, &bytes));
                        sealed.extend(print.map(|print| (path.clone(), print)));
                    }
                    let sops_config = match files.iter().any(|(p, _)| p == SOPS_CONFIG_PATH) {
                        true => r.read_file(tip, SOPS_CONFIG_PATH)?,
                        false => None,
                    };
                    Ok(Fetched {
                        tip: Some(tip),
                        files,
                        contains,
                        history: history.clone(),
                        sealed,
                        sops_config,
                    })
                })
                .await
                .map_err(Failure::from)
            }
            .await;
            let result = result.map_err(Failure::into_reason);
            if let Err((reason, message)) = &result {
                warn!(branch = %branch, ?reason, %message, "fetch failed; retrying with back-off");
            }
            Input::Fetched(result)
        }
    }

    fn commit(
        &self,
        parent: Option<ObjectId>,
        changes: Vec<Change>,
        message: String,
        source: Source,
        author: Option<Identity>,
        allow_empty: bool,
    ) -> impl Future<Output = Input> + 'static {
        let (repo, committer, metrics) =
            (self.repo.clone(), self.settings.committer.clone(), self.metrics.clone());
        let branch = self.settings.key.clone();
        let signer = self.settings.signing.clone();
        let url = self.remote.as_ref().map(|r| r.url().to_owned()).unwrap_or_default();
        let span =
            observe::commit_span(&self.settings.key, &url, self.settings.fence.shard, &source, changes.len());
        async move {
            let _permit = COMMITS_AT_ONCE.acquire().await.expect("the semaphore is never closed");
            let started = Instant::now();
            let files: Vec<FileChange> = changes.into_iter().map(file_change).collect();
            let result = with_repo(repo, move |r| {
                // The field manager that made the change, else the operator.
                let author = author.as_ref().unwrap_or(&committer);
                let spec = CommitSpec {
                    message: &message,
                    author,
                    committer: &committer,
                    time: None,
                    allow_empty,
                    signer: signer.as_deref(),
                };
                let committed = r.commit(parent, &files, &spec)?;
                // A branch that cannot push for long would otherwise hold
                // every commit since in memory.
                if r.objects_in_memory() > MAX_OBJECTS_HELD
                    && let Err(error) = r.persist_objects()
                {
                    warn!(error = %with_causes(&error), "cannot write the held objects; keeping them in memory");
                }
                Ok(committed)
            })
            .instrument(span.clone())
            .await;
            metrics.commit(started.elapsed(), result.is_ok(), source.trace_id());
            if let Ok(Some(id)) = &result {
                metrics.committed_change(source.received_at.elapsed(), source.trace_id());
                span.record("sha", id.to_string());
            }
            if let Err(error) = &result {
                warn!(%branch, error = %with_causes(error), "commit failed");
            }
            Input::Committed(result.map_err(|error| CommitFailure {
                conflict: matches!(error, RepoError::PathConflict { .. } | RepoError::InvalidPath { .. }),
                message: with_causes(&error),
            }))
        }
    }

    fn push(
        &self,
        local: ObjectId,
        expected: Option<ObjectId>,
        commits: usize,
        sources: Vec<Source>,
    ) -> impl Future<Output = Input> + 'static {
        let (remote, repo) = (self.remote.clone(), self.repo.clone());
        let (fence, pushers, metrics) =
            (self.settings.fence.clone(), self.settings.pushers.clone(), self.metrics.clone());
        let (dir, branch) = (self.settings.repo_dir.clone(), self.settings.key.branch.clone());
        let url = remote.as_ref().map(|r| r.url().to_owned()).unwrap_or_default();
        let span = observe::push_span(&self.settings.key, &url, fence.shard, commits, sources.iter());
        let trace_id = crate::telemetry::trace::trace_id(&crate::telemetry::trace::context_of(&span));
        let repository = self.settings.key.url.clone();
        let joins_round = self.joins_round;
        async move {
            let started = Instant::now();
            let reply = match remote {
                Err((reason, message)) => PushReply::Failed { reason, message },
                Ok(remote) => {
                    // git pushes from the disk: the pusher writes what this
                    // worker committed, in one pack with the push's other branches.
                    let held = match with_repo(repo.clone(), |r| Ok(r.held_objects())).await {
                        Ok(held) => Arc::new(held),
                        Err(_) => Arc::default(),
                    };
                    let update = RefUpdate {
                        git_dir: dir,
                        branch: branch.clone(),
                        local: local.to_string(),
                        expected: expected.map(|t| t.to_string()),
                    };
                    let objects = held.clone();
                    let reply = pushers
                        .push(&repository, PushRequest { remote, update, fence, objects, joins_round })
                        .instrument(span.clone())
                        .await;
                    // git ran, so the pack was written: hold those objects no longer.
                    if matches!(reply, PushReply::Pushed | PushReply::Stale | PushReply::Rejected(_))
                        && !held.is_empty()
                    {
                        let _ = with_repo(repo, move |r| {
                            r.forget_written(&held);
                            Ok(())
                        })
                        .await;
                    }
                    reply
                }
            };
            let (result, reason) = match &reply {
                PushReply::Pushed => ("pushed", String::new()),
                PushReply::Stale => ("stale", String::new()),
                PushReply::Rejected(_) => ("rejected", Reason::GitOperationFailed.as_str().to_owned()),
                PushReply::Failed { reason, .. } => ("failed", reason.as_str().to_owned()),
                PushReply::Fenced => ("fenced", String::new()),
            };
            metrics.push(started.elapsed(), result, &reason, trace_id);
            if let PushReply::Failed { message, .. } | PushReply::Rejected(message) = &reply {
                warn!(%branch, result, %message, "push failed; will retry");
            }
            span.record("result", result);
            span.record("reason", reason.as_str());
            span.record("sha", local.to_string());
            Input::Pushed(reply)
        }
    }
}

fn file_change(change: Change) -> FileChange {
    match change.content {
        Content::Bytes(bytes) => FileChange::Write { path: change.path, content: bytes.to_vec() },
        Content::Blob(id) => FileChange::Restore { path: change.path, id },
        Content::Gone => FileChange::Delete { path: change.path },
    }
}

/// A failed fetch, before it becomes a condition reason and message.
enum Failure {
    Remote(Reason, String),
    Local(String),
}

impl Failure {
    fn into_reason(self) -> (Reason, String) {
        match self {
            Self::Remote(reason, message) => (reason, message),
            Self::Local(message) => (Reason::GitOperationFailed, message),
        }
    }
}

impl From<RemoteError> for Failure {
    fn from(error: RemoteError) -> Self {
        Self::Remote(error.reason(), error.to_string())
    }
}

impl From<RepoError> for Failure {
    fn from(error: RepoError) -> Self {
        match error {
            // The branch as the server sent it is past a limit: the remote's doing.
            RepoError::TooLarge(limit) => Self::Remote(Reason::RemoteTooLarge, limit.to_string()),
            error => Self::Local(format!("local repository: {}", with_causes(&error))),
        }
    }
}

/// A local error with what caused it ("No space left on device" sits deep
/// in gix's chain); local errors carry paths, never credentials.
pub(super) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let line = inner.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = inner.source();
    }
    text
}

/// The remote the settings describe.
fn remote_of(settings: &WorkerSettings) -> Result<Remote, RemoteError> {
    Ok(Remote::new(&settings.url, settings.credentials.clone())?
        .with_shared_ssh_connection(settings.shared_ssh_connection)
        .with_limits(settings.limits))
}

/// What the owner wrote since `from` (see `Fetched::history`), for a
/// takeover or a standby's trim. A shallow repository may not reach that
/// far back: it is deepened once by time (a server that cannot is only
/// logged), and what it then reaches is used.
async fn takeover_history(
    repo: &RepoSlot,
    remote: &Remote,
    dir: &std::path::Path,
    branch: &str,
    tip: ObjectId,
    from: HistoryFrom,
) -> Result<Option<Vec<(String, Option<ObjectId>)>>, Failure> {
    let walk = |repo: RepoSlot| with_repo(repo, move |r| r.changes_after(tip, from, HISTORY_LIMIT));
    let history = walk(repo.clone()).await.map_err(Failure::from)?;
    let after = match from {
        HistoryFrom::Time(after) => after,
        // A tip this store fetched before: its commits are here.
        HistoryFrom::Commit(_) => return Ok(history.filter(|h| h.complete).map(|h| h.changes)),
    };
    if history.as_ref().is_some_and(|h| h.complete) {
        return Ok(history.map(|h| h.changes));
    }
    let store = store::exclusive(dir).await;
    let deepened = remote.deepen_since(dir, branch, after).await;
    drop(store);
    if let Err(error) = deepened {
        debug!(branch, %error, "cannot deepen the history for a takeover; using what is here");
        return Ok(history.map(|h| h.changes));
    }
    Ok(walk(repo.clone()).await.map_err(Failure::from)?.map(|h| h.changes))
}
