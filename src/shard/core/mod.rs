//! The shard coordinator's decisions, as a pure synchronous core: no I/O,
//! no clock reads. The shell (`coordinator`) feeds it Lease observations,
//! write results, the controller's reports and ticks with the local
//! monotonic time, and carries out the commands it returns.
//!
//! **Inputs** ([`Input`]): every version of every Lease of the installation
//! the watch sees (holder, acquire and renew time, duration,
//! resourceVersion, standby announcement), the end of the first list, the
//! outcome of each write (written, conflict, failed, timed out), "drained"
//! and "standby ready" reports from the controller, the stop signal, ticks.
//!
//! **Commands** ([`Command`]): write a Lease (acquire, renew, release) with
//! a resourceVersion precondition (or "absent": a create), publish the
//! [`Ownership`] that the controller and the push fences read, emit an
//! event, wake at a time.
//!
//! **States.** The membership: not a member, joining (an acquire in
//! flight), member (renewed at a time), lapsed (not renewed within the
//! renew deadline: the next join is a rejoin, with a grace period in which
//! shards held by others are left to them), leaving (stopped). Each shard:
//! not held, acquiring (write in flight), held (renewed at a time, a
//! tenure), held and releasing (handed over, waiting to be drained),
//! release in flight. At most one write per Lease is in flight.
//!
//! **Unanswered renewals.** A renewal without an answer may have been
//! applied; its retry, which still requires the old version, then
//! conflicts. That conflict alone does not lose the Lease: the core waits
//! for the watch to show a version naming this replica with the
//! `renewTime` the unanswered write carried (that write, applied: adopted
//! as renewed when it was sent), or another holder (lost). The fence keeps
//! counting from the last renewal known to have won, so waiting is safe;
//! the renew deadline still ends it.
//!
//! **Time and clock skew.** Another replica's record counts as expired
//! once this replica has seen the same resourceVersion, unchanged, for the
//! record's lease duration by its own monotonic clock (as client-go's
//! leader election does), never by comparing the writer's wall-clock
//! `renewTime` with its own. The holder's fence closes at `sent + duration
//! − START_MARGIN` of its own monotonic clock, where `sent` is when the
//! winning write was sent, before the version existed and so before anyone
//! could see it. So clock offsets between replicas do not matter at all;
//! only the clocks' rates do: with rates within 1 ± ρ, two fences of one
//! shard never overlap while (D − m)/(1 − ρ) < D/(1 + ρ), that is
//! ρ < m / (2D − m) (D the lease duration, m = START_MARGIN: with the
//! defaults 8 s and 1 s, ρ < 6.6 %). The simulation checks it.
//!
//! **Backups.** A shard stays free when its desired owner cannot take it
//! yet: it restarted (every record it lists is new to it, so it waits a
//! whole lease), or its view lags. The other members take it
//! [`BACKUP_DELAY`] after it became free in their view, one after another
//! in rendezvous order, so the time to a rescue does not hang on one view.
//!
//! A member Lease counts for the assignment only while it was renewed
//! within the renew deadline (by the same local rule): its holder drops
//! out by itself at that point, and a replica that starts sees every
//! listed record as new, so dead members must not count for a whole lease
//! duration. Only whom a shard is desired by depends on it, never when a
//! shard may be taken.

mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

pub use types::{
    Action, Command, CoreSettings, Event, FORMATION_SETTLE, Input, LeaseName, LeaseRecord, Precondition,
    Write, WriteOutcome,
};

#[cfg(test)]
use super::balance::Holding;
use super::balance::{Rankings, Slot, place, successors};
use super::hash::rank_among;
use super::ownership::{HeldShard, Ownership};
use super::plan::{self, Timing};

/// Lets a burst of Lease events settle into one pass.
pub const SETTLE: Duration = Duration::from_millis(20);
/// The shortest wait between two passes the core asks for.
const MIN_WAKE: Duration = Duration::from_millis(10);
/// Look again this long after a record is due to expire.
const EXPIRY_SLACK: Duration = Duration::from_millis(50);
/// A shard held by a member that is not stopping (a rebalance, not a
/// rescue) is prepared for only once this replica desired it this long:
/// a view that lags (a slow watch makes members look gone) must not move
/// shards, since a moved shard stays where it went.
pub const MOVE_SETTLE: Duration = Duration::from_secs(2);
/// A shard free this long that its desired owner has not taken is taken
/// by the other members, one after another ([`BACKUP_STEP`] apart, in
/// rendezvous order).
pub const BACKUP_DELAY: Duration = Duration::from_secs(2);
pub const BACKUP_STEP: Duration = Duration::from_millis(500);
/// How often the records are scanned for shards due for a backup.
const BACKUP_SCAN: Duration = Duration::from_millis(250);

/// Who holds each shard, from Lease records in `LeaseName` order (member
/// Leases first): the shard Leases' holders, and where the shards that a
/// member announced a standby for are bound. The simulation's API server
/// counts moves with the same view; the core keeps it per version
/// (`ShardCore::place_me`).
#[cfg(test)]
pub(super) fn holdings<'a>(
    records: impl Iterator<Item = (&'a LeaseName, &'a LeaseRecord)>,
) -> BTreeMap<u32, Holding<'a>> {
    let mut bound: BTreeMap<u32, &str> = BTreeMap::new();
    let mut holdings = BTreeMap::new();
    for (lease, record) in records {
        let Some(holder) = record.holder() else { continue };
        match lease {
            LeaseName::Member(_) => bound.extend(record.standby.iter().map(|shard| (*shard, holder))),
            LeaseName::Shard(shard) => {
                let holding = Holding {
                    holder,
                    since: record.acquire_time.unwrap_or_default(),
                    bound_for: bound.get(shard).copied(),
                };
                holdings.insert(*shard, holding);
            }
        }
    }
    holdings
}

/// A version of a Lease, and when this replica first saw it.
#[derive(Clone, Debug)]
struct Seen {
    record: Arc<LeaseRecord>,
    since: Instant,
}

