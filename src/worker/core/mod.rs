//! The branch worker's decisions (pure): a state machine with no async, no
//! I/O and no clock reads. The shell (`worker::branch`) feeds it inputs
//! (work items, settings, and the results of the commands it ran) with the
//! time, and runs the commands it returns.
//!
//! What it promises, whatever fails:
//! - a change is dropped only once a push that carries it is acknowledged
//!   (a pushed reply, or the fetched tip containing its commit);
//! - pending state is bounded: at most `MAX_UNPUSHED` local commits, after
//!   which further changes wait in the intake queue, where changes to the
//!   same object coalesce (counted) instead of becoming new commits;
//! - a replay never puts a file back to a version older than the tip holds;
//! - every fetch compares the remote's files with what the worker knows the
//!   cluster holds and repairs the difference in one sync commit.

mod replay;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gix::ObjectId;

use super::files::BranchFiles;
use super::message;
use super::observe::Source;
use super::policy::{PushPolicy, backoff, next_push_limit, resync_batch_hold};
use super::queue::{CoalescingQueue, WorkItem};
use super::repo::LocalRepo;
use crate::api::Reason;
use crate::route::TargetKey;

/// Pending work beyond this many distinct entries makes the watches wait.
pub const INTAKE_LIMIT: usize = 10_000;
/// Local commits that may wait for a push. Past it, changes wait in the
/// intake queue, coalescing per object, until a push makes room.
pub const MAX_UNPUSHED: usize = 10_000;
/// Most commits one push carries; halves after a failed push, doubles back.
pub const MAX_COMMITS_PER_PUSH: usize = 1_000;
/// Identical rejections in a row after which a branch is quarantined.
pub const QUARANTINE_AFTER: u32 = 3;
/// Replays on new tips before backing off.
const MAX_REPLAYS: u32 = 5;
/// How long a resync may hold pushes back while its sweeps arrive.
const RESYNC_HOLD: Duration = Duration::from_secs(10);
/// Retry delay when the lease fence refused a push.
const FENCE_RETRY: Duration = Duration::from_millis(250);
/// Resync items committed together at most.
const MAX_RESYNC_BATCH: usize = 5_000;
/// Commits between two maintenance runs (`git gc --auto`).
const COMMITS_PER_MAINTENANCE: usize = 1_000;
/// Default interval between two comparisons of the remote with the cluster.
pub const DEFAULT_AUDIT_INTERVAL: Duration = Duration::from_secs(600);

/// A file's new content: bytes from the cluster, a blob the local
/// repository already holds (a repair), or nothing (deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    Bytes(Arc<[u8]>),
    Blob(ObjectId),
    Gone,
}

impl Content {
    pub fn blob_id(&self) -> Option<ObjectId> {
        match self {
            Self::Bytes(bytes) => Some(LocalRepo::blob_id(bytes)),
            Self::Blob(id) => Some(*id),
            Self::Gone => None,
        }
    }
}

/// One file of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub content: Content,
}

/// What the core needs of the worker's settings.
#[derive(Clone, Debug)]
pub struct CoreSettings {
    pub push: PushPolicy,
    /// (target, normalised base folder) of every target on this branch.
    pub folders: Vec<(TargetKey, String)>,
    /// This replica's name, in every commit's `Replica:` trailer.
    pub replica: String,
    /// Spreads retries and audits of branches that failed together.
    pub salt: u64,
    pub audit_interval: Duration,
}

/// The time, as the shell read it: monotonic for decisions, wall for status.
#[derive(Clone, Copy, Debug)]
pub struct At {
    pub now: Instant,
    pub wall: SystemTime,
}

/// Why a local commit failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitFailure {
    /// The change can never be written as asked (a file where a folder is).
    pub conflict: bool,
    pub message: String,
}

