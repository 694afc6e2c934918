//! One task per shared watch: streams events from the API server, keeps the
//! index, and sends work items to branch workers. A restart drops the
//! stream and lists again, which resyncs every target of this watch.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::dispatch::{self, Unsanitizable};
use super::index::ObjectIndex;
use super::list::{self, InitialList};
use super::overflow::{Offered, Overflow};
use super::{Notice, Snapshot};
use crate::route::{Scope, TargetKey, WatchSpec};
use crate::telemetry::trace::{self, TARGET};
use crate::telemetry::{EventMetrics, Metrics, SanitizeLabels, TargetLabels, TraceLabel};
use crate::worker::queue::WorkItem;

pub(super) struct WatchTask {
    pub client: kube::Client,
    pub spec: WatchSpec,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub restart: mpsc::Receiver<()>,
    pub notices: mpsc::UnboundedSender<Notice>,
    pub metrics: Arc<Metrics>,
    pub initial_list: InitialList,
}

/// A list in progress (start, resync, relist): the names seen so far, and
/// its `watch.resync` trace, which the listed objects' changes belong to.
struct Listing {
    names: HashSet<String>,
    started: Instant,
    span: tracing::Span,
}

impl WatchTask {
    fn api(&self) -> Api<DynamicObject> {
        let r = &self.spec.resource;
        let resource = ApiResource {
            group: r.group.clone(),
            version: r.version.clone(),
            api_version: r.api_version(),
            kind: r.kind.clone(),
            plural: r.plural.clone(),
        };
        match &self.spec.scope {
            Scope::Namespace(ns) if r.namespaced => Api::namespaced_with(self.client.clone(), ns, &resource),
            _ => Api::all_with(self.client.clone(), &resource),
        }
    }

    pub async fn run(mut self) {
        let api = self.api();
        let mut streaming = list::streams(self.initial_list, list::server_version(&self.client).await);
        // Objects that did not sanitize, as `describe` names them: kept
        // across restarts, so that their recovery is always reported.
        let mut failing = HashSet::new();
        loop {
            // A restart is a resync: a fresh index makes every object go to
            // every target again (workers skip what the branch already has),
            // and the sweep after the list removes what is gone.
            let mut index = ObjectIndex::default();
            let config = if streaming {
                watcher::Config::default().streaming_lists()
            } else {
                watcher::Config::default().page_size(500)
            };
            debug!(resource = %self.spec.resource.plural, streaming, "listing");
            let mut stream = watcher(api.clone(), config).default_backoff().boxed();
            let mut listed: Option<Listing> = None;
            // The relist after a restart sends every object to every target again.
            let mut overflow = Overflow::default();
            loop {
                tokio::select! {
                    biased;
                    restart = self.restart.recv() => match restart {
                        Some(()) => break,
                        None => return,
                    },
                    _ = tokio::time::sleep(FLUSH_EVERY), if !overflow.is_empty() => {
                        let caught_up = overflow.flush(&self.snapshots.borrow().queues);
                        self.resync(caught_up);
                    }
                    event = stream.next() => match event {
                        Some(Ok(event)) => self.handle(event, &mut index, &mut listed, &mut overflow, &mut failing),
                        Some(Err(error)) if streaming && refuses_streaming(&error) => {
                            warn!(resource = %self.spec.resource.plural, %error, "the API server refuses streaming lists; listing in pages");
                            streaming = false;
                            break;
                        }
                        Some(Err(error)) => warn!(resource = %self.spec.resource.plural, %error, "watch error; retrying"),
                        None => return,
                    },
                }
            }
            debug!(resource = %self.spec.resource.plural, "restarting watch to resync");
        }
    }

