//! The branch worker: one task per (repository URL, branch). It takes work
//! items from its queue, makes one commit per change in a local bare
//! repository (gix), and pushes batches with the git CLI as a
//! compare-and-swap. When someone else moved the branch, it fetches and
//! replays its unpushed changes on the new tip, so nothing is lost and
//! nobody's commits are overwritten.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, warn};

use super::credentials::Credentials;
use super::files::BranchFiles;
use super::message;
use super::observe::{self, Source};
use super::policy::{PushPolicy, backoff, next_push_limit, resync_batch_hold};
use super::push_slots::{PushEnd, PushSlots};
use super::queue::{CoalescingQueue, WorkItem};
use super::remote::{PushOutcome, Remote, RemoteError};
use super::repo::{CommitSpec, FileChange, Identity, LocalRepo, ObjectId, RepoError};
use crate::api::Reason;
use crate::route::{BranchKey, TargetKey};
use crate::shard::Fence;
use crate::telemetry::{BranchMetrics, Metrics};

/// Pending work beyond this many distinct entries makes the watches wait.
const INTAKE_LIMIT: usize = 10_000;
/// Capacity of the channel in front of the queue.
pub const CHANNEL_CAPACITY: usize = 1024;
/// Replays after a rejected push before backing off.
const MAX_REPLAYS: u32 = 5;
/// How long a resync may hold pushes back while its sweeps arrive.
const RESYNC_HOLD: Duration = Duration::from_secs(10);
/// Retry delay when the lease fence refused a push.
const FENCE_RETRY: Duration = Duration::from_millis(250);
/// Most commits one push carries. A backlog larger than a slow server can
/// take within the push timeout would otherwise be retried whole, forever;
/// the limit halves after each failed push and doubles back after successes.
const MAX_COMMITS_PER_PUSH: usize = 1_000;

/// Everything a worker needs; sent again to change it while running.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub key: BranchKey,
    /// The URL as the user wrote it (the key holds a normalised form).
    pub url: String,
    pub credentials: Credentials,
    pub push: PushPolicy,
    pub committer: Identity,
    pub repo_dir: PathBuf,
    /// (target, normalised base folder) of every target on this branch.
    pub folders: Vec<(TargetKey, String)>,
    pub metrics: Arc<Metrics>,
    /// Checked before every push: the branch's shard Lease must be held.
    pub fence: Fence,
    /// This replica's name, in every commit's `Replica:` trailer.
    pub replica: String,
    /// Pushes this replica runs at once, shared by all its workers.
    pub push_slots: PushSlots,
}

/// What the status writer needs to know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerState {
    /// The worker fetched the branch and processes events.
    pub active: bool,
    pub queued: usize,
    pub unpushed: usize,
    pub branch_exists: bool,
    pub remote_tip: Option<String>,
    pub last_checked: Option<SystemTime>,
    pub last_push: Option<SystemTime>,
    pub last_push_failed: bool,
    /// The last remote failure, cleared by the next success.
    pub error: Option<(Reason, String)>,
}

enum Control {
    Update(Box<WorkerSettings>),
    Drain(oneshot::Sender<()>),
}

/// A running worker.
pub struct WorkerHandle {
    pub queue: mpsc::Sender<WorkItem>,
    pub state: watch::Receiver<WorkerState>,
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

impl WorkerHandle {
    pub fn spawn(settings: WorkerSettings) -> Self {
        let (queue, intake) = mpsc::channel(CHANNEL_CAPACITY);
        let (control, control_rx) = mpsc::channel(8);
        let (state_tx, state) = watch::channel(WorkerState::default());
        let task = tokio::spawn(run(settings, intake, control_rx, state_tx));
        Self { queue, state, control, task }
    }

    /// Changes credentials, batching or the targets on this branch.
    pub async fn update(&self, settings: WorkerSettings) {
        let _ = self.control.send(Control::Update(Box::new(settings))).await;
    }