/// What became of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushReply {
    /// The remote branch now points at the pushed commit.
    Pushed,
    /// The remote branch was not at the expected tip.
    Stale,
    /// The server refused the update (a hook, a protected branch, a size limit).
    Rejected(String),
    /// No answer, or an error: the push may or may not have been applied.
    Failed { reason: Reason, message: String },
    /// Held back before git ran: the shard lease is not (or no longer) held.
    Fenced,
}

/// A fetched branch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    pub tip: Option<ObjectId>,
    /// Every file of the tip (path → blob id).
    pub files: Vec<(String, ObjectId)>,
    /// The newest of the commits the fetch was asked about that the tip
    /// contains (the tip itself or an ancestor), when known.
    pub contains: Option<ObjectId>,
}

/// Everything the core reacts to.
// Inputs live for one call; boxing the common one would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Input {
    Item(WorkItem),
    Settings(CoreSettings),
    /// Commit and push what is pending, then stop.
    Drain,
    /// The result of the one outstanding `Command::Commit`: the new
    /// commit, or `None` when the tree did not change.
    Committed(Result<Option<ObjectId>, CommitFailure>),
    /// The result of the one outstanding `Command::Push`.
    Pushed(PushReply),
    /// The result of the one outstanding `Command::Fetch`.
    Fetched(Result<Fetched, (Reason, String)>),
    /// Time passed (a wake-up the core asked for, or any other).
    Tick,
}

/// What the shell must do. At most one commit, and one push or fetch, are
/// outstanding at a time; a push and a commit may run together.
#[derive(Clone, Debug)]
pub enum Command {
    /// Fetch the branch; answer with `Input::Fetched`, saying which of
    /// `known` (newest last) the tip contains. `known` descend from `since`.
    Fetch { known: Vec<ObjectId>, since: Option<ObjectId> },
    /// Write one commit on `parent`; answer with `Input::Committed`.
    Commit { parent: Option<ObjectId>, changes: Vec<Change>, message: String, source: Source },
    /// Compare-and-swap push of `local` over `expected`; answer with `Input::Pushed`.
    Push { local: ObjectId, expected: Option<ObjectId>, commits: usize, sources: Vec<Source> },
    /// Keep `tip` referenced locally (it was pushed), so gc never drops it.
    KeepTip(ObjectId),
    /// Pack loose objects.
    Maintain,
    /// For metrics and logs only.
    Note(Note),
    /// The drain is over: end the task.
    Done,
}

/// Facts for metrics and logs.
#[derive(Clone, Debug)]
pub enum Note {
    /// A change was merged into a pending one for the same object.
    Coalesced,
    /// Commits acknowledged by the remote.
    Acked { sources: Vec<Source> },
    /// Files on the remote differed from the cluster and were repaired.
    Drift { paths: usize },
    /// A change that can never be written (a path conflict), with why.
    Unwritable { path: String, message: String },
}

/// Where the worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Fetching the branch for the first time (retrying with back-off).
    Starting,
    /// Committing and pushing as work arrives.
    Running,
    /// Pushes are refused by the server; commits go on within the cap.
    Quarantined,
    /// Committing and pushing what is pending, then done.
    Draining,
    /// Done was returned.
    Stopped,
}

/// What the remote side is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RemoteOp {
    Idle,
    Pushing { commits: usize },
    Fetching(FetchPurpose),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FetchPurpose {
    Start,
    /// The branch moved (or may have): rebuild the pending commits on it.
    Rebase,
    /// Anti-entropy: compare and repair.
    Audit,
}

/// A local commit that no acknowledged push carries yet.
#[derive(Clone, Debug)]
struct LocalCommit {
    id: ObjectId,
    changes: Vec<Change>,
    message: String,
    source: Source,
    committed_at: Instant,
}

/// A commit to be written (or written again after a failure or a rebase).
#[derive(Clone, Debug)]
struct Draft {
    changes: Vec<Change>,
    message: String,
    source: Source,
    /// Failed local writes of this draft so far.
    failures: u32,
    /// Written again on a fetched tip (a replay or a repair).
    rebuilt: bool,
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
    /// The server refuses pushes (`Synced=False`, `PushRejected`).
    pub quarantined: Option<String>,
    /// Local commits reached `MAX_UNPUSHED`; changes coalesce in the queue.
    pub capped: bool,
    /// The last local commit failure, cleared by the next success.
    pub local_error: Option<String>,
}

