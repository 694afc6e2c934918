//! Shard Leases as the API server records them, and a poller that keeps a
//! timeline of their holders (for ownership gaps and handovers).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::ListParams;

use super::now_ns;

/// The live holder of each shard `0..shards` (None: free or expired), judged
/// by this machine's clock, which the API server shares.
pub async fn live_holders(
    client: &kube::Client,
    namespace: &str,
    prefix: &str,
    shards: u32,
) -> Vec<Option<String>> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let selector = format!("configbutler.ai/lease-set={prefix}");
    let mut holders = vec![None; shards as usize];
    let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else { return holders };
    let now = now_ns();
    let shard_prefix = format!("{prefix}-shard-");
    for lease in list.items {
        let Some(shard) = lease
            .metadata
            .name
            .as_deref()
            .and_then(|n| n.strip_prefix(&shard_prefix))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        if shard < holders.len() {
            holders[shard] = live_holder(&lease, now);
        }
    }
    holders
}

fn live_holder(lease: &Lease, now: i128) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0.as_nanosecond();
    let expires = renewed + i128::from(spec.lease_duration_seconds?) * 1_000_000_000;
    (expires > now).then_some(holder)
}

/// Shards per holder.
pub fn counts(holders: &[Option<String>]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for holder in holders.iter().flatten() {
        *counts.entry(holder.clone()).or_insert(0) += 1;
    }
    counts
}

/// Holders sampled every 100 ms in the background: (unix ns, holders).
pub struct Poller {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<(i128, Vec<Option<String>>)>>,
}

impl Poller {
    pub fn start(client: kube::Client, namespace: String, prefix: String, shards: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let holders = live_holders(&client, &namespace, &prefix, shards).await;
                samples.push((now_ns(), holders));
            }
            samples
        });
        Self { stop, handle }
    }

    pub async fn stop(self) -> Timeline {
        self.stop.store(true, Ordering::Relaxed);
        Timeline(self.handle.await.expect("the lease poller panicked"))
    }
}

/// Samples of the shard holders over time.
pub struct Timeline(pub Vec<(i128, Vec<Option<String>>)>);

impl Timeline {
    /// Per shard, the longest run of samples without a live holder, in ms
    /// (from the first sample without one to the next sample with one).
    pub fn longest_gaps_ms(&self) -> Vec<u64> {
        let shards = self.0.first().map_or(0, |(_, h)| h.len());
        (0..shards)
            .map(|shard| {
                let mut longest = 0i128;
                let mut since: Option<i128> = None;
                for (at, holders) in &self.0 {
                    match (&holders[shard], since) {
                        (None, None) => since = Some(*at),
                        (Some(_), Some(start)) => {
                            longest = longest.max(at - start);
                            since = None;
                        }
                        _ => {}
                    }
                }
                if let (Some(start), Some((end, _))) = (since, self.0.last()) {
                    longest = longest.max(end - start);
                }
                (longest / 1_000_000) as u64
            })
            .collect()
    }

    /// Per shard, how many times its live holder changed name (a free
    /// interval in between does not count as a change by itself).
    pub fn handovers(&self) -> Vec<usize> {
        let shards = self.0.first().map_or(0, |(_, h)| h.len());
        (0..shards)
            .map(|shard| {
                let mut last: Option<&String> = None;
                let mut changes = 0;
                for (_, holders) in &self.0 {
                    if let Some(holder) = &holders[shard] {
                        if last.is_some_and(|l| l != holder) {
                            changes += 1;
                        }
                        last = Some(holder);
                    }
                }
                changes
            })
            .collect()
    }

    /// The number of samples.
    pub fn samples(&self) -> usize {
        self.0.len()
    }
}
