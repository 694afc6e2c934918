//! The shard coordinator's shell: carries Lease events, write results and
//! the controller's reports into [`ShardCore`], and its commands out (Lease
//! writes, the published [`Ownership`], logs, metrics, Events, wake-ups).
//! Every decision is the core's (`core`); this file only carries.
//!
//! In: the Leases of the installation (a watch, so a released shard is taken
//! within milliseconds), "drained" and "standby" reports from the
//! controller, the stop signal. Out: [`Ownership`], which the controller
//! and the push fences read.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::core::{
    Command, CoreSettings, Event, Input, LeaseName, LeaseRecord, ShardCore, Write, WriteOutcome,
};
use super::hash::shard_of;
use super::lease::LeaseClient;
use super::ownership::{Fence, Ownership, OwnershipView};
use super::records::{STANDBY_ANNOTATION, parse_shards};
use super::settings::ShardSettings;
use crate::health::Heartbeat;
use crate::route::BranchKey;
use crate::telemetry::ShardMetrics;

/// Label on every Lease of an installation; its value is the Lease prefix.
pub const LEASE_SET_LABEL: &str = "configbutler.ai/lease-set";
/// Lease writes in flight at once.
const CONCURRENT_WRITES: usize = 16;
/// How often the loop shows it is alive while it waits.
const HEARTBEAT: Duration = Duration::from_secs(1);

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

type Written = (LeaseName, WriteOutcome, Option<Lease>);

