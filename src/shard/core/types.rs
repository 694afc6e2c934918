//! The coordinator core's vocabulary: what goes in, what comes out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use crate::shard::ownership::Ownership;
use crate::shard::settings::{ShardSettings, warmup};

/// The shortest wait for a new owner's standby announcement.
const MIN_HANDOVER_WAIT: Duration = Duration::from_secs(20);
/// While an installation forms, how long the members seen must stay the
/// same before free shards are taken (see [`CoreSettings::formation_settle`]).
pub const FORMATION_SETTLE: Duration = Duration::from_secs(2);

/// A Lease of the installation, by what it stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseName {
    /// `<prefix>-member-<replica>`: the replica is alive.
    Member(String),
    /// `<prefix>-shard-<i>`.
    Shard(u32),
}

/// One version of a Lease as the API server stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub resource_version: String,
    /// `None` or empty: released.
    pub holder: Option<String>,
    /// Both written from the holder's wall clock: only their difference is
    /// used, so skew between replicas does not matter.
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    /// `leaseDurationSeconds`; `None`: the record proves no liveness.
    pub duration: Option<Duration>,
    /// Member Leases: the shards that replica announced a standby for.
    pub standby: BTreeSet<u32>,
}

impl LeaseRecord {
    /// How long the holder had held the Lease when it wrote this version,
    /// by its own clock.
    pub fn held_for(&self) -> Duration {
        match (self.acquire_time, self.renew_time) {
            (Some(acquired), Some(renewed)) => {
                Duration::try_from(renewed.duration_since(acquired)).unwrap_or_default()
            }
            _ => Duration::ZERO,
        }
    }

    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }
}

/// What became of a Lease write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Applied; the Lease is now at this version.
    Written { resource_version: String },
    /// The precondition failed (409 Conflict or AlreadyExists, or 404): the
    /// Lease is not what the write assumed. Nothing was written.
    Conflict,
    /// The API server refused it (not a 409): nothing was written.
    Failed(String),
    /// No answer in time (the client's read timeout; the simulation uses
    /// half a retry period): it may or may not have been applied. Tried
    /// again at once, as long as the renew deadline allows. `renew_time`
    /// is the `renewTime` it carried (microseconds, as stored): a version
    /// seen naming this replica with it is this write, applied.
    TimedOut { renew_time: Timestamp },
}

/// What a write requires of the stored Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// It does not exist: a create.
    Absent,
    /// It is at this version: a replace carrying it.
    Version(String),
    /// Anything: only the simulation's deliberately broken core sends it.
    #[cfg(test)]
    Unconditional,
}

/// The change a write makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Name this replica as holder (`acquireTime` now unless it already
    /// was), `renewTime` now, this replica's duration.
    Acquire,
    /// `renewTime` now; on a member Lease, also the standby announcement.
    Renew { standby: Option<BTreeSet<u32>> },
    /// Clear the holder.
    Release,
}

/// One Lease write, always with a precondition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub lease: LeaseName,
    pub precondition: Precondition,
    pub action: Action,
}

/// Everything the core reacts to.
#[derive(Clone, Debug)]
pub enum Input {
    /// The watch saw a Lease of the installation (`None`: deleted).
    /// Shared: a watch's version reaches many places (every replica, in
    /// the simulation) and is never changed.
    Observed { lease: LeaseName, record: Option<Arc<LeaseRecord>> },
    /// The watch's first list is complete: decisions may start.
    Listed,
    /// The answer to the one outstanding [`Command::Write`] of `lease`.
    Written { lease: LeaseName, outcome: WriteOutcome },
    /// The controller drained a releasing shard: its Lease may go.
    Drained(u32),
    /// The incoming shards whose standby workers are ready.
    Standby(BTreeSet<u32>),
    /// Leave: give up the membership, hand every shard over, release.
    Stop,
    /// Time passed (a wake-up the core asked for, or any other).
    Tick,
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// At most one write per Lease is outstanding; answer with
    /// [`Input::Written`].
    Write(Write),
    /// The new view for the controller and the fences.
    Publish(Ownership),
    /// For logs, metrics and Kubernetes Events.
    Event(Event),
    /// Tick at this local monotonic time at the latest (replaces the
    /// previous wake-up).
    WakeAt(Instant),
}

/// Facts for logs, metrics and Kubernetes Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Joined {
        rejoined: bool,
    },
    /// The member Lease was not renewed within the renew deadline.
    MembershipLapsed,
    /// The member Lease names another live process.
    DuplicateIdentity {
        holder: String,
    },
    Announced(BTreeSet<u32>),
    Acquired {
        shard: u32,
        tenure: u64,
        previous: Option<String>,
    },
    /// Acquired from another replica that never released it (a `Warning`).
    TakenOver {
        shard: u32,
        previous: String,
    },
    Released(u32),
    Lost {
        shard: u32,
        why: &'static str,
    },
    /// A write failed or got no answer (`renewal`: it was a renewal).
    WriteFailed {
        lease: LeaseName,
        renewal: bool,
        error: String,
    },
}

/// What the core needs of the settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreSettings {
    pub identity: String,
    pub shards: u32,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// How long a shard handed over waits for the new owner's standby.
    pub handover_wait: Duration,
    /// How long a joining replica waits before it is given shards.
    pub warmup: Duration,
    /// While no member has finished its warm-up (a fresh installation, or
    /// every replica restarted at once), free shards are taken only once the
    /// members seen stayed the same this long. Replicas that start together
    /// otherwise each take what their partial view gives them: 100 replicas
    /// sent 60,000 conflicting Lease writes in their first 18 s (`sim`).
    pub formation_settle: Duration,
}

impl From<&ShardSettings> for CoreSettings {
    fn from(settings: &ShardSettings) -> Self {
        Self {
            identity: settings.identity.clone(),
            shards: settings.shards,
            lease_duration: settings.lease_duration,
            renew_deadline: settings.renew_deadline,
            retry_period: settings.retry_period,
            // A starting replica checks write access and lists its resources
            // first, which took 5 s under load in the HA tests.
            handover_wait: (settings.retry_period * 2).max(MIN_HANDOVER_WAIT),
            warmup: warmup(settings.lease_duration),
            formation_settle: FORMATION_SETTLE,
        }
    }
}
