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

use super::dispatch;
use super::index::ObjectIndex;
use super::{Notice, Snapshot};
use crate::route::{Scope, TargetKey, WatchSpec};
use crate::worker::queue::WorkItem;

pub(super) struct WatchTask {
    pub client: kube::Client,
    pub spec: WatchSpec,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub restart: mpsc::Receiver<()>,
    pub notices: mpsc::UnboundedSender<Notice>,
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
        loop {
            // A restart is a resync: a fresh index makes every object go to
            // every target again (workers skip what the branch already has),
            // and the sweep after the list removes what is gone.
            let mut index = ObjectIndex::default();
            let config = watcher::Config::default().page_size(500);
            let mut stream = watcher(api.clone(), config).default_backoff().boxed();
            let mut listed: Option<HashSet<String>> = None;
            loop {
                tokio::select! {
                    biased;
                    restart = self.restart.recv() => match restart {
                        Some(()) => break,
                        None => return,
                    },
                    event = stream.next() => match event {
                        Some(Ok(event)) => self.handle(event, &mut index, &mut listed).await,
                        Some(Err(error)) => warn!(resource = %self.spec.resource.plural, %error, "watch error; retrying"),
                        None => return,
                    },
                }
            }
            debug!(resource = %self.spec.resource.plural, "restarting watch to resync");
        }
    }

    async fn handle(
        &self,
        event: Event<DynamicObject>,
        index: &mut ObjectIndex,
        listed: &mut Option<HashSet<String>>,
    ) {
        let snapshot = self.snapshots.borrow().clone();
        let now = Instant::now();
        match event {
            Event::Init => *listed = Some(HashSet::new()),
            Event::InitApply(object) | Event::Apply(object) => {
                let is_listing = listed.is_some();
                if let Some(listed) = listed.as_mut() {
                    listed.insert(ObjectIndex::key(
                        object.metadata.namespace.as_deref(),
                        object.metadata.name.as_deref().unwrap_or(""),
                    ));
                }
                let value = match serde_json::to_value(&object) {
                    Ok(value) => value,
                    Err(error) => return warn!(%error, "cannot encode a watched object"),
                };
                match dispatch::on_apply(
                    &snapshot.routing,
                    &self.spec.resource,
                    &value,
                    index,
                    now,
                    is_listing,
                ) {
                    Ok(dispatched) => {
                        for target in &dispatched.withheld_secrets {
                            let _ = self.notices.send(Notice::SecretWithheld {
                                target: target.clone(),
                                namespace: object.metadata.namespace.clone(),
                                name: object.metadata.name.clone().unwrap_or_default(),
                            });
                        }
                        self.send_all(&snapshot, dispatched.items).await;
                    }
                    Err(error) => {
                        let name = object.metadata.name.unwrap_or_default();
                        warn!(resource = %self.spec.resource.plural, %name, %error, "cannot sanitize object; skipped");
                        let _ = self.notices.send(Notice::Unserializable {
                            resource: self.spec.resource.plural.clone(),
                            name,
                            error: error.to_string(),
                        });
                    }
                }
            }
            Event::Delete(object) => {
                let value = serde_json::to_value(&object).unwrap_or_default();
                let dispatched =
                    dispatch::on_delete(&snapshot.routing, &self.spec.resource, &value, index, now, false);
                self.send_all(&snapshot, dispatched.items).await;
            }
            Event::InitDone => {
                let listed = listed.take().unwrap_or_default();
                let items = dispatch::on_list_complete(&snapshot.routing, &self.spec, &listed, index, now);
                self.send_all(&snapshot, items).await;
                info!(resource = %self.spec.resource.plural, scope = ?self.spec.scope, objects = listed.len(), "initial list complete");
            }
        }
    }

    /// Sends in order; a full queue makes this watch wait (backpressure),
    /// it never drops a change.
    async fn send_all(&self, snapshot: &Snapshot, items: Vec<(TargetKey, WorkItem)>) {
        for (target, item) in items {
            if let Some(queue) = snapshot.queues.get(&target) {
                // A closed queue means the worker stopped; its restart resyncs.
                let _ = queue.send(item).await;
            }
        }
    }
}