/// The branch worker's state machine.
pub struct BranchCore {
    settings: CoreSettings,
    phase: Phase,
    /// Told to drain: commit and push what is pending, then stop.
    draining: bool,
    queue: CoalescingQueue,
    /// Files of the local tip: the remote's as last seen, plus the chain.
    files: BranchFiles,
    local_tip: Option<ObjectId>,
    /// The remote tip as last pushed or fetched.
    remote_tip: Option<ObjectId>,
    chain: VecDeque<LocalCommit>,
    /// Commits to write before anything from the queue: a failed write, or
    /// the chain being rebuilt on a new tip.
    drafts: VecDeque<Draft>,
    commit_in_flight: Option<Draft>,
    commit_retry_at: Option<Instant>,
    remote_op: RemoteOp,
    /// The branch may have moved: fetch and rebuild before the next push.
    rebase_needed: bool,
    replays: u32,
    push_limit: usize,
    push_now: bool,
    failures: u32,
    retry_at: Option<Instant>,
    rejection: Option<(String, u32)>,
    audit_at: Option<Instant>,
    /// (target, group, plural) whose resync sweep has not arrived yet.
    resyncing: BTreeSet<(TargetKey, String, String)>,
    resync_until: Option<Instant>,
    first_resync: bool,
    commits_since_maintenance: usize,
    coalesced: u64,
    state: WorkerState,
    /// `MAX_UNPUSHED`, smaller in the simulation to reach it often.
    max_unpushed: usize,
    #[cfg(test)]
    sabotage: sim::Sabotage,
}

impl BranchCore {
    pub fn new(settings: CoreSettings, at: At) -> Self {
        let first_audit = at.now + audit_spread(&settings);
        Self {
            files: BranchFiles::new([], settings.folders.clone()),
            settings,
            phase: Phase::Starting,
            draining: false,
            queue: CoalescingQueue::default(),
            local_tip: None,
            remote_tip: None,
            chain: VecDeque::new(),
            drafts: VecDeque::new(),
            commit_in_flight: None,
            commit_retry_at: None,
            remote_op: RemoteOp::Idle,
            rebase_needed: false,
            replays: 0,
            push_limit: MAX_COMMITS_PER_PUSH,
            push_now: false,
            failures: 0,
            retry_at: None,
            rejection: None,
            audit_at: Some(first_audit),
            resyncing: BTreeSet::new(),
            resync_until: None,
            first_resync: true,
            commits_since_maintenance: 0,
            coalesced: 0,
            state: WorkerState::default(),
            max_unpushed: MAX_UNPUSHED,
            #[cfg(test)]
            sabotage: sim::Sabotage::None,
        }
    }

    pub fn phase(&self) -> Phase {
        match self.phase {
            Phase::Running | Phase::Quarantined if self.draining => Phase::Draining,
            phase => phase,
        }
    }

    pub fn state(&self) -> &WorkerState {
        &self.state
    }

    /// Files of the local tip (for logs).
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Whether the shell should read more work items: backpressure past
    /// `INTAKE_LIMIT`, except while draining (everything left is taken).
    pub fn wants_items(&self) -> bool {
        self.draining || self.queue.len() < INTAKE_LIMIT
    }

