//! Feeds synthetic watch events into the pipeline: first the initial list
//! (every object once, as a watch's start does), then the load, each change
//! a new value of one object, round-robin, as fast as the queues accept or
//! at a fixed rate.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use gitops_reverser::watch::index::ObjectIndex;

use super::objects::{self, NAMESPACE};
use super::pipeline::Pipeline;
use crate::cluster::object_name;
use crate::load::Change;
use crate::sampler::now;

/// What the load fed.
pub struct Fed {
    pub changes: Vec<Change>,
    /// Unix seconds of the first change.
    pub started_at: f64,
    pub seconds: f64,
    /// Work items sent to the workers (one per change and target).
    pub items: usize,
}

/// The initial list: objects `o-0` … with values `v0` …, then the sweeps.
pub async fn list(pipeline: &mut Pipeline, objects: usize, branches: usize) -> Result<(), String> {
    let mut names = HashSet::with_capacity(objects);
    for j in 0..objects {
        let value = objects::decode(&objects::event_text(j, j as u64, branches))?;
        pipeline.apply(&value, true).await?;
        names.insert(ObjectIndex::key(Some(NAMESPACE), &object_name(j)));
    }
    pipeline.list_complete(&names).await?;
    Ok(())
}

/// `changes` changes: change `k` gives object `o-<k mod objects>` the value
/// `v<objects + k>`. `rate` 0 means as fast as the queues accept.
pub async fn load(
    pipeline: &mut Pipeline,
    objects: usize,
    branches: usize,
    changes: usize,
    rate: f64,
) -> Result<Fed, String> {
    let mut fed = Vec::with_capacity(changes);
    let mut items = 0;
    let started = Instant::now();
    let started_at = now();
    for k in 0..changes {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(k as f64 / rate);
            // Sleeping for less than a timer tick would only add jitter.
            if due > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let (object, seq) = (k % objects, (objects + k) as u64);
        let accepted = now();
        let value = objects::decode(&objects::event_text(object, seq, branches))?;
        items += pipeline.apply(&value, false).await?;
        fed.push(Change { object, seq, accepted });
    }
    Ok(Fed { changes: fed, started_at, seconds: started.elapsed().as_secs_f64(), items })
}
