//! The shard coordinator: keeps this replica's member Lease, acquires the
//! shard Leases that rendezvous hashing gives it, renews them, hands over
//! the ones it should no longer own (only after the controller drained
//! them), and drops every shard it could not renew in time.
//!
//! In: the Leases of the installation (a watch, so a released shard is taken
//! within milliseconds), "drained" reports from the controller, the stop
//! signal. Out: [`Ownership`], which the controller and the push fences read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, info, warn};

use super::hash::{assignment, shard_of};
use super::lease::{Claim, LeaseClient};
use super::ownership::{Fence, HeldShard, Ownership, OwnershipView};
use super::plan::{self, Timing};
use super::records::{
    Record, STANDBY_ANNOTATION, assignment_members, format_shards, record, standby_announced,
};
use super::settings::ShardSettings;
use crate::health::Heartbeat;
use crate::route::BranchKey;
use crate::telemetry::ShardMetrics;

/// Label on every Lease of an installation; its value is the Lease prefix.
pub const LEASE_SET_LABEL: &str = "configbutler.ai/lease-set";
/// Lease writes in flight at once.
const CONCURRENT_WRITES: usize = 16;
/// Lets a burst of Lease events settle into one pass.
const SETTLE: Duration = Duration::from_millis(20);
/// How often the loop shows it is alive while it waits for the first list.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The shortest wait for a new owner's standby announcement.
const MIN_HANDOVER_WAIT: Duration = Duration::from_secs(20);

/// What the controller holds: the view, fences, and the drained channel.
#[derive(Clone)]
pub struct ShardHandle {
    pub view: OwnershipView,
    pub shards: u32,
    push_timeout: Duration,
    drained: mpsc::UnboundedSender<u32>,
    standby: Arc<watch::Sender<BTreeSet<u32>>>,
}

impl ShardHandle {
    pub fn shard_of(&self, key: &BranchKey) -> u32 {
        shard_of(key, self.shards)
    }

    pub fn fence(&self, shard: u32) -> Fence {
        Fence::new(shard, self.push_timeout, self.view.clone())
    }

    /// The controller stopped every worker of a releasing shard and pushed
    /// what they held: the Lease may go.
    pub fn report_drained(&self, shard: u32) {
        let _ = self.drained.send(shard);
    }

    /// The incoming shards whose branches this replica now routes to
    /// standby workers: the current owner may stop writing them.
    pub fn report_standby(&self, shards: BTreeSet<u32>) {
        self.standby.send_if_modified(|current| {
            let changed = *current != shards;
            *current = shards;
            changed
        });
    }
}

pub struct Coordinator {
    settings: ShardSettings,
    leases: LeaseClient,
    api: Api<Lease>,
    metrics: ShardMetrics,
    recorder: Recorder,
    member: Option<Claim>,
    held: BTreeMap<u32, Claim>,
    handover: plan::Handover,
    /// Desired shards another live replica holds (from the last pass).
    incoming: BTreeSet<u32>,
    drained: BTreeSet<u32>,
    drained_rx: mpsc::UnboundedReceiver<u32>,
    standby_rx: watch::Receiver<BTreeSet<u32>>,
    /// The standby shards written on the member Lease.
    announced: BTreeSet<u32>,
    /// The tenure of each held shard (see [`HeldShard::tenure`]).
    tenures: BTreeMap<u32, u64>,
    /// See [`Ownership::suspended`].
    suspended: BTreeMap<u32, u64>,
    next_tenure: u64,
    /// The member Lease lapsed (the API server could not be reached).
    membership_lapsed: bool,
    /// After a lapse, until then, shards whose Lease names another replica
    /// are left to it: it was cut off too, and is likely coming back.
    rejoin_grace_until: Option<Instant>,
    view: watch::Sender<Arc<Ownership>>,
    /// Beaten every time the loop turns (`/healthz`).
    heartbeat: Option<Arc<Heartbeat>>,
}

fn renewed_at(claim: &Claim) -> Option<Instant> {
    match claim {
        Claim::Held { renewed_at, .. } => Some(*renewed_at),
        _ => None,
    }
}

