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
//! - a replay never puts a file back to a version older than the tip holds,
//!   nor does a takeover from standby (it drops what the old owner wrote);
//! - every fetch compares the remote's files with what the worker knows the
//!   cluster holds and repairs the difference in one sync commit.

mod local;
mod remote;
mod replay;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
mod types;

pub use types::*;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use gix::ObjectId;

use super::files::BranchFiles;
use super::observe::Source;
use super::queue::{CoalescingQueue, WorkItem};
use super::repo::Identity;
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
/// How often a standby asks what the owner already pushed, to drop it:
/// a successor stands by for as long as the owner lives, and must stay small.
pub const STANDBY_TRIM: Duration = Duration::from_secs(30);
/// A standby holding this many local commits trims at once.
const TRIM_AT_COMMITS: usize = 1_000;
/// Commits between two maintenance runs (`git gc --auto`).
const COMMITS_PER_MAINTENANCE: usize = 1_000;
/// Fetches between two maintenance runs: each leaves a pack, and git
/// consolidates them past `remote::PACK_LIMIT`.
const FETCHES_PER_MAINTENANCE: usize = 8;
/// Default interval between two comparisons of the remote with the cluster.
pub const DEFAULT_AUDIT_INTERVAL: Duration = Duration::from_secs(600);

/// What the remote side is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RemoteOp {
    Idle,
    /// `left_behind`: the chain held more than the push carries (it was
    /// capped), so the rest goes out as soon as it is answered.
    Pushing {
        commits: usize,
        left_behind: bool,
    },
    Fetching(FetchPurpose),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FetchPurpose {
    Start,
    /// The branch moved (or may have): rebuild the pending commits on it.
    Rebase,
    /// Anti-entropy: compare and repair.
    Audit,
    /// On standby: drop what the owner already pushed (see `STANDBY_TRIM`).
    Trim,
}

/// Where a takeover from a standby is: the branch moved under the previous
/// owner, so the first fetch after it decides what is still to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takeover {
    No,
    /// Standby ended; a fetch that starts from now on is the takeover fetch.
    Due,
    Fetching,
}

/// A local commit that no acknowledged push carries yet.
#[derive(Clone, Debug)]
struct LocalCommit {
    id: ObjectId,
    changes: Vec<Change>,
    message: String,
    source: Source,
    committed_at: Instant,
    author: Option<Identity>,
    marker: bool,
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
    /// Who made the change, when one known field manager did; None: the
    /// operator (the shell's committer).
    author: Option<Identity>,
    /// A commit that changes no file and says so in its message (a
    /// `prune: Never` target's delete): written even though the tree
    /// stays the same.
    marker: bool,
}

/// The branch worker's state machine.
pub struct BranchCore {
    settings: CoreSettings,
    phase: Phase,
    /// Told to drain: commit and push what is pending, then stop.
    draining: bool,
    /// The drain is a handover's: once it is over, stand by instead of stopping.
    handing_over: bool,
    /// When the drain began: its first push waits a moment for the commits
    /// of what is queued (see `remote::DRAIN_GATHER`).
    draining_since: Option<Instant>,
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
    takeover: Takeover,
    /// The files the standby fetched (empty unless on standby).
    standby_base: HashMap<String, ObjectId>,
    /// Where a history of what the owner wrote may start, oldest first,
    /// each with the local time after which every change the owner
    /// received was written after it: the standby's start (a committer
    /// time), then each tip a trim fetched. A takeover or trim asks from
    /// the newest mark before its oldest pending change arrived.
    standby_marks: VecDeque<(HistoryFrom, Instant)>,
    /// When the standby trims next.
    trim_at: Option<Instant>,
    /// `STANDBY_TRIM`, shorter in the simulation.
    standby_trim: Duration,
    replays: u32,
    push_limit: usize,
    push_now: bool,
    /// A push of the repository is starting (`Input::PushRound`): a push
    /// is due now. Set for one `handle` only.
    round: bool,
    failures: u32,
    retry_at: Option<Instant>,
    rejection: Option<(String, u32)>,
    audit_at: Option<Instant>,
    /// (target, group, plural) whose resync sweep has not arrived yet.
    resyncing: BTreeSet<(TargetKey, String, String)>,
    resync_until: Option<Instant>,
    first_resync: bool,
    /// Resources whose listing has not reached the queue yet, and whether
    /// a first resync was asked for at all (see `WorkerState::listed`).
    listing: BTreeSet<(TargetKey, String, String)>,
    listing_started: bool,
    commits_since_maintenance: usize,
    fetches_since_maintenance: usize,
    coalesced: u64,
    state: WorkerState,
    /// `MAX_UNPUSHED`, smaller in the simulation to reach it often.
    max_unpushed: usize,
    #[cfg(test)]
    sabotage: sim::Sabotage,
}

