//! The load driver: a background task that keeps changing the fleet's
//! ConfigMaps (updates, creates and deletes, round-robin over the targets)
//! at a fixed rate, and records what it did, so the end check can prove the
//! cluster holds exactly the driver's last word on every object, and the
//! completeness check that every value it wrote reached some commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use super::fleet::{LABEL, configmap_manifest};

/// A failed change is retried for this long (an API server restart takes a
/// few seconds) before the driver gives up.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// One value the driver gave an object (its `data.v`).
#[derive(Debug, Clone)]
pub struct Write {
    pub value: String,
    /// The target whose label the object carries.
    pub target: String,
    /// Unix ns when the API server had accepted it (the answer arrived).
    pub at_ns: i128,
}

/// What the driver did: the last state it gave each object it touched
/// (None: deleted), every value it wrote, and counts.
#[derive(Debug, Default)]
pub struct Record {
    pub last: BTreeMap<String, Option<String>>,
    /// Every value written per object, in the order written (a delete writes none).
    pub writes: BTreeMap<String, Vec<Write>>,
    pub changes: usize,
    pub retries: usize,
    /// Unix ns of each change per target: (time, target).
    pub times: Vec<(i128, String)>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    handle: tokio::task::JoinHandle<Record>,
}

#[derive(Clone, Copy)]
enum Op {
    Update,
    Create,
    Delete,
}

impl Load {
    /// Starts changing objects of `targets` (`objects` are the existing
    /// ConfigMaps, name → target) at `per_second` changes per second.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        targets: Vec<String>,
        objects: Vec<(String, String)>,
        per_second: f64,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let (flag, counter, ns) = (stop.clone(), done.clone(), namespace.to_owned());
        let handle = tokio::spawn(async move {
            let api: Api<ConfigMap> = Api::namespaced(client, &ns);
            let mut live: BTreeMap<String, Vec<String>> =
                targets.iter().map(|t| (t.clone(), Vec::new())).collect();
            for (name, target) in objects {
                live.get_mut(&target).expect("an object of a listed target").push(name);
            }
            let mut record = Record::default();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0usize;
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let target = &targets[i % targets.len()];
                let round = i / targets.len();
                let names = live.get_mut(target).unwrap();
                // Per target: update, update, create, update, delete, ...
                let op = match round % 5 {
                    2 => Op::Create,
                    4 if names.len() > 1 => Op::Delete,
                    _ => Op::Update,
                };
                let name = match op {
                    Op::Create => format!("{target}-n{round}"),
                    Op::Delete => names[0].clone(),
                    Op::Update => names[round % names.len()].clone(),
                };
                let value = format!("change {i}");
                record.retries += apply(&api, &ns, op, &name, target, &value).await;
                match op {
                    Op::Create => names.push(name.clone()),
                    Op::Delete => names.retain(|n| *n != name),
                    Op::Update => {}
                }
                let at_ns = super::now_ns();
                if !matches!(op, Op::Delete) {
                    let write = Write { value: value.clone(), target: target.clone(), at_ns };
                    record.writes.entry(name.clone()).or_default().push(write);
                }
                record.last.insert(name, (!matches!(op, Op::Delete)).then_some(value));
                record.changes += 1;
                record.times.push((at_ns, target.clone()));
                counter.store(record.changes, Ordering::Relaxed);
                i += 1;
            }
            record
        });
        Self { stop, done, handle }
    }

    /// Changes made so far.
    pub fn changes(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops after the change in progress and returns the record.
    pub async fn stop(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("the load driver panicked")
    }
}

/// One change, retried until the API server accepts it; returns the retries.
async fn apply(api: &Api<ConfigMap>, ns: &str, op: Op, name: &str, target: &str, value: &str) -> usize {
    let started = Instant::now();
    let mut retries = 0;
    loop {
        let result = match op {
            Op::Delete => match api.delete(name, &DeleteParams::default()).await {
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                other => other.map(|_| ()),
            },
            Op::Create | Op::Update => {
                let manifest = configmap_manifest(ns, name, target, &json!({"v": value}));
                let params = PatchParams::apply("ha-load").force();
                api.patch(name, &params, &Patch::Apply(&manifest)).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => return retries,
            Err(e) => {
                assert!(
                    started.elapsed() < RETRY_FOR,
                    "the load driver could not change {name} for {RETRY_FOR:?}: {e}"
                );
                retries += 1;
                // Pacing between attempts, not synchronisation.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Checks that the cluster holds the driver's last word on every object it
/// touched; panics naming the first few that differ.
pub async fn check_record(client: &kube::Client, namespace: &str, record: &Record) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let live: BTreeMap<String, Option<String>> = api
        .list(&ListParams::default().labels(LABEL))
        .await
        .expect("list the ConfigMaps")
        .items
        .into_iter()
        .map(|cm| {
            let value = cm.data.as_ref().and_then(|d| d.get("v")).cloned();
            (cm.metadata.name.unwrap_or_default(), value)
        })
        .collect();
    let wrong: Vec<String> = record
        .last
        .iter()
        .filter(|(name, want)| match want {
            Some(value) => live.get(*name) != Some(&Some(value.clone())),
            None => live.contains_key(*name),
        })
        .map(|(name, want)| format!("{name}: driver {want:?}, cluster {:?}", live.get(name)))
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "the cluster lost changes of the load driver: {wrong:?}");
}