impl Seen {
    /// Until when the holder may still be using it, by this replica's
    /// clock: `None` if it is free now (released, no duration, or expired).
    fn live_until(&self, now: Instant) -> Option<Instant> {
        self.record.holder()?;
        let until = self.since + self.record.duration?;
        (now < until).then_some(until)
    }
}

/// A Lease this replica holds.
#[derive(Clone, Debug)]
struct Held {
    resource_version: String,
    /// When the last winning write was sent (local monotonic).
    renewed_at: Instant,
    tenure: u64,
    /// Renewals since that got no answer: any may have been applied.
    unanswered: Vec<Unanswered>,
    /// A renewal conflicted while one was unanswered: no more renewals
    /// until the watch shows whose write it was.
    awaiting: bool,
}

impl Held {
    fn new(resource_version: String, renewed_at: Instant, tenure: u64) -> Self {
        Self { resource_version, renewed_at, tenure, unanswered: Vec::new(), awaiting: false }
    }

    /// Takes `record` as written by this replica if it carries the
    /// `renewTime` of an unanswered renewal: its version, renewed when that
    /// write was sent. True if it did.
    fn adopt(&mut self, record: &LeaseRecord, identity: &str) -> bool {
        if record.holder() != Some(identity) {
            return false;
        }
        let Some(renewed) = record.renew_time else { return false };
        let Some(write) = self.unanswered.iter().find(|u| u.renew_time == renewed) else { return false };
        self.renewed_at = self.renewed_at.max(write.sent_at);
        self.resource_version = record.resource_version.clone();
        // Later unanswered writes required the version before this one:
        // they can only fail.
        self.unanswered.clear();
        self.awaiting = false;
        true
    }
}

/// What the version seen said of unanswered renewals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    No,
    Adopted,
    Lost,
}

/// A renewal that got no answer in time.
#[derive(Clone, Debug)]
struct Unanswered {
    renew_time: Timestamp,
    sent_at: Instant,
}

/// A write in flight.
#[derive(Clone, Debug)]
struct Pending {
    action: Action,
    /// The version it requires (`None`: absent or unconditional).
    precondition: Option<String>,
    sent_at: Instant,
    /// For an acquire: the holder the replaced version named.
    previous: Option<String>,
}

pub struct ShardCore {
    settings: CoreSettings,
    listed: bool,
    stopping: bool,
    seen: BTreeMap<LeaseName, Seen>,
    /// The shards whose seen record names this replica.
    named_me: BTreeSet<u32>,
    /// Versions a write already required whose outcome is final (written
    /// over, or stale): never required again.
    spent: BTreeMap<LeaseName, String>,
    /// After a failed write (no answer, an API error): no new try before.
    backoff: BTreeMap<LeaseName, Instant>,
    pending: BTreeMap<LeaseName, Pending>,
    member: Option<Held>,
    /// When this replica joined (its member Lease's `acquireTime`).
    joined_at: Option<Instant>,
    membership_lapsed: bool,
    /// After a lapse, until then, shards whose Lease names another replica
    /// are left to it: it was cut off too, and is likely coming back.
    rejoin_grace_until: Option<Instant>,
    held: BTreeMap<u32, Held>,
    handover: plan::Handover,
    drained: BTreeSet<u32>,
    standby_ready: BTreeSet<u32>,
    /// What the member Lease announces.
    announced: BTreeSet<u32>,
    incoming: BTreeSet<u32>,
    /// Shards of other members that this replica is next in line for.
    successors: BTreeSet<u32>,
    /// Desired shards not held, and since when.
    wanted_since: BTreeMap<u32, Instant>,
    /// When the next shard left free by its desired owner is this
    /// replica's to take as a backup, and the last scan for them.
    backup_due: Option<Instant>,
    backup_scanned: Option<Instant>,
    next_tenure: u64,
    published: Ownership,
    wake_at: Option<Instant>,
    /// The last assignment (members, desired shards): recomputed only
    /// when the members or the holdings change.
    assigned: Option<(Vec<String>, BTreeSet<u32>)>,
    /// Counts changes of shard holders and standby announcements.
    holdings_changed: u64,
    /// `holdings_changed` when `assigned` was computed.
    assigned_at: u64,
    /// The members' rendezvous weights.
    rankings: Rankings,
    /// Every holder name seen, numbered.
    name_ids: BTreeMap<String, usize>,
    /// Each shard's holder (by `name_ids`) and `acquireTime`, as seen:
    /// kept up to date per version, so a placement looks up no names.
    holders: Vec<Option<(usize, Timestamp)>>,
    /// No member seen has finished its warm-up: the installation forms.
    forming: bool,
    /// The members seen by the last pass, and since when.
    view: Vec<String>,
    view_since: Option<Instant>,
    #[cfg(test)]
    sabotage: super::sim::Sabotage,
}

impl ShardCore {
    pub fn new(settings: CoreSettings) -> Self {
        Self {
            rankings: Rankings::new(settings.shards),
            name_ids: BTreeMap::new(),
            holders: vec![None; settings.shards as usize],
            settings,
            listed: false,
            stopping: false,
            seen: BTreeMap::new(),
            named_me: BTreeSet::new(),
            spent: BTreeMap::new(),
            backoff: BTreeMap::new(),
            pending: BTreeMap::new(),
            member: None,
            joined_at: None,
            membership_lapsed: false,
            rejoin_grace_until: None,
            held: BTreeMap::new(),
            handover: plan::Handover::default(),
            drained: BTreeSet::new(),
            standby_ready: BTreeSet::new(),
            announced: BTreeSet::new(),
            incoming: BTreeSet::new(),
            successors: BTreeSet::new(),
            wanted_since: BTreeMap::new(),
            backup_due: None,
            backup_scanned: None,
            next_tenure: 0,
            published: Ownership::default(),
            wake_at: None,
            assigned: None,
            holdings_changed: 0,
            assigned_at: 0,
            forming: true,
            view: Vec::new(),
            view_since: None,
            #[cfg(test)]
            sabotage: super::sim::Sabotage::None,
        }
    }

