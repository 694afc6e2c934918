//! Samples, every half second, each live replica's memory and CPU from
//! /proc and the holders of the shard Leases, into a timeline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::replicas::{Fleet, LEASE_PREFIX, proc_usage, ticks_per_second};

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaSample {
    pub name: String,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub cpu_seconds: f64,
    pub frozen: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Unix seconds.
    pub at: f64,
    pub replicas: Vec<ReplicaSample>,
    /// Shards per holder with an unexpired Lease.
    pub shards: BTreeMap<String, usize>,
    /// Shards with no unexpired holder.
    pub unowned: usize,
}

pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

async fn shard_holders(api: &Api<Lease>, shards: usize) -> (BTreeMap<String, usize>, usize) {
    let selector = format!("configbutler.ai/lease-set={LEASE_PREFIX}");
    let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
        return (BTreeMap::new(), shards);
    };
    let now_ms = (now() * 1000.0) as i64;
    let mut held = BTreeMap::new();
    for lease in list.items {
        let is_shard = lease.metadata.name.as_deref().is_some_and(|n| n.contains("-shard-"));
        let Some(spec) = lease.spec.filter(|_| is_shard) else { continue };
        let (Some(holder), Some(renew), Some(duration)) =
            (spec.holder_identity, spec.renew_time, spec.lease_duration_seconds)
        else {
            continue;
        };
        if !holder.is_empty() && renew.0.as_millisecond() + i64::from(duration) * 1000 > now_ms {
            *held.entry(holder).or_insert(0) += 1;
        }
    }
    let owned: usize = held.values().sum();
    (held, shards.saturating_sub(owned))
}

/// Samples until the returned sender is dropped or signalled; the handle
/// yields the timeline.
pub fn spawn(
    fleet: Arc<Mutex<Fleet>>,
    client: kube::Client,
    namespace: &str,
    shards: usize,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Vec<Sample>>) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let handle = tokio::spawn(async move {
        let tps = ticks_per_second();
        let mut timeline = Vec::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut stopped => break,
            }
            let at = now();
            let replicas: Vec<ReplicaSample> = {
                let fleet = fleet.lock().await;
                fleet
                    .live()
                    .filter_map(|r| {
                        let (rss, peak, cpu) = proc_usage(r.pid(), tps)?;
                        Some(ReplicaSample {
                            name: r.name.clone(),
                            rss_kib: rss,
                            peak_rss_kib: peak,
                            cpu_seconds: cpu,
                            frozen: r.frozen,
                        })
                    })
                    .collect()
            };
            let (held, unowned) = shard_holders(&api, shards).await;
            timeline.push(Sample { at, replicas, shards: held, unowned });
        }
        timeline
    });
    (stop, handle)
}
