//! The branch worker's intake queue (pure): changes coalesce per file path,
//! the latest state winning, so a burst of updates to one object becomes one
//! pending change instead of an ever-growing backlog. Sweeps are barriers:
//! nothing queued after a sweep is merged into an entry queued before it, so
//! a sweep never deletes a file for an object that was created after the
//! sweep's snapshot of live objects.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::api::Operation;
use crate::route::TargetKey;
use crate::telemetry::trace::EventTrace;

/// What changed and why, for the commit message and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeMeta {
    pub target: TargetKey,
    pub operation: Operation,
    pub api_version: String,
    pub kind: String,
    /// The resource's plural name (`configmaps`), for the commit subject.
    pub plural: String,
    pub namespace: Option<String>,
    pub name: String,
    /// `metadata.resourceVersion` of the version seen.
    pub resource_version: Option<String>,
    /// The field manager that made the change, when known (see
    /// `quiet::managed::newest_manager`); the commit's author.
    pub manager: Option<String>,
    /// When the watch event arrived; for queue-age and lag metrics.
    pub received_at: Instant,
    /// Seen while listing (start, resync, relist) rather than as a change:
    /// such writes are reconciliation and are committed together.
    pub resync: bool,
    /// The trace of the watch event (or list) this change came from.
    pub trace: EventTrace,
}

/// Which files a sweep looks at: those of one resource, optionally in one
/// namespace, inside one target's folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepScope {
    pub target: TargetKey,
    pub group: String,
    pub plural: String,
    /// None: every namespace (or the cluster scope for cluster-scoped kinds).
    pub namespace: Option<String>,
}

/// One unit of work for a branch worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkItem {
    /// File `path` (full, including the target's folder) must hold `content`.
    Write { path: String, content: Arc<[u8]>, meta: ChangeMeta },
    /// File `path` must not exist.
    Delete { path: String, meta: ChangeMeta },
    /// Delete the target's files in `scope` whose full path is not in `live`.
    Sweep { scope: SweepScope, live: HashSet<String> },
    /// Delete the target's object files of every resource not in `owned`.
    Retain { target: TargetKey, owned: BTreeSet<(String, String)> },
}

impl WorkItem {
    /// The change's metadata (writes and deletes only).
    pub fn meta_mut(&mut self) -> Option<&mut ChangeMeta> {
        match self {
            Self::Write { meta, .. } | Self::Delete { meta, .. } => Some(meta),
            Self::Sweep { .. } | Self::Retain { .. } => None,
        }
    }

    fn path(&self) -> Option<&str> {
        match self {
            Self::Write { path, .. } | Self::Delete { path, .. } => Some(path),
            Self::Sweep { .. } | Self::Retain { .. } => None,
        }
    }
}

/// FIFO with per-path coalescing inside each epoch between barriers.
#[derive(Debug, Default)]
pub struct CoalescingQueue {
    entries: VecDeque<Option<WorkItem>>,
    /// Position (as absolute sequence) of each path's entry in the current epoch.
    open: HashMap<String, u64>,
    /// Absolute sequence number of `entries[0]`.
    head: u64,
    len: usize,
    /// Sweeps and retains pending.
    barriers: usize,
    coalesced: u64,
    /// Keep every change as it came (a standby must know each value).
    unmerged: bool,
}

impl CoalescingQueue {
    /// Adds an item; returns true if it replaced a pending one for the same path.
    pub fn push(&mut self, item: WorkItem) -> bool {
        let Some(path) = item.path() else {
            // A barrier: later changes must not jump ahead of it.
            self.open.clear();
            self.entries.push_back(Some(item));
            self.len += 1;
            self.barriers += 1;
            return false;
        };
        if let Some(&seq) = self.open.get(path).filter(|_| !self.unmerged) {
            let slot = &mut self.entries[(seq - self.head) as usize];
            let mut older = slot.take().expect("open entries are occupied");
            if let Some(meta) = older.meta_mut() {
                meta.trace.coalesced();
            }
            *slot = Some(merge(older, item));
            self.coalesced += 1;
            return true;
        }
        self.open.insert(path.to_owned(), self.head + self.entries.len() as u64);
        self.entries.push_back(Some(item));
        self.len += 1;
        false
    }

