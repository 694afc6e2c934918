//! Where a watch parks the changes of a target whose worker queue is full,
//! so that one slow tenant never holds up the others on the same watch.
//!
//! A shared watch feeds every target that selects its objects. If it
//! awaited a full queue, a branch whose git server is down would stall every
//! other tenant's changes too. Instead, once a target's queue is full, that
//! target's changes wait here, in order and coalesced per file (the latest
//! state of a file wins, as in the worker's own queue, with sweeps as
//! barriers), so what waits is bounded by the target's files, not by the
//! rate of change; they go on as the worker takes them. A target with
//! changes parked gets its new changes parked behind them, so its order
//! holds.
//!
//! A target with more than [`PARK_LIMIT`] files parked (a huge folder whose
//! git server is down) is not held in memory either: its parked changes are
//! dropped and the ones that follow too, and once its worker has emptied
//! its queue the target is resynced (relist and sweep), which restores
//! every file from the cluster. Level-based, as after a restart.

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::route::TargetKey;
use crate::worker::queue::{CoalescingQueue, WorkItem};

/// What became of an offered item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Offered {
    /// In the worker's queue.
    Sent,
    /// Waiting here for room in the worker's queue.
    Parked,
    /// The worker is gone (its restart resyncs).
    Closed,
    /// Dropped, and the target overflowed just now: it is resynced once its
    /// worker caught up.
    Overflowed,
    /// Dropped: the target overflowed before and will be resynced.
    Resyncing,
}

/// Files one target may have parked before it is resynced instead.
pub const PARK_LIMIT: usize = 10_000;

#[derive(Debug)]
pub(super) struct Overflow {
    parked: HashMap<TargetKey, CoalescingQueue>,
    /// Targets whose changes were dropped; resynced once their queue is empty.
    lost: HashSet<TargetKey>,
    limit: usize,
}

impl Default for Overflow {
    fn default() -> Self {
        Self::with_limit(PARK_LIMIT)
    }
}

impl Overflow {
    /// Sends `item` to `queue` now, or parks it behind what `target` has waiting.
    pub fn offer(&mut self, target: &TargetKey, queue: &mpsc::Sender<WorkItem>, item: WorkItem) -> Offered {
        if self.lost.contains(target) {
            return Offered::Resyncing;
        }
        if let Some(waiting) = self.parked.get_mut(target) {
            waiting.push(item);
            if waiting.len() > self.limit {
                tracing::warn!(target_ns = %target.namespace, target = %target.name, parked = waiting.len(),
                    "too many changes wait for this target's branch worker; they are dropped, and the target is resynced from the cluster once the worker caught up");
                self.parked.remove(target);
                self.lost.insert(target.clone());
                return Offered::Overflowed;
            }
            return Offered::Parked;
        }
        match queue.try_send(item) {
            Ok(()) => Offered::Sent,
            Err(TrySendError::Full(item)) => {
                tracing::info!(target_ns = %target.namespace, target = %target.name,
                    "the branch worker's queue is full; this target's changes wait in the watch, coalesced, while other targets go on");
                let mut waiting = CoalescingQueue::default();
                waiting.push(item);
                self.parked.insert(target.clone(), waiting);
                Offered::Parked
            }
            Err(TrySendError::Closed(_)) => Offered::Closed,
        }
    }

    pub fn with_limit(limit: usize) -> Self {
        Self { parked: HashMap::new(), lost: HashSet::new(), limit }
    }

    /// Moves parked items into their queues while they have room, and
    /// returns the overflowed targets whose queues are empty now: they are
    /// due for a resync. A target whose worker is gone loses its parked
    /// items: its restart resyncs.
    pub fn flush(&mut self, queues: &HashMap<TargetKey, mpsc::Sender<WorkItem>>) -> Vec<TargetKey> {
        let mut caught_up = Vec::new();
        self.lost.retain(|target| match queues.get(target) {
            Some(queue) if queue.is_closed() => false,
            Some(queue) if queue.capacity() == queue.max_capacity() => {
                caught_up.push(target.clone());
                false
            }
            Some(_) => true,
            None => false,
        });
        self.parked.retain(|target, waiting| {
            let Some(queue) = queues.get(target) else { return false };
            while waiting.peek().is_some() {
                match queue.try_reserve() {
                    Ok(permit) => permit.send(waiting.pop().expect("peeked")),
                    Err(mpsc::error::TrySendError::Full(())) => return true,
                    Err(mpsc::error::TrySendError::Closed(())) => return false,
                }
            }
            false
        });
        caught_up
    }

    /// Whether anything waits: parked changes or an overflowed target.
    pub fn is_empty(&self) -> bool {
        self.parked.is_empty() && self.lost.is_empty()
    }

    /// Items waiting, all targets together.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.parked.values().map(CoalescingQueue::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::Operation;
    use crate::telemetry::trace::EventTrace;
    use crate::worker::queue::ChangeMeta;