    fn handle(
        &self,
        event: Event<DynamicObject>,
        index: &mut ObjectIndex,
        listed: &mut Option<Listing>,
        overflow: &mut Overflow,
        failing: &mut HashSet<String>,
    ) {
        let snapshot = self.snapshots.borrow().clone();
        self.resync(overflow.flush(&snapshot.queues));
        let now = Instant::now();
        let resource = EventMetrics::resource(&self.spec.resource.group, &self.spec.resource.plural);
        if matches!(event, Event::InitApply(_) | Event::Apply(_) | Event::Delete(_)) {
            self.metrics.events.received.get_or_create(&resource).inc();
        }
        match event {
            Event::Init => {
                let span = tracing::info_span!(target: TARGET, parent: None, "watch.resync",
                    resource = %resource.resource, scope = ?self.spec.scope, replica = trace::replica(),
                    objects = tracing::field::Empty);
                *listed = Some(Listing { names: HashSet::new(), started: now, span });
            }
            Event::InitApply(object) | Event::Apply(object) => {
                let is_listing = listed.is_some();
                let span = match listed.as_mut() {
                    Some(listed) => {
                        listed.names.insert(ObjectIndex::key(
                            object.metadata.namespace.as_deref(),
                            object.metadata.name.as_deref().unwrap_or(""),
                        ));
                        listed.span.clone()
                    }
                    None => self.event_span("apply", &resource, &object),
                };
                let value = match serde_json::to_value(&object) {
                    Ok(value) => value,
                    Err(error) => return warn!(%error, "cannot encode a watched object"),
                };
                let dispatched = span.in_scope(|| {
                    dispatch::on_apply(&snapshot.routing, &self.spec.resource, &value, index, now, is_listing)
                });
                match dispatched {
                    Ok(dispatched) => {
                        for target in &dispatched.withheld_secrets {
                            let _ = self.notices.send(Notice::SecretWithheld {
                                target: target.clone(),
                                namespace: object.metadata.namespace.clone(),
                                name: object.metadata.name.clone().unwrap_or_default(),
                            });
                        }
                        self.send_all(&snapshot, dispatched.items, overflow);
                    }
                    Err(Unsanitizable { targets, error }) => {
                        let described = self.describe(&object);
                        warn!(object = %described, %error, "cannot sanitize object; its files keep the last version written");
                        let labels = SanitizeLabels {
                            resource: resource.resource.clone(),
                            category: error.category(),
                        };
                        self.metrics.events.sanitize_failures.get_or_create(&labels).inc();
                        failing.insert(described.clone());
                        let _ = self.notices.send(Notice::Unsanitizable {
                            targets,
                            object: described,
                            error: error.to_string(),
                        });
                        return;
                    }
                }
                self.recovered(&object, failing);
            }
            Event::Delete(object) => {
                self.recovered(&object, failing);
                let span = self.event_span("delete", &resource, &object);
                let value = serde_json::to_value(&object).unwrap_or_default();
                let dispatched = span.in_scope(|| {
                    dispatch::on_delete(&snapshot.routing, &self.spec.resource, &value, index, now, false)
                });
                self.send_all(&snapshot, dispatched.items, overflow);
            }
            Event::InitDone => {
                let Listing { names, started, span } = listed.take().unwrap_or_else(|| Listing {
                    names: HashSet::new(),
                    started: now,
                    span: tracing::Span::none(),
                });
                let items = span.in_scope(|| {
                    dispatch::on_list_complete(&snapshot.routing, &self.spec, &names, index, now)
                });
                self.send_all(&snapshot, items, overflow);
                span.record("objects", names.len());
                let trace_id =
                    trace::trace_id(&trace::context_of(&span)).map(|trace_id| TraceLabel { trace_id });
                self.metrics.events.resync_duration.get_or_create(&resource).observe(
                    started.elapsed().as_secs_f64(),
                    trace_id,
                    None,
                );
                self.metrics.events.resync_objects.get_or_create(&resource).inc_by(names.len() as u64);
                info!(resource = %self.spec.resource.plural, scope = ?self.spec.scope, objects = names.len(), "initial list complete");
            }
        }
    }

    /// How an object is named in status: kind, namespace and name.
    fn describe(&self, object: &DynamicObject) -> String {
        let name = object.metadata.name.as_deref().unwrap_or_default();
        match object.metadata.namespace.as_deref() {
            Some(namespace) => format!("{} {namespace}/{name}", self.spec.resource.kind),
            None => format!("{} {name}", self.spec.resource.kind),
        }
    }

    /// An object that failed to sanitize before has sanitized (or is gone).
    fn recovered(&self, object: &DynamicObject, failing: &mut HashSet<String>) {
        if !failing.is_empty() {
            let described = self.describe(object);
            if failing.remove(&described) {
                let _ = self.notices.send(Notice::Sanitizable { object: described });
            }
        }
    }

    /// Asks the controller to resync targets whose changes overflowed.
    fn resync(&self, targets: Vec<TargetKey>) {
        for target in targets {
            let _ = self.notices.send(Notice::Resync { target });
        }
    }

    /// The root span of one live watch event.
    fn event_span(
        &self,
        event: &'static str,
        resource: &crate::telemetry::ResourceLabels,
        object: &DynamicObject,
    ) -> tracing::Span {
        tracing::info_span!(target: TARGET, parent: None, "watch.event",
            event, resource = %resource.resource,
            namespace = object.metadata.namespace.as_deref().unwrap_or(""),
            name = object.metadata.name.as_deref().unwrap_or(""),
            resource_version = object.metadata.resource_version.as_deref().unwrap_or(""),
            replica = trace::replica())
    }

    /// Sends in order per target; a target whose queue is full gets its
    /// changes parked (coalesced) instead of making the whole watch wait,
    /// so one slow tenant never stalls the others. Past the overflow limit
    /// its changes are dropped and it is resynced (it says `Backlogged`).
    fn send_all(&self, snapshot: &Snapshot, items: Vec<(TargetKey, WorkItem)>, overflow: &mut Overflow) {
        for (target, item) in items {
            // Sweeps and retains are bookkeeping, not changes.
            let change = matches!(item, WorkItem::Write { .. } | WorkItem::Delete { .. });
            let sent = match snapshot.queues.get(&target).map(|queue| overflow.offer(&target, queue, item)) {
                Some(Offered::Sent | Offered::Parked) => true,
                Some(Offered::Overflowed) => {
                    let _ = self.notices.send(Notice::Backlogged { target: target.clone() });
                    false
                }
                Some(Offered::Closed | Offered::Resyncing) => false,
                None => {
                    debug!(git_target = %target, "no branch worker for this target; its start resyncs it");
                    false
                }
            };
            match (change, sent) {
                (false, _) => {}
                (true, true) => {
                    let labels = TargetLabels { namespace: target.namespace, name: target.name };
                    self.metrics.events.routed.get_or_create(&labels).inc();
                }
                // The worker stopped; its restart resyncs.
                (true, false) => {
                    self.metrics.events.dropped.inc();
                }
            }
        }
    }
}

/// How often parked changes are offered to their queues again while no
/// event comes (every event offers them too).
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// A server with the WatchList gate off answers `sendInitialEvents` with 422.
fn refuses_streaming(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 422,
        watcher::Error::WatchError(status) => status.code == 422,
        _ => false,
    }
}
