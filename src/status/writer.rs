//! Writes status and publishes Events (I/O). Only the replica that owns a
//! resource calls this; the status says what it observed, never more.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use crate::api::ConditionType;

/// Patches `/status` and records transitions as Kubernetes Events.
#[derive(Clone)]
pub struct StatusWriter {
    client: kube::Client,
    recorder: Recorder,
}

impl StatusWriter {
    pub fn new(client: kube::Client, instance: &str) -> Self {
        let reporter = Reporter { controller: "gitops-reverser".into(), instance: Some(instance.to_owned()) };
        Self { recorder: Recorder::new(client.clone(), reporter), client }
    }

    /// Replaces the whole status of `object` with `status`.
    pub async fn patch<K, S>(&self, object: &K, status: &S) -> Result<(), kube::Error>
    where
        K: StatusApi,
        S: Serialize,
    {
        let api = K::status_api(self.client.clone(), object);
        let mut value = serde_json::to_value(status).expect("status types serialize");
        // A merge patch keeps absent keys; clear what this status no longer has.
        if let Some(map) = value.as_object_mut() {
            for key in ["gitStatus", "workerStatus", "signingKey"] {
                map.entry(key).or_insert(serde_json::Value::Null);
            }
        }
        let patch = json!({ "status": value });
        api.patch_status(&object.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)
    }

    /// Publishes an Event for each Ready or Available condition that changed
    /// status or reason, so `kubectl describe` tells the story.
    pub async fn record_transitions<K>(&self, object: &K, before: &[Condition], after: &[Condition])
    where
        K: Resource<DynamicType = ()>,
    {
        for type_ in [ConditionType::Ready, ConditionType::Available] {
            let Some(new) = after.iter().find(|c| c.type_ == type_.as_str()) else { continue };
            let old = before.iter().find(|c| c.type_ == type_.as_str());
            if old.is_some_and(|old| old.status == new.status && old.reason == new.reason) {
                continue;
            }
            let event = Event {
                type_: if new.status == "False" { EventType::Warning } else { EventType::Normal },
                reason: new.reason.clone(),
                note: Some(truncate(&format!("{} is {}: {}", type_, new.status, new.message))),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
                warn!(%error, "cannot publish an event");
            }
        }
    }

    /// Publishes a one-off Warning, e.g. a Secret that was not written.
    pub async fn warn<K: Resource<DynamicType = ()>>(&self, object: &K, reason: &str, note: String) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(truncate(&note)),
            action: "Write".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            warn!(%error, "cannot publish an event");
        }
    }
}

/// The API through which an object's status is written.
pub trait StatusApi: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Sized {
    fn status_api(client: kube::Client, object: &Self) -> Api<Self>;
}

macro_rules! namespaced_status {
    ($($kind:ty),*) => {$(
        impl StatusApi for $kind {
            fn status_api(client: kube::Client, object: &Self) -> Api<Self> {
                Api::namespaced(client, &object.namespace().unwrap_or_default())
            }
        }
    )*};
}
namespaced_status!(crate::api::GitProvider, crate::api::GitTarget, crate::api::WatchRule);

impl StatusApi for crate::api::ClusterWatchRule {
    fn status_api(client: kube::Client, _: &Self) -> Api<Self> {
        Api::all(client)
    }
}

/// Event notes are limited to 1 KiB.
fn truncate(note: &str) -> String {
    let mut end = note.len().min(1024);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note[..end].to_owned()
}