    #[cfg(test)]
    pub(super) fn sabotaged(mut self, sabotage: super::sim::Sabotage) -> Self {
        self.sabotage = sabotage;
        self
    }

    /// The view last published.
    pub fn ownership(&self) -> &Ownership {
        &self.published
    }

    /// What this core knows and plans about one shard (for the
    /// simulation's failure reports).
    #[cfg(test)]
    pub(super) fn describe(&self, shard: u32, now: Instant) -> String {
        let lease = LeaseName::Shard(shard);
        let seen = self.seen.get(&lease).map(|s| {
            let age = now.saturating_duration_since(s.since);
            format!("{:?}@{} seen {age:?} ago", s.record.holder, s.record.resource_version)
        });
        format!(
            "seen {seen:?}, held {:?}, pending {:?}, spent {:?}, backoff {:?}, grace {:?}, member {}",
            self.held.get(&shard).map(|h| &h.resource_version),
            self.pending.get(&lease).map(|p| (
                &p.action,
                &p.precondition,
                now.saturating_duration_since(p.sent_at)
            )),
            self.spent.get(&lease),
            self.backoff.get(&lease).map(|b| b.saturating_duration_since(now)),
            self.rejoin_grace_until.map(|g| g.saturating_duration_since(now)),
            self.is_member(),
        )
    }

    /// The members and desired shards of the last pass.
    pub fn assigned(&self) -> Option<&(Vec<String>, BTreeSet<u32>)> {
        self.assigned.as_ref()
    }

    pub fn is_member(&self) -> bool {
        self.member.is_some() && !self.stopping
    }

    /// Stopping, and every shard Lease given back (or given up).
    pub fn is_done(&self) -> bool {
        self.stopping
            && self.held.is_empty()
            && self.pending.keys().all(|l| matches!(l, LeaseName::Member(_)))
    }

    /// Shards with no live holder, as this replica sees them.
    pub fn unowned(&self, now: Instant) -> usize {
        (0..self.settings.shards)
            .filter(|shard| !self.held.contains_key(shard))
            .filter(|shard| {
                self.seen.get(&LeaseName::Shard(*shard)).is_none_or(|seen| self.is_free(seen, now))
            })
            .count()
    }