    /// Whether changes to the same path merge (the default) or each stays.
    pub fn set_merging(&mut self, merging: bool) {
        // Every settings update passes through here: only a switch closes
        // the open entries.
        if self.unmerged != merging {
            return;
        }
        self.unmerged = !merging;
        self.open.clear();
    }

    /// Drops, and returns, the sweeps and retains that some of the first
    /// `changes` writes and deletes (in the order of [`Self::changes`]) follow.
    pub fn drop_barriers_before(&mut self, changes: usize) -> Vec<WorkItem> {
        let (mut seen, mut dropped) = (0, Vec::new());
        for slot in &mut self.entries {
            match slot {
                Some(item) if item.path().is_some() => seen += 1,
                Some(_) if seen < changes => {
                    dropped.extend(slot.take());
                    self.len -= 1;
                    self.barriers -= 1;
                }
                _ => {}
            }
        }
        dropped
    }

    /// Takes the oldest pending item if `take` accepts it.
    pub fn pop_if(&mut self, take: impl Fn(&WorkItem) -> bool) -> Option<WorkItem> {
        if self.peek().is_some_and(take) { self.pop() } else { None }
    }

    /// The oldest pending item.
    pub fn peek(&mut self) -> Option<&WorkItem> {
        while let Some(None) = self.entries.front() {
            self.entries.pop_front();
            self.head += 1;
        }
        self.entries.front()?.as_ref()
    }

    /// The oldest pending item, without tidying up.
    pub fn front(&self) -> Option<&WorkItem> {
        self.entries.iter().flatten().next()
    }

    /// Whether a sweep or retain is pending.
    pub fn has_barrier(&self) -> bool {
        self.barriers > 0
    }

    /// Takes the oldest pending item.
    pub fn pop(&mut self) -> Option<WorkItem> {
        loop {
            let slot = self.entries.pop_front()?;
            let seq = self.head;
            self.head += 1;
            let Some(item) = slot else { continue };
            match item.path() {
                Some(path) if self.open.get(path) == Some(&seq) => {
                    self.open.remove(path);
                }
                Some(_) => {}
                None => self.barriers -= 1,
            }
            self.len -= 1;
            return Some(item);
        }
    }

    /// The pending writes and deletes, oldest first: (path, content; None
    /// for a delete).
    pub fn changes(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.entries.iter().flatten().filter_map(|item| match item {
            WorkItem::Write { path, content, .. } => Some((path.as_str(), Some(&content[..]))),
            WorkItem::Delete { path, .. } => Some((path.as_str(), None)),
            WorkItem::Sweep { .. } | WorkItem::Retain { .. } => None,
        })
    }

    /// Drops pending writes and deletes: `drop` is asked about each, in the
    /// order of [`Self::changes`]. Returns how many were dropped.
    pub fn drop_changes(&mut self, mut drop: impl FnMut() -> bool) -> usize {
        let mut dropped = 0;
        for (index, slot) in self.entries.iter_mut().enumerate() {
            let Some(path) = slot.as_ref().and_then(WorkItem::path).map(str::to_owned) else { continue };
            if !drop() {
                continue;
            }
            let seq = self.head + index as u64;
            if self.open.get(&path) == Some(&seq) {
                self.open.remove(&path);
            }
            *slot = None;
            self.len -= 1;
            dropped += 1;
        }
        dropped
    }

    /// Pending items.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many pushes were merged into a pending item so far.
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }

    /// Whether a pending change arrived before `since` (a sweep or a retain
    /// counts as early: it may delete what an early change wrote).
    pub fn holds_older_than(&self, since: Instant) -> bool {
        self.entries.iter().flatten().any(|item| match item {
            WorkItem::Write { meta, .. } | WorkItem::Delete { meta, .. } => meta.received_at < since,
            WorkItem::Sweep { .. } | WorkItem::Retain { .. } => true,
        })
    }

    /// When the oldest pending change arrived.
    pub fn oldest(&self) -> Option<Instant> {
        self.entries.iter().flatten().find_map(|item| match item {
            WorkItem::Write { meta, .. } | WorkItem::Delete { meta, .. } => Some(meta.received_at),
            _ => None,
        })
    }
}