fn expires(claim: &Claim) -> Option<Instant> {
    match claim {
        Claim::Held { expires, .. } => Some(*expires),
        _ => None,
    }
}

impl Coordinator {
    /// `client` serves the Lease watch; `calls`, with a short read timeout,
    /// the Lease writes and Events: a hung renewal fails in seconds.
    pub fn new(
        client: kube::Client,
        calls: kube::Client,
        settings: ShardSettings,
        metrics: ShardMetrics,
    ) -> (Self, ShardHandle) {
        let labels = BTreeMap::from([(LEASE_SET_LABEL.to_owned(), settings.prefix.clone())]);
        let leases = LeaseClient::new(
            calls.clone(),
            &settings.namespace,
            settings.identity.clone(),
            settings.lease_duration,
        )
        .with_labels(labels);
        let reporter =
            Reporter { controller: "gitops-reverser".into(), instance: Some(settings.identity.clone()) };
        let (view, view_rx) = watch::channel(Arc::new(Ownership::default()));
        let (drained_tx, drained_rx) = mpsc::unbounded_channel();
        let (standby_tx, standby_rx) = watch::channel(BTreeSet::new());
        let handle = ShardHandle {
            view: view_rx,
            shards: settings.shards,
            push_timeout: settings.push_timeout,
            drained: drained_tx,
            standby: Arc::new(standby_tx),
        };
        let coordinator = Self {
            api: Api::namespaced(client.clone(), &settings.namespace),
            recorder: Recorder::new(calls, reporter),
            settings,
            leases,
            metrics,
            member: None,
            held: BTreeMap::new(),
            handover: plan::Handover::default(),
            incoming: BTreeSet::new(),
            drained: BTreeSet::new(),
            drained_rx,
            standby_rx,
            announced: BTreeSet::new(),
            tenures: BTreeMap::new(),
            suspended: BTreeMap::new(),
            next_tenure: 0,
            membership_lapsed: false,
            rejoin_grace_until: None,
            view,
            heartbeat: None,
        };
        (coordinator, handle)
    }

    /// Beats `heartbeat` every time the loop turns, for `/healthz`.
    pub fn with_heartbeat(mut self, heartbeat: Arc<Heartbeat>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    fn beat(&self) {
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.beat();
        }
    }

    /// Runs until `stop`; then leaves the membership, waits (up to
    /// `shutdown_budget`) for the controller to drain, and releases.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, shutdown_budget: Duration) {
        let (store, writer) = reflector::store();
        let changed = Arc::new(Notify::new());
        let selector = format!("{LEASE_SET_LABEL}={}", self.settings.prefix);
        let events = reflector::reflector(
            writer,
            watcher(self.api.clone(), watcher::Config::default().labels(&selector)),
        )
        .default_backoff()
        .touched_objects();
        let notify = changed.clone();
        let watch_task = tokio::spawn(async move {
            events
                .for_each(|event| {
                    if let Err(error) = event {
                        warn!(%error, "watching the shard Leases failed; retrying");
                    }
                    notify.notify_one();
                    async {}
                })
                .await;
        });
        info!(
            shards = self.settings.shards,
            namespace = %self.settings.namespace,
            prefix = %self.settings.prefix,
            "joining the shard membership"
        );