    fn target(name: &str) -> TargetKey {
        TargetKey::new("tenant", name)
    }

    fn write(path: &str, value: &str) -> WorkItem {
        let meta = ChangeMeta {
            target: target("any"),
            operation: Operation::Update,
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            namespace: Some("tenant".into()),
            name: path.into(),
            resource_version: None,
            manager: None,
            received_at: std::time::Instant::now(),
            resync: false,
            trace: EventTrace::default(),
        };
        WorkItem::Write { path: path.into(), content: Arc::from(value.as_bytes()), meta }
    }

    fn content(item: WorkItem) -> (String, String) {
        match item {
            WorkItem::Write { path, content, .. } => (path, String::from_utf8(content.to_vec()).unwrap()),
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn a_full_queue_parks_only_its_own_target_and_keeps_its_order() {
        let (slow, mut slow_rx) = mpsc::channel(1);
        let (fast, mut fast_rx) = mpsc::channel(8);
        let (a, b) = (target("slow"), target("fast"));
        let mut overflow = Overflow::default();
        assert_eq!(overflow.offer(&a, &slow, write("a/1", "v1")), Offered::Sent);
        assert_eq!(overflow.offer(&a, &slow, write("a/1", "v2")), Offered::Parked);
        assert_eq!(overflow.offer(&b, &fast, write("b/1", "x")), Offered::Sent, "the other tenant goes on");
        assert_eq!(overflow.offer(&a, &slow, write("a/2", "w")), Offered::Parked);
        assert_eq!(overflow.offer(&a, &slow, write("a/1", "v3")), Offered::Parked, "coalesced with v2");
        assert_eq!(overflow.len(), 2);
        assert_eq!(content(fast_rx.try_recv().unwrap()), ("b/1".into(), "x".into()));

        let queues = HashMap::from([(a.clone(), slow.clone()), (b.clone(), fast.clone())]);
        overflow.flush(&queues);
        assert_eq!(overflow.len(), 2, "no room yet: nothing moves");
        assert_eq!(content(slow_rx.try_recv().unwrap()), ("a/1".into(), "v1".into()));
        overflow.flush(&queues);
        assert_eq!(content(slow_rx.try_recv().unwrap()), ("a/1".into(), "v3".into()));
        // A new change queues behind the one still parked, never ahead of it.
        assert_eq!(overflow.offer(&a, &slow, write("a/3", "z")), Offered::Parked);
        overflow.flush(&queues);
        assert_eq!(content(slow_rx.try_recv().unwrap()), ("a/2".into(), "w".into()));
        overflow.flush(&queues);
        assert_eq!(content(slow_rx.try_recv().unwrap()), ("a/3".into(), "z".into()));
        overflow.flush(&queues);
        assert!(overflow.is_empty());
        assert_eq!(
            overflow.offer(&a, &slow, write("a/4", "q")),
            Offered::Sent,
            "drained: straight through again"
        );
    }

    #[test]
    fn past_the_limit_a_target_is_dropped_and_resynced_once_its_worker_caught_up() {
        let (queue, mut rx) = mpsc::channel(2);
        let a = target("huge");
        let mut overflow = Overflow::with_limit(3);
        for i in 0..2 {
            assert_eq!(overflow.offer(&a, &queue, write(&format!("f{i}"), "v")), Offered::Sent);
        }
        for i in 2..5 {
            assert_eq!(overflow.offer(&a, &queue, write(&format!("f{i}"), "v")), Offered::Parked);
        }
        assert_eq!(
            overflow.offer(&a, &queue, write("f5", "v")),
            Offered::Overflowed,
            "a fourth file overflows"
        );
        assert_eq!(overflow.len(), 0, "nothing is held for it any more");
        assert_eq!(overflow.offer(&a, &queue, write("f0", "w")), Offered::Resyncing);
        let queues = HashMap::from([(a.clone(), queue.clone())]);
        rx.try_recv().unwrap();
        assert!(overflow.flush(&queues).is_empty(), "its queue is not empty yet");
        rx.try_recv().unwrap();
        assert_eq!(overflow.flush(&queues), std::slice::from_ref(&a), "caught up: resync it");
        assert!(overflow.is_empty());
        assert_eq!(overflow.offer(&a, &queue, write("f0", "x")), Offered::Sent);
    }

    #[test]
    fn a_gone_worker_drops_what_was_parked_for_it() {
        let (queue, rx) = mpsc::channel(1);
        let a = target("gone");
        let mut overflow = Overflow::default();
        assert_eq!(overflow.offer(&a, &queue, write("a/1", "v1")), Offered::Sent);
        assert_eq!(overflow.offer(&a, &queue, write("a/2", "v2")), Offered::Parked);
        drop(rx);
        overflow.flush(&HashMap::from([(a.clone(), queue.clone())]));
        assert!(overflow.is_empty());
        assert_eq!(overflow.offer(&a, &queue, write("a/3", "v3")), Offered::Closed);
    }
}