/// The newer state wins, but the operation stays truthful: a create that is
/// then updated is still a create; a delete of something created in the same
/// batch keeps the delete.
fn merge(older: WorkItem, newer: WorkItem) -> WorkItem {
    match (older, newer) {
        (WorkItem::Write { meta: old, .. }, WorkItem::Write { path, content, mut meta })
            if old.operation == Operation::Create =>
        {
            meta.operation = Operation::Create;
            meta.received_at = old.received_at;
            WorkItem::Write { path, content, meta }
        }
        (older, mut newer) => {
            if let (
                WorkItem::Write { meta: old, .. } | WorkItem::Delete { meta: old, .. },
                WorkItem::Write { meta, .. } | WorkItem::Delete { meta, .. },
            ) = (&older, &mut newer)
            {
                meta.received_at = old.received_at;
            }
            newer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(operation: Operation) -> ChangeMeta {
        ChangeMeta {
            target: TargetKey::new("ns", "t"),
            operation,
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            namespace: Some("ns".into()),
            name: "cm".into(),
            resource_version: None,
            manager: None,
            received_at: Instant::now(),
            resync: false,
            trace: EventTrace::default(),
        }
    }

    fn write(path: &str, content: &str, operation: Operation) -> WorkItem {
        WorkItem::Write { path: path.into(), content: content.as_bytes().into(), meta: meta(operation) }
    }

    fn sweep() -> WorkItem {
        WorkItem::Sweep {
            scope: SweepScope {
                target: TargetKey::new("ns", "t"),
                group: String::new(),
                plural: "configmaps".into(),
                namespace: None,
            },
            live: HashSet::new(),
        }
    }

    /// (path, content or None for a delete, operation) of a write or delete.
    fn summary(item: Option<WorkItem>) -> Option<(String, Option<String>, Operation)> {
        match item? {
            WorkItem::Write { path, content, meta } => {
                Some((path, Some(String::from_utf8(content.to_vec()).unwrap()), meta.operation))
            }
            WorkItem::Delete { path, meta } => Some((path, None, meta.operation)),
            _ => Some(("<barrier>".into(), None, Operation::All)),
        }
    }

    fn delete(path: &str) -> WorkItem {
        WorkItem::Delete { path: path.into(), meta: meta(Operation::Delete) }
    }

    #[test]
    fn the_latest_state_of_a_path_wins_and_keeps_its_place() {
        let mut queue = CoalescingQueue::default();
        queue.push(write("a", "1", Operation::Update));
        queue.push(write("b", "1", Operation::Update));
        assert!(queue.push(write("a", "2", Operation::Update)));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.coalesced(), 1);
        assert_eq!(summary(queue.pop()), Some(("a".into(), Some("2".into()), Operation::Update)));
        assert_eq!(summary(queue.pop()), Some(("b".into(), Some("1".into()), Operation::Update)));
        assert!(queue.pop().is_none() && queue.is_empty());
    }

    #[test]
    fn a_create_stays_a_create_and_a_delete_wins() {
        let mut queue = CoalescingQueue::default();
        queue.push(write("a", "1", Operation::Create));
        queue.push(write("a", "2", Operation::Update));
        assert_eq!(summary(queue.pop()), Some(("a".into(), Some("2".into()), Operation::Create)));
        queue.push(write("b", "1", Operation::Update));
        queue.push(delete("b"));
        assert_eq!(summary(queue.pop()), Some(("b".into(), None, Operation::Delete)));
    }

    #[test]
    fn nothing_jumps_ahead_of_a_sweep() {
        let mut queue = CoalescingQueue::default();
        queue.push(write("a", "1", Operation::Update));
        queue.push(sweep());
        assert!(!queue.push(write("a", "2", Operation::Update)), "must not merge across the barrier");
        assert_eq!(queue.len(), 3);
        assert_eq!(summary(queue.pop()), Some(("a".into(), Some("1".into()), Operation::Update)));
        assert_eq!(summary(queue.pop()).unwrap().0, "<barrier>");
        assert_eq!(summary(queue.pop()), Some(("a".into(), Some("2".into()), Operation::Update)));
    }

    #[test]
    fn a_pending_barrier_is_known_until_it_is_taken() {
        let mut queue = CoalescingQueue::default();
        queue.push(write("a", "1", Operation::Update));
        assert!(!queue.has_barrier());
        queue.push(sweep());
        queue.push(sweep());
        assert!(queue.has_barrier());
        queue.pop();
        queue.pop();
        assert!(queue.has_barrier(), "one sweep is still pending");
        assert_eq!(summary(queue.peek().cloned()).unwrap().0, "<barrier>");
        queue.pop();
        assert!(!queue.has_barrier());
        assert!(queue.peek().is_none());
    }

    #[test]
    fn a_path_popped_and_pushed_again_starts_a_new_entry() {
        let mut queue = CoalescingQueue::default();
        queue.push(write("a", "1", Operation::Update));
        queue.pop();
        assert!(!queue.push(write("a", "2", Operation::Update)));
        queue.push(write("b", "1", Operation::Update));
        assert!(queue.push(write("a", "3", Operation::Update)));
        assert_eq!(summary(queue.pop()), Some(("a".into(), Some("3".into()), Operation::Update)));
    }

    #[test]
    fn chosen_changes_can_be_dropped_in_order() {
        let mut queue = CoalescingQueue::default();
        queue.push(write("a", "1", Operation::Update));
        queue.push(sweep());
        queue.push(write("a", "2", Operation::Update));
        queue.push(delete("b"));
        let listed: Vec<(String, Option<Vec<u8>>)> =
            queue.changes().map(|(p, c)| (p.to_owned(), c.map(<[u8]>::to_vec))).collect();
        assert_eq!(
            listed,
            vec![("a".into(), Some(b"1".to_vec())), ("a".into(), Some(b"2".to_vec())), ("b".into(), None)]
        );
        let mut picks = [true, false, true].into_iter();
        assert_eq!(queue.drop_changes(|| picks.next().unwrap()), 2);
        assert_eq!(queue.len(), 2, "the sweep and a=2 are left");
        assert!(matches!(queue.pop(), Some(WorkItem::Sweep { .. })));
        assert_eq!(summary(queue.pop()).map(|(p, c, _)| (p, c)), Some(("a".into(), Some("2".into()))));
        queue.push(write("b", "3", Operation::Create));
        assert_eq!(queue.len(), 1, "b's dropped entry is closed: a new one opens");
    }

    #[test]
    fn without_merging_every_change_stays_and_barriers_can_go() {
        let mut queue = CoalescingQueue::default();
        queue.set_merging(false);
        queue.push(sweep());
        assert!(!queue.push(write("a", "1", Operation::Update)));
        assert!(!queue.push(write("a", "2", Operation::Update)), "kept apart");
        queue.push(sweep());
        queue.push(write("b", "1", Operation::Update));
        assert_eq!(queue.changes().count(), 3);
        assert_eq!(queue.drop_barriers_before(3).len(), 2, "both sweeps come before b");
        assert_eq!(queue.len(), 3);
        queue.set_merging(true);
        assert!(!queue.push(write("b", "2", Operation::Update)), "no entry was left open");
        assert!(queue.push(write("b", "3", Operation::Update)), "merging again");
    }

    #[test]
    fn the_oldest_arrival_is_kept_when_merging() {
        let mut queue = CoalescingQueue::default();
        let first = write("a", "1", Operation::Update);
        let WorkItem::Write { meta: ref first_meta, .. } = first else { unreachable!() };
        let arrived = first_meta.received_at;
        queue.push(first);
        queue.push(write("a", "2", Operation::Update));
        assert_eq!(queue.oldest(), Some(arrived));
    }
}