impl BranchCore {
    pub fn new(settings: CoreSettings, at: At) -> Self {
        let first_audit = at.now + settings.first_audit;
        let mut queue = CoalescingQueue::default();
        queue.set_merging(!settings.standby);
        let standby_marks = match settings.standby {
            true => VecDeque::from([(HistoryFrom::Time(at.wall), at.now)]),
            false => VecDeque::new(),
        };
        let settings_standby = settings.standby;
        Self {
            files: BranchFiles::with_kustomize([], settings.folders.clone(), settings.kustomize.clone()),
            settings,
            phase: Phase::Starting,
            draining: false,
            handing_over: false,
            draining_since: None,
            queue,
            local_tip: None,
            remote_tip: None,
            chain: VecDeque::new(),
            drafts: VecDeque::new(),
            commit_in_flight: None,
            commit_retry_at: None,
            remote_op: RemoteOp::Idle,
            rebase_needed: false,
            takeover: Takeover::No,
            standby_base: HashMap::new(),
            standby_marks,
            trim_at: settings_standby.then(|| at.now + STANDBY_TRIM),
            standby_trim: STANDBY_TRIM,
            replays: 0,
            push_limit: MAX_COMMITS_PER_PUSH,
            push_now: false,
            round: false,
            failures: 0,
            retry_at: None,
            rejection: None,
            audit_at: Some(first_audit),
            resyncing: BTreeSet::new(),
            resync_until: None,
            first_resync: true,
            listing: BTreeSet::new(),
            listing_started: false,
            commits_since_maintenance: 0,
            fetches_since_maintenance: 0,
            coalesced: 0,
            state: WorkerState::default(),
            max_unpushed: MAX_UNPUSHED,
            #[cfg(test)]
            sabotage: sim::Sabotage::None,
        }
    }

    /// A shorter trim interval, for the simulation.
    #[cfg(test)]
    fn set_standby_trim(&mut self, every: Duration, now: Instant) {
        self.standby_trim = every;
        self.trim_at = self.trim_at.map(|_| now + every);
    }