pub struct Coordinator {
    settings: ShardSettings,
    core: ShardCore,
    leases: LeaseClient,
    api: Api<Lease>,
    metrics: ShardMetrics,
    recorder: Recorder,
    drained_rx: mpsc::UnboundedReceiver<u32>,
    standby_rx: watch::Receiver<BTreeSet<u32>>,
    view: watch::Sender<Arc<Ownership>>,
    /// Beaten every time the loop turns (`/healthz`).
    heartbeat: Option<Arc<Heartbeat>>,
    /// The newest object of each Lease, from the watch or a write: the base
    /// of the next replace (which carries the core's precondition).
    objects: BTreeMap<String, Lease>,
    /// Writes the core asked for, waiting for a free slot.
    queued: VecDeque<Write>,
    in_flight: FuturesUnordered<BoxFuture<'static, Written>>,
    wake: Instant,
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
            api: Api::namespaced(client, &settings.namespace),
            recorder: Recorder::new(calls, reporter),
            core: ShardCore::new(CoreSettings::from(&settings)),
            settings,
            leases,
            metrics,
            drained_rx,
            standby_rx,
            view,
            heartbeat: None,
            objects: BTreeMap::new(),
            queued: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            wake: Instant::now(),
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
        let selector = format!("{LEASE_SET_LABEL}={}", self.settings.prefix);
        let mut events =
            watcher(self.api.clone(), watcher::Config::default().labels(&selector)).default_backoff().boxed();
        info!(
            shards = self.settings.shards,
            namespace = %self.settings.namespace,
            prefix = %self.settings.prefix,
            "joining the shard membership"
        );
        let mut alive = tokio::time::interval(HEARTBEAT);
        // The names a relist has shown so far; the rest were deleted.
        let mut listing: Option<BTreeSet<String>> = None;
        let mut stop_deadline: Option<Instant> = None;
        loop {
            self.beat();
            if stop_deadline.is_none() && *stop.borrow() {
                info!(
                    shards = self.core.ownership().held.len(),
                    "leaving the shard membership: draining, then releasing"
                );
                stop_deadline = Some(Instant::now() + shutdown_budget);
                self.feed(Input::Stop);
            }
            if let Some(deadline) = stop_deadline
                && (self.core.is_done() || Instant::now() >= deadline)
            {
                break;
            }
            let wake = stop_deadline.map_or(self.wake, |deadline| self.wake.min(deadline));
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => self.on_watch(event, &mut listing),
                    Some(Err(error)) => warn!(%error, "watching the shard Leases failed; retrying"),
                    None => break,
                },
                Some((lease, outcome, written)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    if let Some(object) = written
                        && let Some(name) = object.metadata.name.clone()
                    {
                        self.objects.insert(name, object);
                    }
                    self.feed(Input::Written { lease, outcome });
                }
                Some(shard) = self.drained_rx.recv() => self.feed(Input::Drained(shard)),
                Ok(()) = self.standby_rx.changed(), if stop_deadline.is_none() => {
                    let standby = self.standby_rx.borrow_and_update().clone();
                    self.feed(Input::Standby(standby));
                }
                _ = until_stopped(&mut stop), if stop_deadline.is_none() => {}
                _ = tokio::time::sleep_until(wake.into()) => self.feed(Input::Tick),
                _ = alive.tick() => {}
            }
        }
        let held: Vec<u32> = self.core.ownership().held.keys().copied().collect();
        if !held.is_empty() {
            warn!(shards = ?held, "not drained in time; these Leases will expire");
        }
    }

    fn on_watch(&mut self, event: watcher::Event<Lease>, listing: &mut Option<BTreeSet<String>>) {
        match event {
            watcher::Event::Init => *listing = Some(BTreeSet::new()),
            watcher::Event::InitApply(lease) => {
                if let (Some(names), Some(name)) = (listing.as_mut(), lease.metadata.name.clone()) {
                    names.insert(name);
                }
                self.observed(lease);
            }
            watcher::Event::InitDone => {
                // A relist does not say what was deleted meanwhile.
                let listed = listing.take().unwrap_or_default();
                let gone: Vec<String> =
                    self.objects.keys().filter(|n| !listed.contains(*n)).cloned().collect();
                for name in gone {
                    self.objects.remove(&name);
                    if let Some(lease) = self.lease_name(&name) {
                        self.feed(Input::Observed { lease, record: None });
                    }
                }
                self.feed(Input::Listed);
            }
            watcher::Event::Apply(lease) => self.observed(lease),
            watcher::Event::Delete(lease) => {
                let Some(name) = lease.metadata.name.clone() else { return };
                self.objects.remove(&name);
                if let Some(lease) = self.lease_name(&name) {
                    self.feed(Input::Observed { lease, record: None });
                }
            }
        }
    }

    fn observed(&mut self, object: Lease) {
        let Some(name) = object.metadata.name.clone() else { return };
        let Some(lease) = self.lease_name(&name) else { return };
        let record = record_of(&object);
        self.objects.insert(name, object);
        self.feed(Input::Observed { lease, record: Some(Arc::new(record)) });
    }

    fn lease_name(&self, name: &str) -> Option<LeaseName> {
        if let Some(shard) = self.settings.shard_of_lease(name) {
            return Some(LeaseName::Shard(shard));
        }
        let member = name.strip_prefix(&self.settings.member_prefix())?;
        Some(LeaseName::Member(member.to_owned()))
    }

    fn object_name(&self, lease: &LeaseName) -> String {
        match lease {
            LeaseName::Shard(shard) => self.settings.shard_lease(*shard),
            LeaseName::Member(member) => format!("{}{member}", self.settings.member_prefix()),
        }
    }

    fn feed(&mut self, input: Input) {
        let now = Instant::now();
        let observed = matches!(input, Input::Observed { .. });
        for command in self.core.handle(input, now) {
            match command {
                Command::Write(write) => self.queued.push_back(write),
                Command::Publish(ownership) => self.publish(ownership),
                Command::Event(event) => self.event(event),
                Command::WakeAt(at) => self.wake = at,
            }
        }
        while self.in_flight.len() < CONCURRENT_WRITES
            && let Some(write) = self.queued.pop_front()
        {
            let name = self.object_name(&write.lease);
            let base = self.objects.get(&name).cloned();
            let leases = self.leases.clone();
            // Bounded by the `calls` client's read timeout.
            self.in_flight.push(
                async move {
                    let (outcome, written) = leases.execute(&name, &write, base).await;
                    (write.lease, outcome, written)
                }
                .boxed(),
            );
        }
        if !observed {
            let owned = self.core.ownership().held.len();
            self.metrics.owned.set(owned as i64);
            self.metrics.unowned.set(self.core.unowned(now) as i64);
        }
    }

    fn publish(&self, ownership: Ownership) {
        // Expiry times change on every renewal, which fences read; only a
        // change of roles wakes the controller.
        self.view.send_if_modified(|current| {
            let roles_changed = !current.same_roles(&ownership);
            *current = Arc::new(ownership);
            roles_changed
        });
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Joined { rejoined: false } => info!("joined as a member"),
            Event::Joined { rejoined: true } => info!(
                grace = ?self.settings.lease_duration,
                "rejoined after a lapse: shards last held by other replicas are left to them meanwhile"
            ),
            Event::MembershipLapsed => warn!("the member Lease was not renewed within the renew deadline"),
            Event::DuplicateIdentity { holder } => {
                warn!(%holder, "another process holds this replica's member Lease: replica names must be unique")
            }
            Event::Announced(shards) => {
                info!(shards = %super::records::format_shards(&shards), "announced standby")
            }
            Event::Acquired { shard, tenure, previous } => {
                info!(shard, previous = previous.as_deref().unwrap_or(""), tenure, "acquired shard");
                self.metrics.handover("acquired");
            }
            Event::TakenOver { shard, previous } => self.takeover_event(shard, previous),
            Event::Released(shard) => {
                info!(shard, "released shard");
                self.metrics.handover("released");
            }
            Event::Lost { shard, why } => {
                warn!(shard, why, "lost shard");
                self.metrics.handover("lost");
            }
            Event::WriteFailed { lease, renewal, error } => {
                if renewal {
                    self.metrics.renew_failures.inc();
                }
                warn!(lease = %self.object_name(&lease), %error, "a Lease write failed; retrying");
            }
        }
    }

    /// A takeover from a replica that did not release (crashed, frozen or
    /// cut off) is worth an Event; a handover after release is routine.
    fn takeover_event(&self, shard: u32, previous: String) {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "ShardTakenOver".into(),
            note: Some(format!(
                "replica {} took over shard {shard} from {previous}, whose Lease expired without a release",
                self.settings.identity
            )),
            action: "Acquire".into(),
            secondary: None,
        };
        let reference = ObjectReference {
            api_version: Some("coordination.k8s.io/v1".into()),
            kind: Some("Lease".into()),
            name: Some(self.settings.shard_lease(shard)),
            namespace: Some(self.settings.namespace.clone()),
            ..Default::default()
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(error) = recorder.publish(&event, &reference).await {
                debug!(%error, "cannot publish the takeover Event");
            }
        });
    }
}

/// What the core needs of a Lease object.
fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    let standby = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STANDBY_ANNOTATION))
        .map(|value| parse_shards(value))
        .unwrap_or_default();
    LeaseRecord {
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        holder: spec.holder_identity,
        acquire_time: spec.acquire_time.map(|t| t.0),
        renew_time: spec.renew_time.map(|t| t.0),
        duration: spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map(Duration::from_secs),
        standby,
    }
}

async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