    /// Stops intake, commits what is queued, pushes, and ends the task.
    pub async fn drain(self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        if self.control.send(Control::Drain(done)).await.is_ok() {
            let _ = tokio::time::timeout(timeout, wait).await;
        }
        self.task.abort();
    }

    pub fn abort(&self) {
        self.task.abort();
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Errors of one worker step.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("local repository: {0}")]
    Repo(#[from] RepoError),
    #[error("cannot create the local repository folder: {0}")]
    DataDir(std::io::Error),
    #[error("the remote reported an invalid commit id {0:?}")]
    InvalidTip(String),
    #[error("branch {0:?} kept moving: {MAX_REPLAYS} replays on new tips were all overtaken by other pushes")]
    Contended(String),
    #[error("push held back: {0}")]
    Fenced(#[from] crate::shard::ownership::FenceError),
}

impl StepError {
    fn reason(&self) -> Reason {
        match self {
            Self::Remote(error) => error.reason(),
            Self::Repo(_) | Self::DataDir(_) | Self::InvalidTip(_) | Self::Contended(_) | Self::Fenced(_) => {
                Reason::GitOperationFailed
            }
        }
    }
}

/// Commits between two maintenance runs (`git gc --auto`).
const COMMITS_PER_MAINTENANCE: usize = 1_000;
/// Loose objects git may keep before it packs them (git's own default).
const LOOSE_OBJECT_THRESHOLD: u32 = 6_700;

/// Resync items committed together at most.
const MAX_RESYNC_BATCH: usize = 5_000;

/// A commit that is not on the remote yet, kept so it can be replayed.
struct Unpushed {
    commit: ObjectId,
    changes: Vec<FileChange>,
    message: String,
    source: Source,
    /// The interval counts from the commit, not the event: a worker that is
    /// behind must batch its backlog, not push after every commit.
    committed_at: Instant,
}

struct Worker {
    settings: WorkerSettings,
    remote: Remote,
    repo: Option<LocalRepo>,
    files: BranchFiles,
    local_tip: Option<ObjectId>,
    remote_tip: Option<ObjectId>,
    unpushed: Vec<Unpushed>,
    /// Commits the next push may carry (see MAX_COMMITS_PER_PUSH).
    push_limit: usize,
    queue: CoalescingQueue,
    /// (target, group, plural) whose resync sweep has not arrived yet: a
    /// new owner pushes only once it has reconciled (or after RESYNC_HOLD).
    resyncing: BTreeSet<(TargetKey, String, String)>,
    resync_until: Option<Instant>,
    /// Until the first resync is complete: a new owner publishes its
    /// reconciled branch at once instead of waiting for the push interval.
    first_resync: bool,
    push_now: bool,
    failures: u32,
    retry_at: Option<Instant>,
    commits_since_maintenance: usize,
    state: watch::Sender<WorkerState>,
    metrics: BranchMetrics,
}

async fn run(
    settings: WorkerSettings,
    mut intake: mpsc::Receiver<WorkItem>,
    mut control: mpsc::Receiver<Control>,
    state: watch::Sender<WorkerState>,
) {
    let Some(mut worker) = Worker::start(settings, &state, &mut control).await else { return };
    info!(branch = %worker.settings.key, files = worker.files.len(), "branch worker started");
    let mut draining: Option<oneshot::Sender<()>> = None;
    loop {
        // Settings before items: the controller sends an update before it
        // routes anything under it, so an item that is in the intake now
        // must not be handled with the old folders (a sweep of a target the
        // worker does not know yet would delete nothing).
        loop {
            match control.try_recv() {
                Ok(Control::Update(settings)) => worker.reconfigure(*settings),
                Ok(Control::Drain(done)) => draining = Some(done),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    draining.get_or_insert_with(|| oneshot::channel().0);
                    break;
                }
            }
        }
        while draining.is_none() && worker.queue.len() < INTAKE_LIMIT {
            match intake.try_recv() {
                Ok(item) => worker.intake(item),
                Err(_) => break,
            }
        }
        // A drain commits everything at once; otherwise listed objects may wait for their list.
        let hold = if draining.is_some() { None } else { worker.resync_hold(Instant::now()) };
        let next = if hold.is_some() { None } else { worker.queue.pop() };
        if let Some(item) = next {
            worker.process(item).await;
        } else if let Some(done) = draining.take() {
            // A capped backlog takes several pushes; stop at the first that fails.
            while !worker.unpushed.is_empty() {
                let before = worker.unpushed.len();
                worker.push_with_replay().await;
                if worker.unpushed.len() >= before {
                    break;
                }
            }
            let _ = done.send(());
            return;
        }
        worker.publish();
        let now = Instant::now();
        let due = worker.push_due(now);
        if due.is_some_and(|at| at <= now) {
            worker.push_with_replay().await;
            worker.publish();
            continue;
        }
        if !worker.queue.is_empty() && hold.is_none() {
            tokio::task::yield_now().await;
            continue;
        }
        let wake = due.unwrap_or(now + Duration::from_secs(3600));
        let wake = hold.map_or(wake, |until| until.min(wake));
        tokio::select! {
            item = intake.recv(), if draining.is_none() => match item {
                Some(item) => worker.intake(item),
                None => draining = Some(oneshot::channel().0),
            },
            message = control.recv() => match message {
                Some(Control::Update(settings)) => worker.reconfigure(*settings),
                Some(Control::Drain(done)) => draining = Some(done),
                None => draining = Some(oneshot::channel().0),
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

impl Worker {
    /// Opens the local repository and fetches the branch, retrying until it
    /// works (the status shows why not) or the worker is told to stop.
    async fn start(
        settings: WorkerSettings,
        state: &watch::Sender<WorkerState>,
        control: &mut mpsc::Receiver<Control>,
    ) -> Option<Self> {
        let mut settings = settings;
        let mut failures = 0;
        loop {
            match Self::try_start(settings.clone(), state.clone()).await {
                Ok(worker) => return Some(worker),
                Err(error) => {
                    warn!(branch = %settings.key, %error, "cannot start the branch worker; retrying");
                    state.send_modify(|s| {
                        s.active = false;
                        s.error = Some((error.reason(), error.to_string()));
                        s.last_checked = Some(SystemTime::now());
                    });
                }
            }
            let wait = backoff(failures, xxhash_rust::xxh3::xxh3_64(&settings.key.stable_bytes()));
            failures += 1;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                message = control.recv() => match message {
                    Some(Control::Update(new)) => settings = *new,
                    Some(Control::Drain(done)) => { let _ = done.send(()); return None; }
                    None => return None,
                },
            }
        }
    }

    async fn try_start(
        settings: WorkerSettings,
        state: watch::Sender<WorkerState>,
    ) -> Result<Self, StepError> {
        let remote = Remote::new(&settings.url, settings.credentials.clone())?;
        let dir = settings.repo_dir.clone();
        tokio::fs::create_dir_all(&dir).await.map_err(StepError::DataDir)?;
        let repo = tokio::task::spawn_blocking(move || LocalRepo::open_or_init(&dir))
            .await
            .expect("opening the repository does not panic")?;
        let mut worker = Self {
            metrics: settings.metrics.branch(remote.url(), &settings.key.branch),
            files: BranchFiles::new([], settings.folders.clone()),
            settings,
            remote,
            repo: Some(repo),
            local_tip: None,
            remote_tip: None,
            unpushed: Vec::new(),
            push_limit: MAX_COMMITS_PER_PUSH,
            queue: CoalescingQueue::default(),
            resyncing: BTreeSet::new(),
            resync_until: None,
            first_resync: true,
            push_now: false,
            failures: 0,
            retry_at: None,
            commits_since_maintenance: 0,
            state,
        };
        worker.fetch_and_reset().await?;
        worker.state.send_modify(|s| {
            s.active = true;
            s.error = None;
        });
        Ok(worker)
    }

    /// Runs `f` on the repository on a blocking thread.
    async fn with_repo<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&LocalRepo) -> Result<T, RepoError> + Send + 'static,
    ) -> Result<T, RepoError> {
        let repo = self.repo.take().expect("the repository is always returned");
        let joined = tokio::task::spawn_blocking(move || {
            let result = f(&repo);
            (repo, result)
        })
        .await;
        let (repo, result) = match joined {
            Ok(done) => done,
            // Only a runtime shutting down cancels it; this task ends with it.
            Err(join) if join.is_cancelled() => std::future::pending().await,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        self.repo = Some(repo);
        result
    }

    /// Makes the local view equal to the remote branch.
    async fn fetch_and_reset(&mut self) -> Result<(), StepError> {
        let git_dir = self.repo.as_ref().expect("repo").git_dir().to_owned();
        let tip = self.remote.fetch(&git_dir, &self.settings.key.branch).await?;
        let tip = match tip {
            Some(sha) => Some(ObjectId::from_hex(sha.as_bytes()).map_err(|_| StepError::InvalidTip(sha))?),
            None => None,
        };
        let files = match tip {
            Some(tip) => self.with_repo(move |repo| repo.list_files(tip, "")).await?,
            None => Vec::new(),
        };
        self.files = BranchFiles::new(files, self.settings.folders.clone());
        self.local_tip = tip;
        self.remote_tip = tip;
        self.state.send_modify(|s| {
            s.branch_exists = tip.is_some();
            s.remote_tip = tip.map(|t| t.to_string());
            s.last_checked = Some(SystemTime::now());
        });
        Ok(())
    }

    fn reconfigure(&mut self, settings: WorkerSettings) {
        self.files.set_folders(settings.folders.clone());
        if settings.credentials != self.settings.credentials || settings.url != self.settings.url {
            match Remote::new(&settings.url, settings.credentials.clone()) {
                Ok(remote) => self.remote = remote,
                Err(error) => {
                    warn!(branch = %settings.key, %error, "new credentials rejected; keeping the old ones")
                }
            }
        }
        self.settings = settings;
        // A settings change may fix what made pushes fail.
        self.retry_at = None;
    }

    /// Until when the listed objects at the head of the queue wait for more.
    fn resync_hold(&mut self, now: Instant) -> Option<Instant> {
        let (queued, list_ended) = (self.queue.len(), self.queue.has_barrier());
        match self.queue.peek()? {
            WorkItem::Write { meta, .. } | WorkItem::Delete { meta, .. } if meta.resync => {
                resync_batch_hold(meta.received_at, queued, MAX_RESYNC_BATCH, list_ended, now)
            }
            _ => None,
        }
    }

    /// Queues an item; a merge into a pending change is counted.
    fn intake(&mut self, item: WorkItem) {
        if self.queue.push(item) {
            self.metrics.coalesced();
        }
    }

    async fn process(&mut self, item: WorkItem) {
        let resync =
            matches!(&item, WorkItem::Write { meta, .. } | WorkItem::Delete { meta, .. } if meta.resync);
        let result = match item {
            item if resync => self.commit_resync_batch(item).await,
            WorkItem::Write { path, content, mut meta } => {
                let change = FileChange::Write { path, content: content.to_vec() };
                let source = Source::of(&mut meta);
                self.commit(vec![change], message::for_change(&meta), source).await
            }
            WorkItem::Delete { path, mut meta } => {
                let source = Source::of(&mut meta);
                self.commit(vec![FileChange::Delete { path }], message::for_change(&meta), source).await
            }
            WorkItem::Sweep { scope, live } => {
                self.resyncing.remove(&(scope.target.clone(), scope.group.clone(), scope.plural.clone()));
                let doomed = self.files.sweep(&scope, &live);
                let result =
                    self.delete_all(doomed, |objects| message::for_sweep(objects, &scope.target)).await;
                if self.first_resync && self.resyncing.is_empty() {
                    self.first_resync = false;
                    self.push_now = !self.unpushed.is_empty();
                }
                result
            }
            WorkItem::Retain { target, owned } => {
                // A Retain starts a resync of these resources; their sweeps end it.
                self.resyncing.extend(owned.iter().map(|(g, p)| (target.clone(), g.clone(), p.clone())));
                self.resync_until = Some(Instant::now() + RESYNC_HOLD);
                let doomed = self.files.retain(&target, &owned);
                self.delete_all(doomed, |objects| message::for_retain(objects, &target)).await
            }
        };
        if let Err(error) = result {
            // A local write failure is not the remote's fault; the next resync repairs it.
            warn!(branch = %self.settings.key, %error, "cannot commit a change");
        }
    }

    /// Commits `first` and the resync items queued right behind it as one
    /// commit: listing objects is reconciliation, not a change anyone made,
    /// and one commit per listed object would rewrite a large folder's tree
    /// once per object.
    async fn commit_resync_batch(&mut self, first: WorkItem) -> Result<(), StepError> {
        let is_resync = |item: &WorkItem| matches!(item, WorkItem::Write { meta, .. } | WorkItem::Delete { meta, .. } if meta.resync);
        let mut items = vec![first];
        while items.len() < MAX_RESYNC_BATCH {
            match self.queue.pop_if(is_resync) {
                Some(item) => items.push(item),
                None => break,
            }
        }
        let mut changes = Vec::with_capacity(items.len());
        let mut metas = Vec::with_capacity(items.len());
        // Only what differs from the branch counts, so the message is true.
        for item in &items {
            match item {
                WorkItem::Write { path, content, meta }
                    if self.files.get(path) != Some(&LocalRepo::blob_id(content)) =>
                {
                    changes.push(FileChange::Write { path: path.clone(), content: content.to_vec() });
                    metas.push(meta);
                }
                WorkItem::Delete { path, meta } if self.files.get(path).is_some() => {
                    changes.push(FileChange::Delete { path: path.clone() });
                    metas.push(meta);
                }
                _ => {}
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let source = Source::of_all(&metas);
        let message = if let [single] = metas.as_slice() {
            message::for_change(single)
        } else {
            message::for_resync(&metas)
        };
        self.commit(changes, message, source).await
    }

    async fn delete_all(
        &mut self,
        doomed: Vec<(String, crate::sanitize::DecodedPath)>,
        message: impl Fn(&[crate::sanitize::DecodedPath]) -> String,
    ) -> Result<(), StepError> {
        if doomed.is_empty() {
            return Ok(());
        }
        let (paths, objects): (Vec<String>, Vec<_>) = doomed.into_iter().unzip();
        let changes = paths.into_iter().map(|path| FileChange::Delete { path }).collect();
        self.commit(changes, message(&objects), Source::internal()).await
    }

    /// One commit for the given changes; changes that alter nothing are
    /// dropped, and none left means no commit.
    async fn commit(
        &mut self,
        changes: Vec<FileChange>,
        message: String,
        source: Source,
    ) -> Result<(), StepError> {
        let changes: Vec<FileChange> = changes
            .into_iter()
            .filter(|change| match change {
                FileChange::Write { path, content } => {
                    self.files.get(path) != Some(&LocalRepo::blob_id(content))
                }
                FileChange::Delete { path } => self.files.get(path).is_some(),
            })
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        let parent = self.local_tip;
        let committer = self.settings.committer.clone();
        let spec_message = format!(
            "{message}\nReplica: {}\n{}",
            self.settings.replica,
            message::trace_trailer(source.trace_id())
        );
        let spec_changes = changes.clone();
        let span = observe::commit_span(
            &self.settings.key,
            self.remote.url(),
            self.settings.fence.shard,
            &source,
            changes.len(),
        );
        let started = Instant::now();
        let commit = self
            .with_repo(move |repo| {
                let spec = CommitSpec {
                    message: &spec_message,
                    author: &committer,
                    committer: &committer,
                    time: None,
                };
                repo.commit(parent, &spec_changes, &spec)
            })
            .instrument(span.clone())
            .await;
        self.metrics.commit(started.elapsed(), commit.is_ok(), source.trace_id());
        let commit = commit?;
        if let Some(commit) = commit {
            self.metrics.committed_change(source.received_at.elapsed(), source.trace_id());
            span.record("sha", commit.to_string());
            self.local_tip = Some(commit);
            for change in &changes {
                match change {
                    FileChange::Write { path, content } => {
                        self.files.set(path, Some(LocalRepo::blob_id(content)))
                    }
                    FileChange::Delete { path } => self.files.set(path, None),
                }
            }
            self.unpushed.push(Unpushed { commit, changes, message, source, committed_at: Instant::now() });
        }
        Ok(())
    }

    fn push_due(&self, now: Instant) -> Option<Instant> {
        let oldest = self.unpushed.first().map(|u| u.committed_at);
        let due = self.settings.push.due(self.unpushed.len(), oldest, now)?;
        let due = if self.push_now { now } else { due };
        let due = self.retry_at.map_or(due, |retry| retry.max(due));
        match self.resync_until {
            Some(until) if !self.resyncing.is_empty() => Some(due.max(until)),
            _ => Some(due),
        }
    }

    /// Pushes; on a stale expectation fetches, replays and tries again.
    async fn push_with_replay(&mut self) {
        if self.unpushed.is_empty() {
            return;
        }
        let span = observe::push_span(
            &self.settings.key,
            self.remote.url(),
            self.settings.fence.shard,
            self.unpushed.len(),
            self.unpushed.iter().map(|u| &u.source),
        );
        let trace_id = crate::telemetry::trace::trace_id(&crate::telemetry::trace::context_of(&span));
        let mut replays = 0;
        let result = loop {
            let started = Instant::now();
            let outcome = self.push_once().instrument(span.clone()).await;
            let (result, reason) = match &outcome {
                Ok(PushOutcome::Pushed) => ("pushed", String::new()),
                Ok(PushOutcome::Stale) => ("stale", String::new()),
                // Held back before git ran: not a push failure.
                Err(StepError::Fenced(_)) => ("fenced", String::new()),
                Err(error) => ("failed", error.reason().as_str().to_owned()),
            };
            self.metrics.push(started.elapsed(), result, &reason, trace_id.clone());
            span.record("result", result);
            span.record("reason", reason.as_str());
            match outcome {
                Ok(PushOutcome::Pushed) => {
                    let count = self.push_limit.min(self.unpushed.len());
                    break Ok(self.unpushed.drain(..count).collect::<Vec<_>>());
                }
                Ok(PushOutcome::Stale) if replays < MAX_REPLAYS => {
                    replays += 1;
                    debug!(branch = %self.settings.key, "the branch moved; replaying on the new tip");
                    span.record("replays", replays);
                    if let Err(error) = self.replay().instrument(span.clone()).await {
                        break Err(error);
                    }
                }
                Ok(PushOutcome::Stale) => {
                    break Err(StepError::Contended(self.settings.key.branch.clone()));
                }
                Err(error) => break Err(error),
            }
        };
        match result {
            Ok(pushed) => {
                let count = pushed.len();
                let tip = pushed.last().map(|u| u.commit);
                span.record("sha", tip.map(|t| t.to_string()).unwrap_or_default());
                for unpushed in &pushed {
                    self.metrics
                        .pushed_change(unpushed.source.received_at.elapsed(), unpushed.source.trace_id());
                }
                // The rest of a capped backlog goes out at once.
                self.push_now = !self.unpushed.is_empty();
                self.push_limit = next_push_limit(self.push_limit, count, true, MAX_COMMITS_PER_PUSH);
                if let Some(tip) = tip {
                    self.after_push(tip, count).await;
                    self.remote_tip = Some(tip);
                }
                self.failures = 0;
                self.retry_at = None;
                debug!(branch = %self.settings.key, commits = count, left = self.unpushed.len(), "pushed");
                self.state.send_modify(|s| {
                    s.last_push = Some(SystemTime::now());
                    s.last_push_failed = false;
                    s.error = None;
                    s.branch_exists = true;
                    s.remote_tip = tip.map(|t| t.to_string());
                    s.last_checked = Some(SystemTime::now());
                });
            }
            Err(error @ StepError::Fenced(_)) => {
                // Not a git failure: the shard is being renewed late or was lost
                // (then the controller stops this worker).
                debug!(branch = %self.settings.key, %error, "push held back by the lease fence");
                self.retry_at = Some(Instant::now() + FENCE_RETRY);
            }
            Err(error) => {
                warn!(branch = %self.settings.key, %error, "push failed; will retry");
                let attempted = self.push_limit.min(self.unpushed.len());
                self.push_limit = next_push_limit(self.push_limit, attempted, false, MAX_COMMITS_PER_PUSH);
                let salt = xxhash_rust::xxh3::xxh3_64(&self.settings.key.stable_bytes());
                self.retry_at = Some(Instant::now() + backoff(self.failures, salt));
                self.failures += 1;
                self.state.send_modify(|s| {
                    s.last_push_failed = true;
                    s.error = Some((error.reason(), error.to_string()));
                    s.last_checked = Some(SystemTime::now());
                });
            }
        }
    }

    /// Keeps the pushed tip referenced (so gc never drops it) and packs
    /// loose objects now and then: every commit writes about six.
    async fn after_push(&mut self, tip: ObjectId, pushed: usize) {
        let refname = format!("refs/heads/{}", self.settings.key.branch);
        if let Err(error) = self.with_repo(move |repo| repo.set_ref(&refname, tip)).await {
            warn!(branch = %self.settings.key, %error, "cannot record the pushed tip locally");
        }
        self.commits_since_maintenance += pushed;
        if self.commits_since_maintenance >= COMMITS_PER_MAINTENANCE {
            self.commits_since_maintenance = 0;
            let git_dir = self.repo.as_ref().expect("repo").git_dir().to_owned();
            if let Err(error) = self.remote.maintain(&git_dir, LOOSE_OBJECT_THRESHOLD).await {
                warn!(branch = %self.settings.key, %error, "repository maintenance failed");
            }
        }
    }

    /// Pushes the oldest `push_limit` unpushed commits (their newest one).
    async fn push_once(&mut self) -> Result<PushOutcome, StepError> {
        let count = self.push_limit.min(self.unpushed.len());
        let Some(local) = count.checked_sub(1).map(|last| self.unpushed[last].commit) else {
            return Ok(PushOutcome::Pushed);
        };
        let git_dir = self.repo.as_ref().expect("repo").git_dir().to_owned();
        let expected = self.remote_tip.map(|t| t.to_string());
        // Queue here, not at the server: a git server past its ceiling makes
        // every push slow, and pushes killed by the timeout all start over.
        let slot = self.settings.push_slots.acquire().await;
        // The push must be over before the shard Lease could expire.
        let now = Instant::now();
        let bound = self.settings.fence.check(now)?;
        let outcome = self
            .remote
            .push_until(
                now + bound,
                &git_dir,
                &local.to_string(),
                &self.settings.key.branch,
                expected.as_deref(),
            )
            .await;
        slot.finish(match &outcome {
            Ok(_) => PushEnd::Answered,
            Err(RemoteError::Timeout { .. }) => PushEnd::TimedOut,
            Err(_) => PushEnd::Other,
        });
        Ok(outcome?)
    }

    /// Rebuilds the unpushed changes on top of the remote's new tip. The
    /// changes are "file X has bytes Y" or "file X is gone", so replaying
    /// them on any tip gives the state the cluster had.
    async fn replay(&mut self) -> Result<(), StepError> {
        let pending = std::mem::take(&mut self.unpushed);
        self.fetch_and_reset().await?;
        for Unpushed { changes, message, source, .. } in pending {
            self.commit(changes, message, source).await?;
        }
        Ok(())
    }

    fn publish(&self) {
        let (queued, unpushed) = (self.queue.len(), self.unpushed.len());
        self.metrics.queue(queued, self.queue.oldest().map(|at| at.elapsed()).unwrap_or_default());
        self.state.send_if_modified(|s| {
            let changed = s.queued != queued || s.unpushed != unpushed;
            s.queued = queued;
            s.unpushed = unpushed;
            changed
        });
    }
}