    /// Whether anything not pushed yet arrived before `since`: a successor
    /// that started standing by then would not hold it.
    #[cfg(test)]
    fn holds_unpushed_from_before(&self, since: Instant) -> bool {
        self.queue.holds_older_than(since)
            || self.drafts.iter().chain(&self.commit_in_flight).any(|d| d.source.received_at < since)
            || self.chain.iter().any(|c| c.source.received_at < since)
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
            Input::Settings(settings) => self.reconfigure(settings, at),
            Input::Drain if self.settings.standby => {
                // It never wrote the branch: the owner writes all it holds.
                self.phase = Phase::Stopped;
                out.push(Command::Done);
                return out;
            }
            // A standby never owned the branch: nothing to hand over.
            Input::HandOver if self.settings.standby => {}
            Input::HandOver => {
                self.handing_over = true;
                self.state.handed_over = false;
                self.start_drain(at);
            }
            Input::Drain => {
                self.handing_over = false;
                self.start_drain(at);
            }
            Input::Resume => {
                self.draining = false;
                self.handing_over = false;
                self.draining_since = None;
                self.queue.set_merging(!self.settings.standby);
                // Its shard was handed over or lapsed in between: compare
                // the remote with its view soon, as a new owner does.
                let soon = at.now + self.settings.first_audit;
                self.audit_at = Some(self.audit_at.map_or(soon, |due| due.min(soon)));
            }
            Input::Committed(result) => self.on_committed(result, at, &mut out),
            Input::Pushed(reply) => self.on_pushed(reply, at, &mut out),
            Input::Fetched(result) => self.on_fetched(result, at, &mut out),
            Input::PushRound => self.round = true,
            Input::Tick => {}
        }
        self.step(at, &mut out);
        self.round = false;
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
                if self.commit_in_flight.is_none() && !self.draining && !self.settings.standby {
                    let retry = self.retry_at.unwrap_or(now);
                    wake.extend(self.audit_at.map(|audit| audit.max(retry)));
                }
                if self.commit_in_flight.is_none() {
                    wake.extend(self.trim_wake(now));
                }
            }
        }
        wake.into_iter().min()
    }

    fn start_drain(&mut self, at: At) {
        self.draining = true;
        self.draining_since.get_or_insert(at.now);
        // A later value merged into an earlier change would be
        // pushed out of order with the rest, which may stay behind
        // (see `drain_done`): the tip must stay one cut of the
        // changes for the new owner's takeover.
        self.queue.set_merging(false);
    }

    /// A handover's drain is over: everything from before it is pushed.
    /// The worker stands by with what came since (the new owner writes it
    /// too), as a successor that started standing by when the handover
    /// began: the new owner's first pushes may never come (it dies), and a
    /// successor started only now would lack them.
    fn stand_by_after_handover(&mut self, at: At, out: &mut Vec<Command>) {
        self.draining = false;
        self.draining_since = None;
        self.handing_over = false;
        self.settings.standby = true;
        // Whatever the new owner writes comes after the last tip pushed here.
        self.begin_standby(self.remote_tip.map_or(HistoryFrom::Time(at.wall), HistoryFrom::Commit), at.now);
        self.state.handed_over = true;
        let pending = self.queue.len() + self.chain.iter().map(|c| c.changes.len()).sum::<usize>();
        out.push(Command::Note(Note::HandedOver { pending }));
    }

    /// What the owner writes from now on comes after `from`; trims start.
    fn begin_standby(&mut self, from: HistoryFrom, now: Instant) {
        self.standby_marks = VecDeque::from([(from, now)]);
        self.trim_at = Some(now + self.standby_trim);
    }

    fn intake(&mut self, item: WorkItem, out: &mut Vec<Command>) {
        match &item {
            WorkItem::Retain { target, owned } => {
                self.listing_started = true;
                self.listing.extend(owned.iter().map(|(g, p)| (target.clone(), g.clone(), p.clone())));
            }
            WorkItem::Sweep { scope, .. } => {
                self.listing.remove(&(scope.target.clone(), scope.group.clone(), scope.plural.clone()));
            }
            _ => {}
        }
        if self.queue.push(item) {
            self.coalesced += 1;
            out.push(Command::Note(Note::Coalesced));
        }
    }

    fn reconfigure(&mut self, settings: CoreSettings, at: At) {
        // A standby keeps every change apart: the takeover needs each value.
        self.queue.set_merging(!settings.standby);
        if !self.settings.standby && settings.standby {
            self.begin_standby(HistoryFrom::Time(at.wall), at.now);
        }
        if self.settings.standby && !settings.standby {
            self.trim_at = None;
            self.state.handed_over = false;
            // The previous owner pushed until it released: fetch its tip
            // before pushing, and audit soon in case a late push of it lands.
            self.takeover = Takeover::Due;
            self.rebase_needed = self.phase != Phase::Starting;
            self.audit_at = Some(at.now + settings.first_audit);
        }
        self.files.set_folders(settings.folders.clone());
        self.files.set_kustomize(settings.kustomize.clone());
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
                self.fetch(FetchPurpose::Start, now, out);
            } else if self.rebase_needed && self.commit_in_flight.is_none() {
                self.fetch(FetchPurpose::Rebase, now, out);
            }
        }
        // A trim that is due goes first: commits would keep it waiting.
        let trim = self.trim_due(now);
        if self.phase != Phase::Starting && self.commit_in_flight.is_none() && !self.fetching() && !trim {
            self.start_commit(at, out);
        }
        if self.phase == Phase::Starting || self.remote_op != RemoteOp::Idle || self.rebase_needed {
            return;
        }
        #[cfg(test)]
        let handing_over = self.handing_over && self.sabotage != sim::Sabotage::StopAfterHandover;
        #[cfg(not(test))]
        let handing_over = self.handing_over;
        if self.draining && self.drain_done() {
            if handing_over {
                self.stand_by_after_handover(at, out);
            } else {
                self.phase = Phase::Stopped;
                out.push(Command::Done);
            }
        } else if self.push_due(now).is_some_and(|due| due <= now) {
            self.push(out);
        } else if self.audit_at.is_some_and(|due| due <= now)
            && self.retry_due(now)
            && self.commit_in_flight.is_none()
            && !self.draining
            && !self.settings.standby
        {
            self.audit_at = Some(now + self.settings.audit_interval);
            self.fetch(FetchPurpose::Audit, now, out);
        } else if trim && self.commit_in_flight.is_none() {
            self.trim_at = Some(now + self.standby_trim);
            self.fetch(FetchPurpose::Trim, now, out);
        }
    }

    /// When a standby trims next (see `STANDBY_TRIM`), if it does.
    fn trim_wake(&self, now: Instant) -> Option<Instant> {
        if !self.settings.standby
            || self.takeover != Takeover::No
            || self.draining
            || self.phase == Phase::Starting
        {
            return None;
        }
        let due = if self.chain.len() >= TRIM_AT_COMMITS { Some(now) } else { self.trim_at };
        Some(due?.max(self.retry_at.unwrap_or(now)))
    }

    fn trim_due(&self, now: Instant) -> bool {
        self.trim_wake(now).is_some_and(|due| due <= now)
    }

    /// Everything that arrived before the drain began is pushed. What came
    /// later need not be: a handover drains once the new owner's standby
    /// takes every change in (the worker goes on taking them in only in
    /// case the handover is called off), and a closed intake brings
    /// nothing newer.
    fn drain_done(&self) -> bool {
        let Some(since) = self.draining_since else { return false };
        // What arrived at the very instant the drain began counts as before.
        let since = since + Duration::from_nanos(1);
        !self.queue.holds_older_than(since)
            && self.drafts.iter().all(|d| d.source.received_at >= since)
            && self.commit_in_flight.is_none()
            && self.chain.iter().all(|c| c.source.received_at >= since)
    }

    fn fetching(&self) -> bool {
        matches!(self.remote_op, RemoteOp::Fetching(_))
    }

    fn retry_due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| at <= now)
    }

    fn refresh_state(&mut self) {
        self.state.queued = self.queue.len() + self.drafts.iter().map(|d| d.changes.len()).sum::<usize>();
        self.state.unpushed = self.chain.len();
        self.state.capped = self.chain.len() >= self.max_unpushed;
        self.state.listed = self.listing_started && self.listing.is_empty();
        self.state.quarantined = match (&self.rejection, self.phase) {
            (Some((message, _)), Phase::Quarantined) => Some(message.clone()),
            _ => None,
        };
    }
}

/// When a new worker audits first: soon, because a previous owner whose
/// drain timed out may have had a push land after it released the shard
/// (git kills the client, not a server that already has the pack), and
/// spread over up to a minute, so that branches started together do not all
/// fetch at once.
pub fn first_audit(audit_interval: Duration, salt: u64) -> Duration {
    let spread = audit_interval.min(Duration::from_secs(60)).as_millis().max(1) as u64;
    (TAKEOVER_AUDIT + Duration::from_millis(salt % spread)).min(audit_interval)
}

/// The earliest first audit after a worker starts.
const TAKEOVER_AUDIT: Duration = Duration::from_secs(15);