        // The first list may wait out an API server outage: still alive.
        let mut alive = tokio::time::interval(HEARTBEAT);
        let ready = store.wait_until_ready();
        tokio::pin!(ready);
        loop {
            tokio::select! {
                _ = &mut ready => break,
                _ = until_stopped(&mut stop) => break,
                _ = alive.tick() => self.beat(),
            }
        }
        let mut next = Instant::now();
        loop {
            self.beat();
            let stopping = *stop.borrow();
            if stopping {
                break;
            }
            let mut settle = false;
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = changed.notified() => settle = true,
                Some(shard) = self.drained_rx.recv() => { self.drained.insert(shard); }
                Ok(()) = self.standby_rx.changed() => {}
                _ = until_stopped(&mut stop) => break,
            }
            if settle {
                tokio::time::sleep(SETTLE).await;
            }
            next = self.pass(&store, &stop).await;
        }

        info!(shards = self.held.len(), "leaving the shard membership: draining, then releasing");
        self.leave().await;
        let deadline = Instant::now() + shutdown_budget;
        loop {
            let next = self.pass(&store, &stop).await;
            if self.held.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next.min(deadline).into()) => {}
                Some(shard) = self.drained_rx.recv() => { self.drained.insert(shard); }
                // The new owners announce their standby on their member Leases.
                _ = changed.notified() => tokio::time::sleep(SETTLE).await,
            }
        }
        if !self.held.is_empty() {
            warn!(shards = ?self.held.keys().collect::<Vec<_>>(), "not drained in time; these Leases will expire");
        }
        watch_task.abort();
    }

    /// One level-based pass; returns when the next one is due.
    async fn pass(&mut self, store: &Store<Lease>, stop: &watch::Receiver<bool>) -> Instant {
        while let Ok(shard) = self.drained_rx.try_recv() {
            self.drained.insert(shard);
        }
        // Read after the reports: once stopping, the controller reports shards
        // this replica still desires, and an ordinary pass would forget them.
        let stopping = *stop.borrow();
        if !stopping {
            self.keep_membership().await;
        }
        self.drop_overdue();
        self.renew_due().await;

        let leases = store.state();
        let wall = Timestamp::now();
        let records: BTreeMap<u32, Record> = (0..self.settings.shards)
            .map(|shard| {
                let lease = store.get(&self.lease_ref(shard));
                (shard, record(lease.as_deref(), wall))
            })
            .collect();
        let member = self.member.as_ref().is_some_and(Claim::is_held) && !stopping;
        let own = store.get(&ObjectRef::new(&self.settings.member_lease()).within(&self.settings.namespace));
        let joined = member
            .then(|| own.and_then(|l| l.spec.as_ref()?.acquire_time.as_ref().map(|t| t.0)).unwrap_or(wall));
        let members = assignment_members(
            &self.settings,
            leases.iter().map(|l| l.as_ref()),
            wall,
            super::settings::warmup(self.settings.lease_duration),
            joined,
        );
        let member = members.contains(&self.settings.identity);
        let desired: BTreeSet<u32> = if member {
            assignment(self.settings.shards, &members)
                .remove(&self.settings.identity)
                .unwrap_or_default()
                .into_iter()
                .collect()
        } else {
            BTreeSet::new()
        };

        self.end_superseded_tenures(store);
        self.acquire(&desired, &records, store).await;
        let held: BTreeSet<u32> = self.held.keys().copied().collect();
        self.incoming = plan::incoming(&desired, &held);
        let standby_elsewhere = standby_announced(
            &self.settings,
            leases.iter().map(|l| l.as_ref()),
            wall,
            &self.settings.identity,
        );
        let release = self.handover.pass(
            &held,
            &desired,
            &self.drained,
            members.iter().any(|m| m != &self.settings.identity).then_some(&standby_elsewhere),
            Instant::now(),
            self.handover_wait(),
        );
        self.drained.retain(|s| self.handover.releasing.contains(s));
        self.release_drained(release).await;

        let unowned = records
            .iter()
            .filter(|(shard, r)| !self.held.contains_key(shard) && matches!(r, Record::Free))
            .count();
        self.metrics.unowned.set(unowned as i64);
        self.metrics.owned.set(self.held.len() as i64);
        self.publish();
        let member_prefix = self.settings.member_prefix();
        let member_expiries: Vec<Timestamp> = leases
            .iter()
            .filter(|l| l.metadata.name.as_deref().is_some_and(|n| n.starts_with(&member_prefix)))
            .filter_map(|l| match record(Some(l), wall) {
                Record::Live { holder, expires_at } if holder != self.settings.identity => Some(expires_at),
                _ => None,
            })
            .collect();
        self.next_wake(&desired, &records, &member_expiries, wall)
    }

    /// How long a shard handed over waits for the new owner's standby: a
    /// starting replica checks write access and lists its resources first,
    /// which took 5 s under load in the HA tests (stopping earlier loses
    /// every value changed twice before the standby lists).
    fn handover_wait(&self) -> Duration {
        (self.settings.retry_period * 2).max(MIN_HANDOVER_WAIT)
    }

    fn lease_ref(&self, shard: u32) -> ObjectRef<Lease> {
        ObjectRef::new(&self.settings.shard_lease(shard)).within(&self.settings.namespace)
    }

    async fn keep_membership(&mut self) {
        let name = self.settings.member_lease();
        let now = Instant::now();
        // Announce only what is still incoming: an acquired or vanished
        // shard needs no announcement.
        let standby: BTreeSet<u32> = self.standby_rx.borrow().intersection(&self.incoming).copied().collect();
        let announce = standby != self.announced;
        let result = match &self.member {
            Some(claim @ Claim::Held { renewed_at, .. }) => {
                if *renewed_at + self.settings.retry_period > now && !announce {
                    return;
                }
                let value = format_shards(&standby);
                self.leases.renew_annotated(&name, claim, Some((STANDBY_ANNOTATION, &value))).await
            }
            _ => self.leases.try_acquire(&name).await,
        };
        if matches!(result, Ok(Claim::Held { .. })) && self.member.is_some() && announce {
            info!(shards = %format_shards(&standby), "announced standby");
            self.announced = standby;
        }
        match result {
            Ok(claim @ Claim::Held { .. }) => {
                if !self.member.as_ref().is_some_and(Claim::is_held) {
                    info!(lease = %name, "joined as a member");
                    if std::mem::take(&mut self.membership_lapsed) {
                        let until = now + self.settings.lease_duration;
                        info!(
                            grace = ?self.settings.lease_duration,
                            "rejoined after a lapse: shards last held by other replicas are left to them meanwhile"
                        );
                        self.rejoin_grace_until = Some(until);
                    }
                }
                self.member = Some(claim);
            }
            Ok(Claim::HeldByOther { holder, .. }) => {
                warn!(lease = %name, %holder, "another process holds this replica's member Lease: replica names must be unique");
                self.member = None;
            }
            Ok(Claim::Lost) => self.member = None,
            Err(error) => {
                self.metrics.renew_failures.inc();
                warn!(%error, "cannot renew the member Lease");
                if self
                    .member
                    .as_ref()
                    .and_then(renewed_at)
                    .is_some_and(|at| at + self.settings.renew_deadline <= Instant::now())
                {
                    self.member = None;
                    self.membership_lapsed = true;
                }
            }
        }
    }

    /// Shards not renewed within the renew deadline stop at once: the
    /// Lease may be taken by others once it expires, a little later.
    fn drop_overdue(&mut self) {
        for shard in self.held_plan(Instant::now()).lose {
            // Not resumable for now: in 2 of 13 `ha_apiserver_restart` runs a
            // worker kept through the lapse ended with a deleted object's
            // file still in its view, so the branch never converged. Until
            // that is found, a lapse ends the tenure and fresh workers resync.
            self.lose(shard, "not renewed within the renew deadline", false);
        }
    }

    fn held_plan(&self, now: Instant) -> plan::PassPlan {
        let held = self.held.iter().map(|(s, c)| (*s, renewed_at(c))).collect();
        let timing =
            Timing { renew_deadline: self.settings.renew_deadline, retry_period: self.settings.retry_period };
        plan::held_shards(&held, timing, now)
    }

    /// `resumable`: nobody else is known to hold it (only the renewal
    /// failed), so its tenure is suspended rather than ended.
    fn lose(&mut self, shard: u32, why: &str, resumable: bool) {
        self.held.remove(&shard);
        self.handover.forget(shard);
        self.metrics.handover("lost");
        warn!(shard, why, "lost shard");
        if let Some(tenure) = self.tenures.remove(&shard).filter(|_| resumable) {
            self.suspended.insert(shard, tenure);
        }
    }

    /// A suspended tenure ends once the Lease is seen naming anyone else
    /// (or nobody: released): another replica may have written the branch.
    fn end_superseded_tenures(&mut self, store: &Store<Lease>) {
        let ended: Vec<u32> = self
            .suspended
            .keys()
            .copied()
            .filter(|shard| {
                self.stored_holder(store, *shard).as_deref() != Some(self.settings.identity.as_str())
            })
            .collect();
        for shard in ended {
            let tenure = self.suspended.remove(&shard);
            info!(shard, tenure, "a suspended shard was taken by another replica: its workers stop");
        }
    }

    /// Who the watched record of a shard's Lease names, if anyone.
    fn stored_holder(&self, store: &Store<Lease>, shard: u32) -> Option<String> {
        let lease = store.get(&self.lease_ref(shard))?;
        lease.spec.as_ref()?.holder_identity.clone().filter(|h| !h.is_empty())
    }

    /// The tenure of a shard just acquired: the suspended one if the
    /// replaced Lease still named this replica, else a new one.
    fn tenure_after(&mut self, shard: u32, previous: Option<&str>) -> u64 {
        let suspended = self.suspended.remove(&shard);
        match suspended.filter(|_| previous == Some(self.settings.identity.as_str())) {
            Some(tenure) => {
                info!(shard, tenure, "shard back after a lapse nobody else used: its workers go on");
                tenure
            }
            None => {
                self.next_tenure += 1;
                self.next_tenure
            }
        }
    }

    async fn renew_due(&mut self) {
        let due: Vec<(u32, Claim)> = self
            .held_plan(Instant::now())
            .renew
            .into_iter()
            .filter_map(|s| Some((s, self.held.get(&s)?.clone())))
            .collect();
        let leases = &self.leases;
        let settings = &self.settings;
        let results: Vec<_> =
            futures::stream::iter(due)
                .map(|(shard, claim)| async move {
                    (shard, leases.renew(&settings.shard_lease(shard), &claim).await)
                })
                .buffer_unordered(CONCURRENT_WRITES)
                .collect()
                .await;
        for (shard, result) in results {
            match result {
                Ok(claim @ Claim::Held { .. }) => {
                    self.held.insert(shard, claim);
                }
                Ok(_) => self.lose(shard, "another replica holds the Lease", false),
                Err(error) => {
                    self.metrics.renew_failures.inc();
                    warn!(shard, %error, "cannot renew a shard Lease; retrying");
                }
            }
        }
    }

    async fn acquire(
        &mut self,
        desired: &BTreeSet<u32>,
        records: &BTreeMap<u32, Record>,
        store: &Store<Lease>,
    ) {
        let me = self.settings.identity.clone();
        let held: BTreeSet<u32> = self.held.keys().copied().collect();
        let mut wanted = plan::to_acquire(desired, &held, records, &me);
        if self.rejoin_grace_until.is_some_and(|until| Instant::now() < until) {
            wanted.retain(|shard| self.stored_holder(store, *shard).is_none_or(|h| h == me));
        }
        if wanted.is_empty() {
            return;
        }
        let leases = &self.leases;
        let settings = &self.settings;
        let results: Vec<_> = futures::stream::iter(wanted)
            .map(|shard| async move { (shard, leases.try_acquire_after(&settings.shard_lease(shard)).await) })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        for (shard, result) in results {
            match result {
                Ok((claim @ Claim::Held { .. }, replaced)) => {
                    let tenure = self.tenure_after(shard, replaced.as_deref());
                    self.tenures.insert(shard, tenure);
                    let before = store.get(&self.lease_ref(shard));
                    let previous = replaced.filter(|h| h != &me);
                    info!(shard, previous = previous.as_deref().unwrap_or(""), tenure, "acquired shard");
                    self.metrics.handover("acquired");
                    self.held.insert(shard, claim);
                    if let (Some(previous), Some(lease)) = (previous, before) {
                        self.takeover_event(shard, &previous, &lease).await;
                    }
                }
                Ok((other, _)) => debug!(shard, ?other, "shard not acquired"),
                Err(error) => warn!(shard, %error, "cannot acquire a shard Lease"),
            }
        }
    }

    /// A takeover from a replica that did not release (crashed, frozen or
    /// cut off) is worth an Event; a handover after release is routine.
    async fn takeover_event(&self, shard: u32, previous: &str, lease: &Lease) {
        let event = Event {
            type_: EventType::Warning,
            reason: "ShardTakenOver".into(),
            note: Some(format!(
                "replica {} took over shard {shard} from {previous}, whose Lease expired without a release",
                self.settings.identity
            )),
            action: "Acquire".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &lease.object_ref(&())).await {
            debug!(%error, "cannot publish the takeover Event");
        }
    }

    async fn release_drained(&mut self, release: Vec<u32>) {
        let ready: Vec<(u32, Claim)> =
            release.into_iter().filter_map(|shard| Some((shard, self.held.get(&shard)?.clone()))).collect();
        let leases = &self.leases;
        let settings = &self.settings;
        let results: Vec<_> = futures::stream::iter(ready)
            .map(|(shard, claim)| async move {
                (shard, leases.release(&settings.shard_lease(shard), &claim).await)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        for (shard, result) in results {
            match result {
                Ok(()) => {
                    self.held.remove(&shard);
                    self.tenures.remove(&shard);
                    self.handover.forget(shard);
                    self.drained.remove(&shard);
                    self.metrics.handover("released");
                    info!(shard, "released shard");
                }
                Err(error) => warn!(shard, %error, "cannot release a shard Lease; retrying"),
            }
        }
    }

    /// Gives the member Lease back, so the others rebalance at once.
    async fn leave(&mut self) {
        if let Some(claim) = self.member.take()
            && let Err(error) = self.leases.release(&self.settings.member_lease(), &claim).await
        {
            warn!(%error, "cannot release the member Lease; it will expire");
        }
    }

    fn publish(&self) {
        let ownership = Ownership {
            held: self
                .held
                .iter()
                .filter_map(|(shard, claim)| {
                    let releasing = self.handover.releasing.contains(shard);
                    let tenure = self.tenures.get(shard).copied().unwrap_or_default();
                    Some((*shard, HeldShard { expires: expires(claim)?, releasing, tenure }))
                })
                .collect(),
            incoming: self.incoming.clone(),
            suspended: self.suspended.clone(),
        };
        // Expiry times change on every renewal, which fences read; only a
        // change of roles wakes the controller.
        self.view.send_if_modified(|current| {
            let roles_changed = !current.same_roles(&ownership);
            *current = Arc::new(ownership);
            roles_changed
        });
    }

    fn next_wake(
        &self,
        desired: &BTreeSet<u32>,
        records: &BTreeMap<u32, Record>,
        member_expiries: &[Timestamp],
        wall: Timestamp,
    ) -> Instant {
        let now = Instant::now();
        let retry = self.settings.retry_period;
        let mut next = now + retry;
        if let Some(deadline) = self.handover.next_deadline(self.handover_wait()) {
            next = next.min(deadline);
        }
        for claim in self.held.values().chain(self.member.iter()) {
            if let Some(at) = renewed_at(claim) {
                next = next.min(at + retry);
            }
        }
        // A desired shard whose holder stopped renewing becomes free at its
        // recorded expiry, and a member that stopped renewing leaves the
        // assignment at its own: look again then, not a retry period later.
        let held_by_others =
            desired.iter().filter(|s| !self.held.contains_key(s)).filter_map(|s| match records.get(s) {
                Some(Record::Live { expires_at, .. }) => Some(*expires_at),
                _ => None,
            });
        for expires_at in held_by_others.chain(member_expiries.iter().copied()) {
            let left = Duration::try_from(expires_at.duration_since(wall)).unwrap_or_default();
            next = next.min(now + left + Duration::from_millis(50));
        }
        next.max(now + Duration::from_millis(10))
    }
}

async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
