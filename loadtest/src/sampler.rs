//! Samples, every half second, each live replica's memory and CPU from
//! /proc and the holders of the shard Leases, into a timeline; and every
//! two seconds (and at the end) each running replica's `/metrics`: its
//! event → commit lag histogram and its coalesced changes per branch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::completeness::coalesced_by_branch;
use crate::histogram::{COMMIT_LAG, Histogram, PUSH_DURATION};
use crate::replicas::{Fleet, LEASE_PREFIX, proc_usage, ticks_per_second};

/// `/metrics` is read every this many samples.
const SCRAPE_EVERY: usize = 4;

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
    /// Each shard's unexpired holder, by the shard number in its Lease's name.
    pub holders: BTreeMap<u32, String>,
}

pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// Shards per holder, shards unowned, and each owned shard's holder.
async fn shard_holders(
    api: &Api<Lease>,
    shards: usize,
) -> (BTreeMap<String, usize>, usize, BTreeMap<u32, String>) {
    let selector = format!("configbutler.ai/lease-set={LEASE_PREFIX}");
    let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
        return (BTreeMap::new(), shards, BTreeMap::new());
    };
    let now_ms = (now() * 1000.0) as i64;
    let mut held = BTreeMap::new();
    let mut holders = BTreeMap::new();
    for lease in list.items {
        let shard =
            lease.metadata.name.as_deref().and_then(|n| n.rsplit_once("-shard-")?.1.parse::<u32>().ok());
        let (Some(shard), Some(spec)) = (shard, lease.spec) else { continue };
        let (Some(holder), Some(renew), Some(duration)) =
            (spec.holder_identity, spec.renew_time, spec.lease_duration_seconds)
        else {
            continue;
        };
        if !holder.is_empty() && renew.0.as_millisecond() + i64::from(duration) * 1000 > now_ms {
            *held.entry(holder.clone()).or_insert(0) += 1;
            holders.insert(shard, holder);
        }
    }
    let owned: usize = held.values().sum();
    (held, shards.saturating_sub(owned), holders)
}

/// What one read of a replica's `/metrics` gave.
#[derive(Debug, Clone, Default)]
pub struct Scraped {
    /// Event → commit lag, summed over the replica's branches.
    pub commit_lag: Histogram,
    /// Push attempts, summed over the replica's branches.
    pub push_duration: Histogram,
    /// `events_coalesced_total` by branch.
    pub coalesced: BTreeMap<String, f64>,
}

/// Per replica name, its last successful read. The sampler refreshes it
/// every two seconds; faults read the victim once more right before they
/// strike, and a replica that was sent SIGTERM is read until it exits, so a
/// killed replica misses only what happened between that read and the
/// signal.
pub type LastScrapes = Arc<Mutex<BTreeMap<String, Scraped>>>;

/// What the sampler collected.
pub struct Sampled {
    pub timeline: Vec<Sample>,
}

/// `GET /metrics` over HTTP/1.0 (no chunking), with a deadline.
async fn scrape(addr: &str) -> Result<String, String> {
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.map_err(|e| e.to_string())?;
        let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP header")?;
        match head.split_whitespace().nth(1) {
            Some("200") => Ok(body.to_owned()),
            status => Err(format!("status {status:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(2), get).await.map_err(|_| "timed out".to_owned())?
}

/// Reads one replica's `/metrics` into `last` (kept as it was if it does not answer).
pub async fn scrape_one(name: &str, addr: &str, last: &Mutex<BTreeMap<String, Scraped>>) {
    if let Ok(text) = scrape(addr).await {
        let scraped = Scraped {
            commit_lag: Histogram::read(&text, COMMIT_LAG),
            push_duration: Histogram::read(&text, PUSH_DURATION),
            coalesced: coalesced_by_branch(&text),
        };
        last.lock().await.insert(name.to_owned(), scraped);
    }
}

/// Each running (not frozen) replica's `/metrics`, into `last`.
pub async fn scrape_all(fleet: &Mutex<Fleet>, last: &Mutex<BTreeMap<String, Scraped>>) {
    let targets: Vec<(String, String)> = {
        let fleet = fleet.lock().await;
        fleet.live().filter(|r| !r.frozen).map(|r| (r.name.clone(), r.http_addr.clone())).collect()
    };
    for (name, addr) in targets {
        scrape_one(&name, &addr, last).await;
    }
}

/// Samples until the returned sender is dropped or signalled; the handle
/// yields what was sampled.
pub fn spawn(
    fleet: Arc<Mutex<Fleet>>,
    client: kube::Client,
    namespace: &str,
    shards: usize,
    last: LastScrapes,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Sampled>) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let handle = tokio::spawn(async move {
        let tps = ticks_per_second();
        let mut timeline = Vec::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        for tick in 0usize.. {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut stopped => break,
            }
            if tick % SCRAPE_EVERY == 0 {
                scrape_all(&fleet, &last).await;
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
            let (held, unowned, holders) = shard_holders(&api, shards).await;
            timeline.push(Sample { at, replicas, shards: held, unowned, holders });
        }
        scrape_all(&fleet, &last).await;
        Sampled { timeline }
    });
    (stop, handle)
}
