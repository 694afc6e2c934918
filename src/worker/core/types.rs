//! The core's vocabulary: what goes in, what comes out, what it reports.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gix::ObjectId;

use crate::api::{Prune, Reason};
use crate::route::TargetKey;
use crate::worker::message::template::Template;
use crate::worker::observe::Source;
use crate::worker::policy::PushPolicy;
use crate::worker::queue::WorkItem;
use crate::worker::repo::{Identity, LocalRepo};

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
    /// The targets with `layout: kustomize`.
    pub kustomize: std::collections::BTreeSet<TargetKey>,
    /// How each target's commits are written; a target not named has the defaults.
    pub policies: std::collections::BTreeMap<TargetKey, TargetPolicy>,
    /// This replica's name, in every commit's `Replica:` trailer.
    pub replica: String,
    /// Spreads retries and audits of branches that failed together.
    pub salt: u64,
    pub audit_interval: Duration,
    /// How long after start the first audit comes (see `first_audit`).
    pub first_audit: Duration,
    /// The shard is coming to this replica but another one still writes it:
    /// commit locally, never push or audit. Turning it off is a takeover.
    pub standby: bool,
}

/// What a GitTarget (with its GitProvider) says about its commits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// `commit.messageTemplate`, parsed; None: the default messages.
    pub template: Option<Arc<Template>>,
    /// `prune`: whether a deleted object's file is deleted too.
    pub prune: Prune,
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

pub use crate::worker::repo::HistoryFrom;

/// A fetched branch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    pub tip: Option<ObjectId>,
    /// Every file of the tip (path → blob id).
    pub files: Vec<(String, ObjectId)>,
    /// The newest of the commits the fetch was asked about that the tip
    /// contains (the tip itself or an ancestor), when known.
    pub contains: Option<ObjectId>,
    /// When asked for (`history`): every file of the first-parent commit
    /// it starts from (see [`HistoryFrom`]; none if there is no such
    /// commit), then what each commit after it changed, oldest first, as
    /// (path, new blob or `None` for deleted). `None` when not asked, or
    /// when that history is out of reach (a shallow boundary after the time,
    /// more commits than a limit).
    pub history: Option<Vec<(String, Option<ObjectId>)>>,
    /// The [`fingerprint`](crate::worker::files::fingerprint) of each
    /// sealed file of the tip (path → fingerprint).
    pub sealed: Vec<(String, u64)>,
    /// The tip's `.sops.yaml`, if it has one.
    pub sops_config: Option<Vec<u8>>,
}

/// Everything the core reacts to.
// Inputs live for one call; boxing the common one would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Input {
    Item(WorkItem),
    Settings(CoreSettings),
    /// Commit and push what is pending, then stop. Items may still come
    /// (a handover keeps routing until the worker is done).
    Drain,
    /// A handover: commit and push what arrived before it, then stand by
    /// (`WorkerState::handed_over`) with what came since. The new owner
    /// writes those too; should it die before it pushes them, this worker,
    /// its likely successor, still has them.
    HandOver,
    /// A drain that has not finished is called off (the shard came back).
    Resume,
    /// The result of the one outstanding `Command::Commit`: the new
    /// commit, or `None` when the tree did not change.
    Committed(Result<Option<ObjectId>, CommitFailure>),
    /// The result of the one outstanding `Command::Push`.
    Pushed(PushReply),
    /// The result of the one outstanding `Command::Fetch`.
    Fetched(Result<Fetched, (Reason, String)>),
    /// A push of the branch's repository is about to start: the branch
    /// joins it with whatever it committed, even before its own interval
    /// is up, so that a replica pushes a repository about once per interval
    /// instead of once per branch.
    PushRound,
    /// Time passed (a wake-up the core asked for, or any other).
    Tick,
}

/// What the shell must do. At most one commit, and one push or fetch, are
/// outstanding at a time; a push and a commit may run together.
#[derive(Clone, Debug)]
pub enum Command {
    /// Fetch the branch; answer with `Input::Fetched`, saying which of
    /// `known` (newest last) the tip contains. `known` descend from `since`.
    /// With `history`, also what the commits since that point wrote.
    Fetch { known: Vec<ObjectId>, since: Option<ObjectId>, history: Option<HistoryFrom> },
    /// Write one commit on `parent`; answer with `Input::Committed`. The
    /// author is the committer unless named; `allow_empty`: write it even
    /// if the tree does not change (a marker).
    Commit {
        parent: Option<ObjectId>,
        changes: Vec<Change>,
        message: String,
        source: Source,
        author: Option<Identity>,
        allow_empty: bool,
    },
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
    /// A takeover dropped pending changes the previous owner had written.
    TakenOver { dropped: usize, pending: usize, by_history: bool },
    /// A standby dropped pending changes the owner has pushed meanwhile.
    Trimmed { dropped: usize, pending: usize },
    /// A handover's drain is over; the worker stands by with this many
    /// changes the new owner writes.
    HandedOver { pending: usize },
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
    /// Every resource its targets own was listed into its queue since it
    /// started: from here on it receives every change (standby is ready).
    pub listed: bool,
    /// A handover's drain is over: the worker stands by, holding what
    /// arrived since the handover began (see `Input::HandOver`).
    pub handed_over: bool,
    /// The branch's `.sops.yaml` at the last fetched tip (for targets that
    /// follow its creation rules).
    pub sops_config: Option<std::sync::Arc<[u8]>>,
}