    /// Feeds one input at local monotonic time `now`; returns what to do.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Command> {
        let mut out = Vec::new();
        match input {
            Input::Observed { lease, record } => {
                if self.observe(lease.clone(), record, now) {
                    if self.adopt_seen(&lease, &mut out) != Settled::No {
                        // The fence's horizon moved, or it shuts.
                        self.publish(&mut out);
                    }
                    self.wake_soon(now, &mut out);
                }
                return out;
            }
            Input::Listed => self.listed = true,
            Input::Written { lease, outcome } => {
                // A renewal that went through changes no decision: it only
                // moves the fence's horizon. A full pass per answer cost
                // O(shards) per held shard (see `sim`, 1,000 shards).
                let renewed = matches!(&lease, LeaseName::Shard(s) if self.held.contains_key(s))
                    && matches!(outcome, WriteOutcome::Written { .. })
                    && self.pending.get(&lease).is_some_and(|p| matches!(p.action, Action::Renew { .. }));
                self.on_written(lease, outcome, now, &mut out);
                if renewed {
                    self.publish(&mut out);
                    return out;
                }
            }
            Input::Drained(shard) => {
                self.drained.insert(shard);
            }
            Input::Standby(shards) => self.standby_ready = shards,
            Input::Stop => self.stopping = true,
            Input::Tick => {}
        }
        self.pass(now, &mut out);
        out
    }

    /// The member Leases seen (they sort before the shard Leases).
    fn member_records(&self) -> impl Iterator<Item = &Seen> {
        self.seen.iter().take_while(|(lease, _)| matches!(lease, LeaseName::Member(_))).map(|(_, seen)| seen)
    }

    /// Records a version; true if it may change a decision.
    fn observe(&mut self, lease: LeaseName, record: Option<Arc<LeaseRecord>>, now: Instant) -> bool {
        if let LeaseName::Shard(shard) = lease {
            let mine = record.as_ref().is_some_and(|r| r.holder() == Some(self.settings.identity.as_str()));
            if mine {
                self.named_me.insert(shard);
            } else {
                self.named_me.remove(&shard);
            }
        }
        if let LeaseName::Shard(shard) = lease
            && let Some(slot) = self.holders.get_mut(shard as usize)
        {
            *slot = record.as_ref().and_then(|r| {
                let holder = r.holder()?;
                let id = match self.name_ids.get(holder) {
                    Some(id) => *id,
                    None => {
                        let id = self.name_ids.len();
                        self.name_ids.insert(holder.to_owned(), id);
                        id
                    }
                };
                Some((id, r.acquire_time.unwrap_or_default()))
            });
        }
        let Some(record) = record else {
            self.spent.remove(&lease);
            let removed = self.seen.remove(&lease).is_some();
            self.holdings_changed += u64::from(removed);
            return removed;
        };
        if self.spent.get(&lease).is_some_and(|v| *v != record.resource_version) {
            self.spent.remove(&lease);
        }
        let previous = self.seen.get(&lease);
        if previous.is_some_and(|p| p.record.resource_version == record.resource_version) {
            return false;
        }
        let changed_roles = previous
            .is_none_or(|p| p.record.holder() != record.holder() || p.record.standby != record.standby);
        let changed_since = previous.is_some_and(|p| p.record.acquire_time != record.acquire_time);
        if changed_roles || changed_since {
            self.holdings_changed += 1;
        }
        let mine = match &lease {
            LeaseName::Shard(shard) => {
                self.held.contains_key(shard)
                    || self.incoming.contains(shard)
                    || self.pending.contains_key(&lease)
                    || record.holder() == Some(self.settings.identity.as_str())
            }
            LeaseName::Member(name) => *name == self.settings.identity,
        };
        self.seen.insert(lease, Seen { record, since: now });
        changed_roles || mine
    }

    fn wake_soon(&mut self, now: Instant, out: &mut Vec<Command>) {
        let soon = now + SETTLE;
        if self.wake_at.is_none_or(|at| at > soon) {
            self.wake_at = Some(soon);
            out.push(Command::WakeAt(soon));
        }
    }

    fn write(
        &mut self,
        lease: LeaseName,
        precondition: Precondition,
        action: Action,
        previous: Option<String>,
        now: Instant,
        out: &mut Vec<Command>,
    ) {
        let required = match &precondition {
            Precondition::Version(v) => Some(v.clone()),
            _ => None,
        };
        self.pending.insert(
            lease.clone(),
            Pending { action: action.clone(), precondition: required, sent_at: now, previous },
        );
        #[cfg(test)]
        let precondition = match (self.sabotage, precondition) {
            (super::sim::Sabotage::SkipPreconditions, Precondition::Version(_)) => {
                Precondition::Unconditional
            }
            (_, precondition) => precondition,
        };
        out.push(Command::Write(Write { lease, precondition, action }));
    }

    fn on_written(&mut self, lease: LeaseName, outcome: WriteOutcome, now: Instant, out: &mut Vec<Command>) {
        let Some(pending) = self.pending.remove(&lease) else { return };
        let final_outcome = matches!(outcome, WriteOutcome::Written { .. } | WriteOutcome::Conflict);
        if final_outcome {
            // An "absent" that failed is spent as "".
            self.spent.insert(lease.clone(), pending.precondition.clone().unwrap_or_default());
        }
        let error = match &outcome {
            WriteOutcome::Failed(error) => Some(error.clone()),
            WriteOutcome::TimedOut { .. } => Some("no answer in time".to_owned()),
            _ => None,
        };
        if let Some(error) = error {
            let renewal = matches!(pending.action, Action::Renew { .. });
            out.push(Command::Event(Event::WriteFailed { lease: lease.clone(), renewal, error }));
        }
        // The server refused: a short pause. A write that timed out waited
        // long enough.
        if matches!(outcome, WriteOutcome::Failed(_)) {
            self.backoff.insert(lease.clone(), now + self.settings.retry_period / 4);
        }
        match lease {
            LeaseName::Member(_) => self.on_member_written(pending, outcome, out),
            LeaseName::Shard(shard) => self.on_shard_written(shard, pending, outcome, out),
        }
    }

    fn on_member_written(&mut self, pending: Pending, outcome: WriteOutcome, out: &mut Vec<Command>) {
        let lease = LeaseName::Member(self.settings.identity.clone());
        match (pending.action, outcome) {
            (Action::Release, _) => {}
            (Action::Acquire, WriteOutcome::Written { resource_version }) if !self.stopping => {
                // A Lease that already named this replica keeps its
                // acquireTime: the replica joined back then (when this
                // process joined before, it knows; else the record says).
                let record = self.seen.get(&LeaseName::Member(self.settings.identity.clone()));
                let named_me = record.filter(|s| s.record.holder() == Some(self.settings.identity.as_str()));
                self.joined_at = match (named_me, self.joined_at) {
                    (Some(_), Some(joined)) => Some(joined),
                    (Some(seen), None) => {
                        let held_for =
                            seen.record.held_for() + pending.sent_at.saturating_duration_since(seen.since);
                        Some(pending.sent_at.checked_sub(held_for).unwrap_or(pending.sent_at))
                    }
                    (None, _) => Some(pending.sent_at),
                };
                self.member = Some(Held::new(resource_version, pending.sent_at, 0));
                let rejoined = std::mem::take(&mut self.membership_lapsed);
                if rejoined {
                    self.rejoin_grace_until = Some(pending.sent_at + self.settings.lease_duration);
                }
                self.announced.clear();
                out.push(Command::Event(Event::Joined { rejoined }));
            }
            (Action::Renew { standby }, WriteOutcome::Written { resource_version }) => {
                if let Some(member) = &mut self.member {
                    *member = Held::new(resource_version, pending.sent_at, 0);
                    self.announce(standby.unwrap_or_default(), out);
                }
            }
            (Action::Renew { .. }, WriteOutcome::TimedOut { renew_time }) => {
                self.renewal_unanswered(&lease, renew_time, pending.sent_at, out)
            }
            (Action::Renew { .. }, WriteOutcome::Conflict) => {
                self.renewal_conflicted(&lease, pending.precondition.as_deref(), out)
            }
            _ => {}
        }
    }

    fn announce(&mut self, standby: BTreeSet<u32>, out: &mut Vec<Command>) {
        if standby != self.announced {
            out.push(Command::Event(Event::Announced(standby.clone())));
            self.announced = standby;
        }
    }

    /// Settles a held Lease's unanswered renewals by the version seen: one
    /// of them applied (adopted), or another holder wrote it while a
    /// conflict waited for the watch (lost).
    fn adopt_seen(&mut self, lease: &LeaseName, out: &mut Vec<Command>) -> Settled {
        let held = match lease {
            LeaseName::Member(_) => self.member.as_mut(),
            LeaseName::Shard(shard) => self.held.get_mut(shard),
        };
        let Some(held) = held.filter(|h| !h.unanswered.is_empty()) else { return Settled::No };
        let identity = self.settings.identity.as_str();
        let record = self.seen.get(lease).map(|seen| &seen.record);
        if let Some(record) = record.filter(|r| held.adopt(r, identity)) {
            if matches!(lease, LeaseName::Member(_)) {
                let standby = record.standby.clone();
                self.announce(standby, out);
            }
            return Settled::Adopted;
        }
        // Not seen yet (or deleted): only the renew deadline decides.
        let taken = record.is_some_and(|r| r.holder() != Some(identity));
        if !(held.awaiting && taken) {
            return Settled::No;
        }
        self.give_up(lease, out);
        Settled::Lost
    }

    fn held_mut(&mut self, lease: &LeaseName) -> Option<&mut Held> {
        match lease {
            LeaseName::Member(_) => self.member.as_mut(),
            LeaseName::Shard(shard) => self.held.get_mut(shard),
        }
    }

    /// Another replica wrote a Lease this replica held.
    fn give_up(&mut self, lease: &LeaseName, out: &mut Vec<Command>) {
        match lease {
            LeaseName::Member(_) => self.member = None,
            LeaseName::Shard(shard) => self.lose(*shard, "another replica wrote the Lease", out),
        }
    }

    fn renewal_unanswered(
        &mut self,
        lease: &LeaseName,
        renew_time: Timestamp,
        sent_at: Instant,
        out: &mut Vec<Command>,
    ) {
        if let Some(held) = self.held_mut(lease) {
            held.unanswered.push(Unanswered { renew_time, sent_at });
            self.adopt_seen(lease, out);
        }
    }

    /// A renewal's conflict ends the tenure, unless an unanswered renewal
    /// may explain it: then the watch decides. A retry that required a
    /// version this replica has since moved past (the watch showed its
    /// unanswered renewal applied, before the retry's answer came) explains
    /// its own conflict: the next renewal requires the version adopted.
    fn renewal_conflicted(&mut self, lease: &LeaseName, required: Option<&str>, out: &mut Vec<Command>) {
        if self.adopt_seen(lease, out) == Settled::Adopted {
            return;
        }
        match self.held_mut(lease) {
            Some(held) if required.is_some_and(|v| v != held.resource_version) => {}
            Some(held) if !held.unanswered.is_empty() => {
                held.awaiting = true;
                // The watch may have shown another holder already.
                self.adopt_seen(lease, out);
            }
            Some(_) => self.give_up(lease, out),
            None => {}
        }
    }

    fn on_shard_written(
        &mut self,
        shard: u32,
        pending: Pending,
        outcome: WriteOutcome,
        out: &mut Vec<Command>,
    ) {
        match (pending.action, outcome) {
            (Action::Acquire, WriteOutcome::Written { resource_version }) => {
                self.next_tenure += 1;
                let tenure = self.next_tenure;
                let me = self.settings.identity.as_str();
                let previous = pending.previous.filter(|p| p != me);
                out.push(Command::Event(Event::Acquired { shard, tenure, previous: previous.clone() }));
                if let Some(previous) = previous {
                    out.push(Command::Event(Event::TakenOver { shard, previous }));
                }
                self.held.insert(shard, Held::new(resource_version, pending.sent_at, tenure));
            }
            (Action::Renew { .. }, WriteOutcome::Written { resource_version }) => {
                // A renewal answered after the shard was dropped changes
                // nothing: the Lease still names this replica, and is
                // acquired or released again by its version.
                if let Some(held) = self.held.get_mut(&shard) {
                    *held = Held::new(resource_version, pending.sent_at, held.tenure);
                }
            }
            (Action::Renew { .. }, WriteOutcome::TimedOut { renew_time }) => {
                self.renewal_unanswered(&LeaseName::Shard(shard), renew_time, pending.sent_at, out)
            }
            (Action::Renew { .. }, WriteOutcome::Conflict) => {
                self.renewal_conflicted(&LeaseName::Shard(shard), pending.precondition.as_deref(), out)
            }
            (Action::Release, WriteOutcome::Written { .. }) => {
                out.push(Command::Event(Event::Released(shard)))
            }
            _ => {}
        }
    }

    fn lose(&mut self, shard: u32, why: &'static str, out: &mut Vec<Command>) {
        self.held.remove(&shard);
        self.handover.forget(shard);
        out.push(Command::Event(Event::Lost { shard, why }));
    }

    fn may_write(&self, lease: &LeaseName, version: Option<&str>, now: Instant) -> bool {
        !self.pending.contains_key(lease)
            && self.backoff.get(lease).is_none_or(|until| *until <= now)
            && (version.is_none() || self.spent.get(lease).map(String::as_str) != version)
    }

    /// One level-based pass over everything.
    fn pass(&mut self, now: Instant, out: &mut Vec<Command>) {
        self.backoff.retain(|_, until| *until > now);
        if self.listed {
            self.keep_membership(now, out);
            self.drop_overdue(now, out);
            self.renew_due(now, out);
            let desired = self.desired(now);
            self.acquire(&desired, now, out);
            self.hand_over(&desired, now, out);
            self.release_stale(&desired, now, out);
        }
        self.publish(out);
        let wake = self.next_wake(now);
        self.wake_at = Some(wake);
        out.push(Command::WakeAt(wake));
    }

    fn keep_membership(&mut self, now: Instant, out: &mut Vec<Command>) {
        let lease = LeaseName::Member(self.settings.identity.clone());
        // A renewal that hangs must not keep the membership alive.
        if !self.stopping
            && self.member.as_ref().is_some_and(|m| m.renewed_at + self.settings.renew_deadline <= now)
        {
            self.member = None;
            self.membership_lapsed = true;
            out.push(Command::Event(Event::MembershipLapsed));
        }
        if self.pending.contains_key(&lease) {
            return;
        }
        if self.stopping {
            if let Some(member) = self.member.take() {
                let version = Precondition::Version(member.resource_version);
                self.write(lease, version, Action::Release, None, now, out);
            }
            return;
        }
        if let Some(member) = &self.member {
            if member.awaiting {
                return;
            }
            // Announce only what is still incoming.
            let standby: BTreeSet<u32> = self.standby_ready.intersection(&self.incoming).copied().collect();
            if member.renewed_at + self.settings.retry_period <= now || standby != self.announced {
                let version = Precondition::Version(member.resource_version.clone());
                self.write(lease, version, Action::Renew { standby: Some(standby) }, None, now, out);
            }
            return;
        }
        if !self.may_write(&lease, None, now) {
            return;
        }
        let precondition = match self.seen.get(&lease) {
            None => Precondition::Absent,
            Some(seen) => {
                let holder = seen.record.holder();
                if holder.is_some_and(|h| h != self.settings.identity) && seen.live_until(now).is_some() {
                    let holder = holder.unwrap_or_default().to_owned();
                    out.push(Command::Event(Event::DuplicateIdentity { holder }));
                    return;
                }
                Precondition::Version(seen.record.resource_version.clone())
            }
        };
        if let Precondition::Version(v) = &precondition
            && self.spent.get(&lease) == Some(v)
        {
            return;
        }
        self.write(lease, precondition, Action::Acquire, None, now, out);
    }

    /// Shards not renewed within the renew deadline stop at once: others
    /// may take them once they expire, later.
    fn drop_overdue(&mut self, now: Instant, out: &mut Vec<Command>) {
        for shard in self.held_plan(now).lose {
            self.lose(shard, "not renewed within the renew deadline", out);
        }
    }

    fn held_plan(&self, now: Instant) -> plan::PassPlan {
        let held = self.held.iter().map(|(s, h)| (*s, Some(h.renewed_at))).collect();
        let timing =
            Timing { renew_deadline: self.settings.renew_deadline, retry_period: self.settings.retry_period };
        plan::held_shards(&held, timing, now)
    }

    fn renew_due(&mut self, now: Instant, out: &mut Vec<Command>) {
        for shard in self.held_plan(now).renew {
            let lease = LeaseName::Shard(shard);
            if self.held[&shard].awaiting || !self.may_write(&lease, None, now) {
                continue;
            }
            let version = Precondition::Version(self.held[&shard].resource_version.clone());
            self.write(lease, version, Action::Renew { standby: None }, None, now, out);
        }
    }

    /// When a record seen at `since` counts as expired (see the module docs).
    fn expiry(&self, seen: &Seen) -> Option<Instant> {
        let duration = seen.record.duration?;
        #[cfg(test)]
        if self.sabotage == super::sim::Sabotage::TakeOverEarly {
            return Some(seen.since + duration / 2);
        }
        Some(seen.since + duration)
    }

    /// Since when a record is free: released, or expired.
    fn free_at(&self, seen: &Seen) -> Instant {
        match seen.record.holder() {
            None => seen.since,
            Some(_) => self.expiry(seen).unwrap_or(seen.since),
        }
    }

    fn is_free(&self, seen: &Seen, now: Instant) -> bool {
        self.free_at(seen) <= now
    }

    /// Until when a member Lease counts: its holder drops out by itself
    /// once it could not renew for the renew deadline, so the others do
    /// too (only the assignment depends on it; taking a shard still waits
    /// for the shard Lease to expire). A replica that (re)starts sees every
    /// listed record as new: this bounds how long it counts dead ones.
    fn member_until(&self, seen: &Seen) -> Option<Instant> {
        seen.record.holder()?;
        let until = self.expiry(seen)?;
        Some(until.min(seen.since + self.settings.renew_deadline))
    }

    fn is_live_member(&self, seen: &Seen, now: Instant) -> bool {
        self.member_until(seen).is_some_and(|until| now < until)
    }

    /// The members shards are assigned among: the live member Leases whose
    /// holders joined at least the warm-up ago, or all of them if none did
    /// (a fresh installation). This replica counts only as a member.
    /// Also says whether the installation forms (no member settled yet).
    fn members(&self, now: Instant) -> (Vec<&str>, bool) {
        let me = self.settings.identity.as_str();
        let mut live: Vec<(&str, Duration)> = self
            .member_records()
            .filter(|seen| self.is_live_member(seen, now))
            .filter_map(|seen| {
                let holder = seen.record.holder().filter(|h| *h != me)?;
                Some((holder, seen.record.held_for() + now.saturating_duration_since(seen.since)))
            })
            .collect();
        if self.is_member() {
            // By its own record, as the others see it (a crash in between
            // counts as membership for them too); until that is seen, by
            // when it joined.
            let own =
                self.seen.get(&LeaseName::Member(me.to_owned())).filter(|s| s.record.holder() == Some(me));
            let age = match (own, self.joined_at) {
                (Some(seen), _) => Some(seen.record.held_for() + now.saturating_duration_since(seen.since)),
                (None, Some(joined)) => Some(now.saturating_duration_since(joined)),
                (None, None) => None,
            };
            live.extend(age.map(|age| (me, age)));
        }
        let settled = |age: &Duration| *age >= self.settings.warmup;
        let any_settled = live.iter().any(|(_, age)| settled(age));
        let mut members: Vec<&str> =
            live.into_iter().filter(|(_, age)| !any_settled || settled(age)).map(|(m, _)| m).collect();
        // Member Leases are named after their holders, so this is sorted
        // but for this replica's own name; sorting 100 names per pass was
        // a tenth of a pass.
        if !members.is_sorted() {
            members.sort_unstable();
        }
        members.dedup();
        (members, !any_settled)
    }

    fn desired(&mut self, now: Instant) -> BTreeSet<u32> {
        // Every pass asks, most find nothing changed: compare before
        // allocating the names.
        let (members, forming) = self.members(now);
        let same_view = self.view.iter().map(String::as_str).eq(members.iter().copied());
        let members: Option<Vec<String>> =
            (!same_view).then(|| members.iter().map(|m| (*m).to_owned()).collect());
        self.forming = forming;
        if let Some(members) = members {
            self.view = members;
            self.view_since = Some(now);
        } else if self.view_since.is_none() {
            self.view_since = Some(now);
        }
        // While a forming installation's view settles, the last assignment
        // stands (nothing free is taken meanwhile): placing 1,000 shards
        // anew for each of 100 members as it was seen was most of their
        // start-up's CPU.
        let fresh = self.assigned.as_ref().is_some_and(|(m, _)| *m == self.view)
            && self.assigned_at == self.holdings_changed;
        if let Some((_, desired)) = &self.assigned
            && (fresh || self.formation_settling(now))
        {
            return desired.clone();
        }
        let members = self.view.clone();
        let desired: BTreeSet<u32> = if members.contains(&self.settings.identity) {
            self.place_me(&members)
        } else {
            self.successors.clear();
            BTreeSet::new()
        };
        self.assigned = Some((members, desired.clone()));
        self.assigned_at = self.holdings_changed;
        desired
    }

    /// This replica's shards in the placement among `members` (sorted,
    /// distinct), from the holders as seen ([`holdings`] in one pass), and
    /// the shards it is next in line for (`successors`).
    fn place_me(&mut self, members: &[String]) -> BTreeSet<u32> {
        let names: Vec<&str> = members.iter().map(String::as_str).collect();
        let Ok(me) = names.binary_search(&self.settings.identity.as_str()) else { return BTreeSet::new() };
        let mut index_of = vec![None; self.name_ids.len()];
        for (i, name) in names.iter().enumerate() {
            if let Some(id) = self.name_ids.get(*name) {
                index_of[*id] = Some(i);
            }
        }
        let index = |name: &str| names.binary_search(&name).ok();
        let mut bound: BTreeMap<u32, Option<usize>> = BTreeMap::new();
        for seen in self.member_records() {
            if let Some(holder) = seen.record.holder() {
                bound.extend(seen.record.standby.iter().map(|shard| (*shard, index(holder))));
            }
        }
        let slots = self.holders.iter().enumerate().filter_map(|(shard, holder)| {
            let (id, since) = (*holder)?;
            let shard = shard as u32;
            let slot = Slot { holder: index_of[id], since, bound_for: bound.get(&shard).copied().flatten() };
            Some((shard, slot))
        });
        let mut placed = place(&mut self.rankings, &names, slots);
        self.successors = successors(&mut self.rankings, &names, &placed, me);
        placed.swap_remove(me)
    }

    /// Desired shards that are free, or whose Lease still names this
    /// replica (it restarted, or a renewal's answer was lost).
    fn acquire(&mut self, desired: &BTreeSet<u32>, now: Instant, out: &mut Vec<Command>) {
        let me = self.settings.identity.clone();
        let in_grace = self.in_rejoin_grace(now);
        let view_settling = self.formation_settling(now);
        for shard in desired {
            if self.held.contains_key(shard) {
                continue;
            }
            let lease = LeaseName::Shard(*shard);
            let (precondition, previous) = match self.seen.get(&lease) {
                None if view_settling => continue,
                None => (Precondition::Absent, None),
                Some(seen) => {
                    let holder = seen.record.holder();
                    let mine = holder == Some(me.as_str());
                    if !mine && (view_settling || !self.is_free(seen, now)) {
                        continue;
                    }
                    if in_grace && holder.is_some() && !mine {
                        continue;
                    }
                    (Precondition::Version(seen.record.resource_version.clone()), holder.map(str::to_owned))
                }
            };
            let version = match &precondition {
                Precondition::Version(v) => Some(v.as_str()),
                _ => None,
            };
            if !self.may_write(&lease, version, now) {
                continue;
            }
            // A version that failed as "absent" is spent as "".
            if version.is_none() && self.spent.get(&lease).is_some_and(String::is_empty) {
                continue;
            }
            self.write(lease, precondition, Action::Acquire, previous, now, out);
        }
        let held: BTreeSet<u32> = self.held.keys().copied().collect();
        let wanted = plan::incoming(desired, &held);
        self.wanted_since.retain(|shard, _| wanted.contains(shard));
        for shard in &wanted {
            self.wanted_since.entry(*shard).or_insert(now);
        }
        self.incoming = wanted
            .into_iter()
            .filter(|shard| self.is_rescue(*shard, now) || self.wanted_since[shard] + MOVE_SETTLE <= now)
            .collect();
        self.back_up(desired, now, out);
    }

    /// Shards that stay free although another member desires them: their
    /// desired owner restarted (it counts every record it lists as new, so
    /// it waits a whole lease on them), or its view lags. The other members
    /// take them [`BACKUP_DELAY`] after they became free, the next in
    /// rendezvous order [`BACKUP_STEP`] later, so the wait for a rescue
    /// does not hang on one replica's view. The placement then moves the
    /// shard on as for any holder.
    fn back_up(&mut self, desired: &BTreeSet<u32>, now: Instant, out: &mut Vec<Command>) {
        if !self.is_member() || self.formation_settling(now) {
            self.backup_due = None;
            return;
        }
        // A scan reads every shard's record: not on every pass (a shard
        // that turned free is seen at most a scan period late).
        let due = self.backup_due.is_some_and(|due| due <= now);
        if !due && self.backup_scanned.is_some_and(|at| now < at + BACKUP_SCAN) {
            return;
        }
        self.backup_scanned = Some(now);
        let me = self.settings.identity.as_str();
        let in_grace = self.in_rejoin_grace(now);
        let mut due_now = Vec::new();
        let mut next: Option<Instant> = None;
        for (lease, seen) in self.seen.range(LeaseName::Shard(0)..) {
            let LeaseName::Shard(shard) = lease else { continue };
            let holder = seen.record.holder();
            let free_at = self.free_at(seen);
            let orphan = free_at <= now
                && !desired.contains(shard)
                && !self.held.contains_key(shard)
                && holder != Some(me)
                && !(in_grace && holder.is_some());
            if !orphan {
                continue;
            }
            // Ranks only for shards that may be due: while 1,000 shards
            // are free at once for a moment, most are taken before.
            let due = if free_at + BACKUP_DELAY <= now {
                let rank = rank_among(*shard, me, self.view.iter().map(String::as_str));
                free_at + BACKUP_DELAY + BACKUP_STEP * rank as u32
            } else {
                free_at + BACKUP_DELAY
            };
            if due <= now {
                due_now.push((
                    lease.clone(),
                    seen.record.resource_version.clone(),
                    holder.map(str::to_owned),
                ));
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        self.backup_due = next;
        for (lease, version, previous) in due_now {
            if self.may_write(&lease, Some(&version), now) {
                self.write(lease, Precondition::Version(version), Action::Acquire, previous, now, out);
            }
        }
    }

    /// After a lapse: shards last held by others are left to them.
    fn in_rejoin_grace(&self, now: Instant) -> bool {
        self.rejoin_grace_until.is_some_and(|until| now < until)
    }

    /// The installation forms and the members seen changed within the
    /// formation settle: free shards wait.
    fn formation_settling(&self, now: Instant) -> bool {
        self.forming && self.view_since.is_none_or(|since| now < since + self.settings.formation_settle)
    }

    /// A shard nobody holds, or whose holder is stopping (it gave up its
    /// member Lease): taken without waiting for the view to settle.
    fn is_rescue(&self, shard: u32, now: Instant) -> bool {
        let Some(seen) = self.seen.get(&LeaseName::Shard(shard)) else { return true };
        if self.is_free(seen, now) {
            return true;
        }
        let holder = seen.record.holder().unwrap_or_default();
        self.seen.get(&LeaseName::Member(holder.to_owned())).is_none_or(|m| m.record.holder() != Some(holder))
    }

    /// Held shards no longer desired: written until the new owner announced
    /// a standby (or a wait passed), then drained by the controller, then
    /// released. Their fences shut before the release is sent.
    fn hand_over(&mut self, desired: &BTreeSet<u32>, now: Instant, out: &mut Vec<Command>) {
        let held: BTreeSet<u32> = self.held.keys().copied().collect();
        let me = self.settings.identity.as_str();
        // With no other member nobody will announce: no wait.
        let others = self.assigned.as_ref().is_some_and(|(members, _)| members.iter().any(|m| m != me));
        let mut standby_elsewhere = BTreeSet::new();
        for seen in self.member_records() {
            if seen.record.holder().is_some_and(|h| h != me) && self.is_live_member(seen, now) {
                standby_elsewhere.extend(seen.record.standby.iter().copied());
            }
        }
        let release = self.handover.pass(
            &held,
            desired,
            &self.drained,
            others.then_some(&standby_elsewhere),
            now,
            self.settings.handover_wait,
        );
        self.drained.retain(|s| self.handover.releasing.contains(s));
        for shard in release {
            let lease = LeaseName::Shard(shard);
            if self.pending.contains_key(&lease) {
                continue;
            }
            let Some(held) = self.held.remove(&shard) else { continue };
            self.handover.forget(shard);
            self.drained.remove(&shard);
            let version = Precondition::Version(held.resource_version);
            self.write(lease, version, Action::Release, None, now, out);
        }
    }

    /// Leases that name this replica but that it neither holds nor desires
    /// (it restarted, or a write's answer was lost): given back at once,
    /// so their new owner need not wait for them to expire.
    fn release_stale(&mut self, desired: &BTreeSet<u32>, now: Instant, out: &mut Vec<Command>) {
        // Until it joined, it does not know what it will be given.
        if !self.is_member() && !self.stopping {
            return;
        }
        let stale: Vec<(LeaseName, String)> = self
            .named_me
            .iter()
            .filter(|shard| !self.held.contains_key(shard) && !desired.contains(shard))
            .filter_map(|shard| {
                let lease = LeaseName::Shard(*shard);
                let seen = self.seen.get(&lease).filter(|seen| seen.live_until(now).is_some())?;
                Some((lease, seen.record.resource_version.clone()))
            })
            .collect();
        for (lease, version) in stale {
            if self.may_write(&lease, Some(&version), now) {
                self.write(lease, Precondition::Version(version), Action::Release, None, now, out);
            }
        }
    }

    fn publish(&mut self, out: &mut Vec<Command>) {
        let ownership = Ownership {
            held: self
                .held
                .iter()
                .map(|(shard, held)| {
                    let shard_view = HeldShard {
                        expires: held.renewed_at + self.settings.lease_duration,
                        releasing: self.handover.releasing.contains(shard),
                        tenure: held.tenure,
                    };
                    (*shard, shard_view)
                })
                .collect(),
            incoming: self.incoming.clone(),
            // A shard still held is handed over first. One desired but not
            // incoming yet (its move settles) keeps its standby meanwhile:
            // a crashed owner's shards are desired here before they are free.
            successor: self
                .successors
                .iter()
                .chain(self.wanted_since.keys())
                .filter(|s| !self.held.contains_key(s) && !self.incoming.contains(s))
                .copied()
                .collect(),
            // Suspension stays off, as in the coordinator before: a lapse
            // ends the tenure and fresh workers resync.
            suspended: BTreeMap::new(),
        };
        if ownership != self.published {
            self.published = ownership.clone();
            out.push(Command::Publish(ownership));
        }
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let retry = self.settings.retry_period;
        let deadline = self.settings.renew_deadline;
        let mut next = now + retry;
        // Only what lies ahead: an expiry already past was acted on.
        let mut consider = |at: Instant| {
            if at > now {
                next = next.min(at);
            }
        };
        for held in self.held.values().chain(self.member.iter()) {
            consider(held.renewed_at + retry);
            consider(held.renewed_at + deadline);
        }
        if let Some(at) = self.handover.next_deadline(self.settings.handover_wait) {
            consider(at);
        }
        for until in self.backoff.values() {
            consider(*until);
        }
        // A desired shard whose holder stopped renewing becomes free at its
        // expiry, and a member that stopped renewing leaves the assignment
        // at its own: look again then.
        for (shard, since) in &self.wanted_since {
            if !self.incoming.contains(shard) {
                consider(*since + MOVE_SETTLE);
            }
        }
        if self.forming
            && !self.wanted_since.is_empty()
            && let Some(since) = self.view_since
        {
            consider(since + self.settings.formation_settle);
        }
        let desired = self.wanted_since.keys().map(|s| LeaseName::Shard(*s));
        for lease in desired {
            if let Some(at) = self.seen.get(&lease).and_then(|seen| self.expiry(seen)) {
                consider(at + EXPIRY_SLACK);
            }
        }
        for seen in self.member_records() {
            if let Some(at) = self.member_until(seen) {
                consider(at + EXPIRY_SLACK);
            }
        }
        if let Some(at) = self.backup_due {
            consider(at);
        }
        next.max(now + MIN_WAKE)
    }
}
