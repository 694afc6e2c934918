//! The load: a schedule of changes (steady rate, or a base rate with
//! spikes), each an overwrite of one object with a new sequence number,
//! timed from the API server's answer.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::sampler::now;

#[derive(Debug, Clone, Copy)]
pub enum Profile {
    Steady {
        rate: f64,
    },
    /// `base` changes/s, plus `spike` changes at once every `every` seconds.
    Burst {
        base: f64,
        spike: usize,
        every: f64,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub object: usize,
    pub seq: u64,
    /// Unix seconds when the API server accepted the write.
    pub accepted: f64,
}

/// Offsets (seconds from start) of the changes of `seconds` of `profile`.
pub fn schedule(profile: Profile, seconds: f64) -> Vec<f64> {
    let mut at = Vec::new();
    let mut steady = |rate: f64| {
        if rate > 0.0 {
            let n = (rate * seconds).round() as usize;
            at.extend((0..n).map(|i| i as f64 / rate));
        }
    };
    match profile {
        Profile::Steady { rate } => steady(rate),
        Profile::Burst { base, spike, every } => {
            steady(base);
            let mut t = every / 2.0;
            while t < seconds {
                at.extend(std::iter::repeat_n(t, spike));
                t += every;
            }
        }
    }
    at.sort_by(f64::total_cmp);
    at
}

pub struct Driven {
    pub changes: Vec<Change>,
    pub errors: usize,
    pub seconds: f64,
}

/// Runs the schedule; change `i` writes `first_seq + i` into object
/// `(first_seq + i) % objects`. At most `parallel` writes are in flight.
pub async fn drive(
    cluster: &Cluster,
    objects: usize,
    offsets: &[f64],
    first_seq: u64,
    parallel: usize,
) -> Driven {
    let start = Instant::now();
    let results: Vec<Option<Change>> = futures::stream::iter(offsets.iter().enumerate())
        .map(|(i, offset)| async move {
            tokio::time::sleep_until((start + Duration::from_secs_f64(*offset)).into()).await;
            let seq = first_seq + i as u64;
            let object = (seq % objects as u64) as usize;
            for _ in 0..3 {
                if cluster.write(object, seq).await.is_ok() {
                    return Some(Change { object, seq, accepted: now() });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let errors = results.iter().filter(|c| c.is_none()).count();
    Driven {
        changes: results.into_iter().flatten().collect(),
        errors,
        seconds: start.elapsed().as_secs_f64(),
    }
}