    /// Changes merged into pending ones so far.
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }

    /// The oldest queued change's arrival, for the queue-age metric.
    pub fn oldest_queued(&self) -> Option<Instant> {
        self.queue.oldest()
    }

    /// Nothing is queued, being written or waiting for a push.
    pub fn is_settled(&self) -> bool {
        self.queue.is_empty()
            && self.drafts.is_empty()
            && self.commit_in_flight.is_none()
            && self.chain.is_empty()
            && self.remote_op == RemoteOp::Idle
            && !self.rebase_needed
    }

    /// Feeds one input; returns what to do next.
    pub fn handle(&mut self, input: Input, at: At) -> Vec<Command> {
        let mut out = Vec::new();
        if self.phase == Phase::Stopped {
            return out;
        }
        match input {
            Input::Item(item) => self.intake(item, &mut out),
            Input::Settings(settings) => self.reconfigure(settings),
            Input::Drain => self.draining = true,
            Input::Committed(result) => self.on_committed(result, at, &mut out),
            Input::Pushed(reply) => self.on_pushed(reply, at, &mut out),
            Input::Fetched(result) => self.on_fetched(result, at, &mut out),
            Input::Tick => {}
        }
        self.step(at, &mut out);
        self.refresh_state();
        out
    }

    /// When the core wants a `Tick` at the latest.
    pub fn wake_at(&self, now: Instant) -> Option<Instant> {
        if self.phase == Phase::Stopped {
            return None;
        }
        // Only times at which `step` can act: a wake-up it cannot act on
        // would spin the shell.
        let mut wake: Vec<Instant> = Vec::new();
        let can_commit = self.commit_in_flight.is_none() && self.phase != Phase::Starting && !self.fetching();
        if can_commit {
            if let Some(at) = self.commit_retry_at {
                wake.push(at);
            } else if let Some(until) = self.resync_hold(now) {
                wake.push(until);
            }
        }
        if self.remote_op == RemoteOp::Idle {
            if self.phase == Phase::Starting || self.rebase_needed {
                if self.phase == Phase::Starting || self.commit_in_flight.is_none() {
                    wake.extend(self.retry_at);
                }
            } else {
                wake.extend(self.push_due(now));
                if self.commit_in_flight.is_none() && !self.draining {
                    let retry = self.retry_at.unwrap_or(now);
                    wake.extend(self.audit_at.map(|audit| audit.max(retry)));
                }
            }
        }
        wake.into_iter().min()
    }

    fn intake(&mut self, item: WorkItem, out: &mut Vec<Command>) {
        if self.queue.push(item) {
            self.coalesced += 1;
            out.push(Command::Note(Note::Coalesced));
        }
    }

    fn reconfigure(&mut self, settings: CoreSettings) {
        self.files.set_folders(settings.folders.clone());
        self.settings = settings;
        // A settings change may fix what made pushes fail.
        self.retry_at = None;
    }

    /// Starts whatever the state allows.
    fn step(&mut self, at: At, out: &mut Vec<Command>) {
        let now = at.now;
        if self.phase == Phase::Starting
            && self.draining
            && self.queue.is_empty()
            && self.remote_op == RemoteOp::Idle
        {
            // Never started and nothing to write: nothing can be lost.
            self.phase = Phase::Stopped;
            out.push(Command::Done);
            return;
        }
        if self.remote_op == RemoteOp::Idle && self.retry_due(now) {
            if self.phase == Phase::Starting {
                self.fetch(FetchPurpose::Start, out);
            } else if self.rebase_needed && self.commit_in_flight.is_none() {
                self.fetch(FetchPurpose::Rebase, out);
            }
        }
        if self.phase != Phase::Starting && self.commit_in_flight.is_none() && !self.fetching() {
            self.start_commit(now, out);
        }
        if self.phase == Phase::Starting || self.remote_op != RemoteOp::Idle || self.rebase_needed {
            return;
        }
        if self.push_due(now).is_some_and(|due| due <= now) {
            self.push(out);
        } else if self.audit_at.is_some_and(|due| due <= now)
            && self.retry_due(now)
            && self.commit_in_flight.is_none()
            && !self.draining
        {
            self.audit_at = Some(now + self.settings.audit_interval);
            self.fetch(FetchPurpose::Audit, out);
        } else if self.draining && self.drain_done() {
            self.phase = Phase::Stopped;
            out.push(Command::Done);
        }
    }

    fn drain_done(&self) -> bool {
        self.queue.is_empty()
            && self.drafts.is_empty()
            && self.commit_in_flight.is_none()
            && self.chain.is_empty()
    }

    fn fetching(&self) -> bool {
        matches!(self.remote_op, RemoteOp::Fetching(_))
    }

    fn retry_due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| at <= now)
    }

    fn fetch(&mut self, purpose: FetchPurpose, out: &mut Vec<Command>) {
        self.remote_op = RemoteOp::Fetching(purpose);
        // A push whose answer was lost may have carried any of them.
        let known = self.chain.iter().map(|c| c.id).collect();
        out.push(Command::Fetch { known, since: self.remote_tip });
    }

    /// Until when listed objects at the head of the queue wait for more.
    fn resync_hold(&self, now: Instant) -> Option<Instant> {
        if self.draining || !self.drafts.is_empty() {
            return None;
        }
        let (queued, list_ended) = (self.queue.len(), self.queue.has_barrier());
        match self.queue.front()? {
            WorkItem::Write { meta, .. } | WorkItem::Delete { meta, .. } if meta.resync => {
                resync_batch_hold(meta.received_at, queued, MAX_RESYNC_BATCH, list_ended, now)
            }
            _ => None,
        }
    }

    /// Writes the next draft, or the next change from the queue.
    fn start_commit(&mut self, now: Instant, out: &mut Vec<Command>) {
        if self.commit_retry_at.is_some_and(|at| at > now) {
            return;
        }
        loop {
            let draft = match self.drafts.pop_front() {
                Some(draft) => Some(draft),
                // Past the cap, changes wait (and coalesce) in the queue.
                None if self.chain.len() >= self.max_unpushed => None,
                None if self.resync_hold(now).is_some() => None,
                None => match self.queue.pop() {
                    Some(item) => self.draft_from(item, now),
                    None => return,
                },
            };
            let Some(draft) = draft else { return };
            let changes = self.effective(&draft.changes);
            if changes.is_empty() {
                continue;
            }
            out.push(Command::Commit {
                parent: self.local_tip,
                changes,
                message: draft.message.clone(),
                source: draft.source.clone(),
            });
            self.commit_in_flight = Some(draft);
            return;
        }
    }

    /// The changes that alter the local tip.
    fn effective(&self, changes: &[Change]) -> Vec<Change> {
        changes.iter().filter(|c| self.files.get(&c.path).copied() != c.content.blob_id()).cloned().collect()
    }

    /// Turns a queued item into a draft (None: it changes nothing).
    fn draft_from(&mut self, item: WorkItem, now: Instant) -> Option<Draft> {
        let resync =
            matches!(&item, WorkItem::Write { meta, .. } | WorkItem::Delete { meta, .. } if meta.resync);
        if resync {
            return self.resync_draft(item);
        }
        let (changes, message, source) = match item {
            WorkItem::Write { path, content, mut meta } => {
                let source = Source::of(&mut meta);
                (vec![Change { path, content: Content::Bytes(content) }], message::for_change(&meta), source)
            }
            WorkItem::Delete { path, mut meta } => {
                let source = Source::of(&mut meta);
                (vec![Change { path, content: Content::Gone }], message::for_change(&meta), source)
            }
            WorkItem::Sweep { scope, live } => {
                self.resyncing.remove(&(scope.target.clone(), scope.group.clone(), scope.plural.clone()));
                let doomed = self.files.sweep(&scope, &live);
                if self.first_resync && self.resyncing.is_empty() {
                    // A new owner publishes its reconciled branch at once.
                    self.first_resync = false;
                    self.push_now = !self.chain.is_empty() || !doomed.is_empty();
                }
                let (paths, objects): (Vec<String>, Vec<_>) = doomed.into_iter().unzip();
                (gone(paths), message::for_sweep(&objects, &scope.target), Source::internal_at(now))
            }
            WorkItem::Retain { target, owned } => {
                // A Retain starts a resync of these resources; their sweeps end it.
                self.resyncing.extend(owned.iter().map(|(g, p)| (target.clone(), g.clone(), p.clone())));
                self.resync_until = Some(now + RESYNC_HOLD);
                let doomed = self.files.retain(&target, &owned);
                let (paths, objects): (Vec<String>, Vec<_>) = doomed.into_iter().unzip();
                (gone(paths), message::for_retain(&objects, &target), Source::internal_at(now))
            }
        };
        Some(self.draft(changes, message, source))
    }

    /// `first` and the resync items queued right behind it, as one commit:
    /// listing objects is reconciliation, not a change anyone made.
    fn resync_draft(&mut self, first: WorkItem) -> Option<Draft> {
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
            let (path, content, meta) = match item {
                WorkItem::Write { path, content, meta } => (path, Content::Bytes(content.clone()), meta),
                WorkItem::Delete { path, meta } => (path, Content::Gone, meta),
                _ => continue,
            };
            if self.files.get(path).copied() != content.blob_id() {
                changes.push(Change { path: path.clone(), content });
                metas.push(meta);
            }
        }
        if changes.is_empty() {
            return None;
        }
        let source = Source::of_all(&metas);
        let message = if let [single] = metas.as_slice() {
            message::for_change(single)
        } else {
            message::for_resync(&metas)
        };
        Some(self.draft(changes, message, source))
    }

    fn draft(&self, changes: Vec<Change>, message: String, source: Source) -> Draft {
        let message = format!(
            "{message}\nReplica: {}\n{}",
            self.settings.replica,
            message::trace_trailer(source.trace_id())
        );
        Draft { changes, message, source, failures: 0, rebuilt: false }
    }

    fn on_committed(
        &mut self,
        result: Result<Option<ObjectId>, CommitFailure>,
        at: At,
        out: &mut Vec<Command>,
    ) {
        let Some(mut draft) = self.commit_in_flight.take() else { return };
        match result {
            Ok(id) => {
                self.commit_retry_at = None;
                self.state.local_error = None;
                let changes = self.effective(&draft.changes);
                for change in &changes {
                    self.files.set(&change.path, change.content.blob_id());
                }
                // The tree already held it: the view was behind, nothing to push.
                let Some(id) = id else { return };
                self.local_tip = Some(id);
                self.chain.push_back(LocalCommit {
                    id,
                    changes,
                    message: draft.message,
                    source: draft.source,
                    committed_at: at.now,
                });
            }
            Err(failure) if failure.conflict && draft.changes.len() > 1 => {
                // Find the one that cannot be written; the others must not wait for it.
                let second = draft.changes.split_off(draft.changes.len() / 2);
                let half = |changes| Draft { changes, failures: 0, ..draft.clone() };
                self.drafts.push_front(half(second));
                self.drafts.push_front(half(draft.changes.clone()));
            }
            Err(failure) if failure.conflict => {
                let path = draft.changes.first().map(|c| c.path.clone()).unwrap_or_default();
                self.state.local_error = Some(format!("cannot write {path}: {}", failure.message));
                out.push(Command::Note(Note::Unwritable { path, message: failure.message }));
            }
            Err(failure) => {
                // Disk full, I/O: keep it first in line and try again later.
                self.state.local_error = Some(failure.message);
                self.commit_retry_at = Some(at.now + backoff(draft.failures, self.settings.salt));
                draft.failures += 1;
                self.drafts.push_front(draft);
            }
        }
    }

    /// When the next push is due, if anything waits for one.
    fn push_due(&self, now: Instant) -> Option<Instant> {
        // Commits being written again on a fetched tip go out together.
        let rebuilding = self.drafts.iter().chain(&self.commit_in_flight).any(|d| d.rebuilt);
        if rebuilding && self.commit_retry_at.is_none() {
            return None;
        }
        let oldest = self.chain.front().map(|c| c.committed_at);
        let due = self.settings.push.due(self.chain.len(), oldest, now)?;
        let due = if self.push_now || self.draining { now } else { due };
        let due = self.retry_at.map_or(due, |retry| retry.max(due));
        match self.resync_until {
            Some(until) if !self.resyncing.is_empty() && !self.draining => Some(due.max(until)),
            _ => Some(due),
        }
    }

    fn push(&mut self, out: &mut Vec<Command>) {
        let commits = self.push_limit.min(self.chain.len());
        let Some(last) = commits.checked_sub(1) else { return };
        let local = self.chain[last].id;
        let sources = self.chain.iter().take(commits).map(|c| c.source.clone()).collect();
        // What waited to go out at once is in this push.
        self.push_now = false;
        self.remote_op = RemoteOp::Pushing { commits };
        out.push(Command::Push { local, expected: self.remote_tip, commits, sources });
    }

    fn on_pushed(&mut self, reply: PushReply, at: At, out: &mut Vec<Command>) {
        let RemoteOp::Pushing { commits } = self.remote_op else { return };
        self.remote_op = RemoteOp::Idle;
        match reply {
            PushReply::Pushed => {
                let tip = self.chain[commits - 1].id;
                self.acknowledge(commits, out);
                self.remote_tip = Some(tip);
                self.push_limit = next_push_limit(self.push_limit, commits, true, MAX_COMMITS_PER_PUSH);
                // The rest of a capped backlog goes out at once.
                self.push_now = !self.chain.is_empty();
                self.remote_ok(at);
                self.replays = 0;
                self.rejection = None;
                if self.phase == Phase::Quarantined {
                    self.phase = Phase::Running;
                }
                self.state.last_push = Some(at.wall);
                self.state.last_push_failed = false;
                self.state.branch_exists = true;
                self.state.remote_tip = Some(tip.to_string());
                out.push(Command::KeepTip(tip));
                self.commits_since_maintenance += commits;
                if self.commits_since_maintenance >= COMMITS_PER_MAINTENANCE {
                    self.commits_since_maintenance = 0;
                    out.push(Command::Maintain);
                }
            }
            PushReply::Stale => {
                self.replays += 1;
                self.rebase_needed = true;
                if self.replays > MAX_REPLAYS {
                    self.replays = 0;
                    let message = format!(
                        "branch {:?} kept moving: {MAX_REPLAYS} replays on new tips were all overtaken by other pushes",
                        self.branch_label()
                    );
                    self.remote_failed(Reason::GitOperationFailed, message, commits, at);
                }
            }
            PushReply::Rejected(message) => {
                let count = match &self.rejection {
                    Some((last, count)) if *last == message => count + 1,
                    _ => 1,
                };
                self.rejection = Some((message.clone(), count));
                if count >= QUARANTINE_AFTER && self.phase == Phase::Running {
                    self.phase = Phase::Quarantined;
                }
                // The ref did not move, so nothing was applied: no rebase.
                self.remote_failed(Reason::GitOperationFailed, message, commits, at);
            }
            PushReply::Failed { reason, message } => {
                // It may have been applied: the next push or fetch finds out,
                // and recognises our own commits on the remote.
                self.remote_failed(reason, message, commits, at);
            }
            PushReply::Fenced => {
                self.retry_at = Some(at.now + FENCE_RETRY);
            }
        }
    }

    fn branch_label(&self) -> String {
        self.settings.folders.first().map(|(t, _)| t.to_string()).unwrap_or_default()
    }

    /// Drops the first `count` commits: a push carrying them was acknowledged.
    fn acknowledge(&mut self, count: usize, out: &mut Vec<Command>) {
        let sources = self.chain.drain(..count).map(|c| c.source).collect();
        out.push(Command::Note(Note::Acked { sources }));
    }

    fn remote_ok(&mut self, at: At) {
        self.failures = 0;
        self.retry_at = None;
        self.state.error = None;
        self.state.last_checked = Some(at.wall);
    }

    fn remote_failed(&mut self, reason: Reason, message: String, attempted: usize, at: At) {
        self.push_limit = next_push_limit(self.push_limit, attempted.max(1), false, MAX_COMMITS_PER_PUSH);
        self.retry_at = Some(at.now + backoff(self.failures, self.settings.salt));
        self.failures += 1;
        self.state.last_push_failed = true;
        self.state.error = Some((reason, message));
        self.state.last_checked = Some(at.wall);
    }

    fn on_fetched(&mut self, result: Result<Fetched, (Reason, String)>, at: At, out: &mut Vec<Command>) {
        let RemoteOp::Fetching(purpose) = self.remote_op else { return };
        self.remote_op = RemoteOp::Idle;
        let fetched = match result {
            Ok(fetched) => fetched,
            Err((reason, message)) => {
                #[cfg(test)]
                if self.sabotage == sim::Sabotage::DropPendingOnFetchError && purpose == FetchPurpose::Rebase
                {
                    self.chain.clear();
                }
                // Nothing pending is touched: the chain stays as it was.
                self.retry_at = Some(at.now + backoff(self.failures, self.settings.salt));
                self.failures += 1;
                self.state.error = Some((reason, message));
                self.state.last_checked = Some(at.wall);
                return;
            }
        };
        if purpose == FetchPurpose::Start {
            self.phase = Phase::Running;
            self.state.active = true;
        }
        #[cfg(test)]
        let fetched = match self.sabotage {
            sim::Sabotage::IgnoreContained => Fetched { contains: None, ..fetched },
            _ => fetched,
        };
        if let Some(contained) = fetched.contains
            && let Some(index) = self.chain.iter().position(|c| c.id == contained)
        {
            self.acknowledge(index + 1, out);
        }
        let start = purpose == FetchPurpose::Start;
        let plan =
            replay::plan(&self.files, self.chain.iter().map(|c| c.changes.as_slice()), &fetched.files, start);
        if plan.drift > 0 {
            out.push(Command::Note(Note::Drift { paths: plan.drift }));
        }
        // The chain's commits are not on the remote: write them again on its tip.
        let rebuilt: Vec<Draft> = plan
            .commits
            .into_iter()
            .zip(self.chain.drain(..))
            .filter(|(changes, _)| !changes.is_empty())
            .map(|(changes, c)| Draft {
                changes,
                message: c.message,
                source: c.source,
                failures: 0,
                rebuilt: true,
            })
            .collect();
        let mut drafts: VecDeque<Draft> = rebuilt.into();
        if !plan.repair.is_empty() {
            let message = message::for_repair(plan.repair.len());
            let repair = self.draft(plan.repair, message, Source::internal_at(at.now));
            drafts.push_back(Draft { rebuilt: true, ..repair });
        }
        drafts.extend(self.drafts.drain(..));
        self.drafts = drafts;
        self.files = BranchFiles::new(fetched.files, self.settings.folders.clone());
        self.local_tip = fetched.tip;
        self.remote_tip = fetched.tip;
        self.rebase_needed = false;
        self.remote_ok(at);
        self.state.branch_exists = fetched.tip.is_some();
        self.state.remote_tip = fetched.tip.map(|t| t.to_string());
        if !self.drafts.is_empty() && purpose == FetchPurpose::Rebase {
            self.push_now = true;
        }
    }

    fn refresh_state(&mut self) {
        self.state.queued = self.queue.len() + self.drafts.iter().map(|d| d.changes.len()).sum::<usize>();
        self.state.unpushed = self.chain.len();
        self.state.capped = self.chain.len() >= self.max_unpushed;
        self.state.quarantined = match (&self.rejection, self.phase) {
            (Some((message, _)), Phase::Quarantined) => Some(message.clone()),
            _ => None,
        };
    }
}

fn gone(paths: Vec<String>) -> Vec<Change> {
    paths.into_iter().map(|path| Change { path, content: Content::Gone }).collect()
}

/// The first audit of a branch comes somewhere in its interval, so that
/// branches started together do not all fetch at once.
fn audit_spread(settings: &CoreSettings) -> Duration {
    let interval = settings.audit_interval.as_millis().max(1) as u64;
    Duration::from_millis(settings.salt % interval)
}
