//! Watches: discovery, one shared watch per (resource, scope), the index of
//! watched objects, and dispatch of their changes to branch workers.

pub mod discovery;
pub mod dispatch;
pub mod exclusions;
pub mod index;
pub mod list;
mod manager;
mod overflow;
mod task;

use std::collections::HashMap;

use tokio::sync::mpsc;

pub use list::InitialList;
pub use manager::WatchManager;
pub use overflow::PARK_LIMIT;

use crate::route::TargetKey;
use crate::worker::queue::WorkItem;

/// What every watch task reads for each event: routing plus the queue of
/// each active target's branch worker.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub routing: dispatch::Routing,
    pub queues: HashMap<TargetKey, mpsc::Sender<WorkItem>>,
}

/// Something a user should hear about, reported in the target's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A Secret was selected but not written: no encryption is configured.
    SecretWithheld { target: TargetKey, namespace: Option<String>, name: String },
    /// The target's changes overflowed and are dropped until its worker
    /// has caught up; then `Resync` follows.
    Backlogged { target: TargetKey },
    /// The target's changes overflowed and were dropped; its worker has
    /// caught up, so resync it from the cluster.
    Resync { target: TargetKey },
    /// An object could not be sanitized: these targets keep its last version.
    Unsanitizable { targets: Vec<TargetKey>, object: String, error: String },
    /// An object that could not be sanitized now could (or is gone).
    Sanitizable { object: String },
}
