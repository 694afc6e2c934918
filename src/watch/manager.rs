//! Starts and stops one watch task per planned (resource, scope), and
//! restarts them on request so that their targets resync.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::list::InitialList;
use super::task::WatchTask;
use super::{Notice, Snapshot};
use crate::route::{WatchPlan, WatchSpec};
use crate::telemetry::Metrics;

struct Running {
    restart: mpsc::Sender<()>,
    task: JoinHandle<()>,
}

/// The set of running watches.
pub struct WatchManager {
    client: kube::Client,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    notices: mpsc::UnboundedSender<Notice>,
    running: HashMap<WatchSpec, Running>,
    metrics: Arc<Metrics>,
    initial_list: InitialList,
}

impl WatchManager {
    pub fn new(
        client: kube::Client,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        notices: mpsc::UnboundedSender<Notice>,
        metrics: Arc<Metrics>,
        initial_list: InitialList,
    ) -> Self {
        Self { client, snapshots, notices, running: HashMap::new(), metrics, initial_list }
    }

    /// Makes the running watches equal to the plan; returns the specs started.
    pub fn reconcile(&mut self, plan: &WatchPlan) -> Vec<WatchSpec> {
        self.running.retain(|spec, running| {
            let keep = plan.watches.contains(spec) && !running.task.is_finished();
            if !keep {
                running.task.abort();
            }
            keep
        });
        let mut started = Vec::new();
        for spec in &plan.watches {
            if self.running.contains_key(spec) {
                continue;
            }
            let (restart, restart_rx) = mpsc::channel(1);
            let task = WatchTask {
                client: self.client.clone(),
                spec: spec.clone(),
                snapshots: self.snapshots.clone(),
                restart: restart_rx,
                notices: self.notices.clone(),
                metrics: self.metrics.clone(),
                initial_list: self.initial_list,
            };
            self.running.insert(spec.clone(), Running { restart, task: tokio::spawn(task.run()) });
            started.push(spec.clone());
        }
        self.metrics.watches_open.set(self.running.len() as i64);
        started
    }

    /// Relists every watch that `select` picks, so its targets resync.
    pub fn resync(&self, select: impl Fn(&WatchSpec) -> bool) {
        for (spec, running) in &self.running {
            if select(spec) {
                // A full channel already holds a pending restart.
                let _ = running.restart.try_send(());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    pub fn stop_all(&mut self) {
        for (_, running) in self.running.drain() {
            running.task.abort();
        }
        self.metrics.watches_open.set(0);
    }
}
