//! What this replica may do with each shard, published by the coordinator
//! and read by the controller (which workers run) and by workers (the fence
//! before each push).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// A held shard Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldShard {
    /// Local monotonic time by which all work under the Lease must stop.
    pub expires: Instant,
    /// Another replica should own it: stop intake, drain, then release.
    pub releasing: bool,
    /// Which unbroken tenure of this replica the Lease belongs to. It stays
    /// the same across a lapse that no other replica can have used (see
    /// [`Ownership::suspended`]); any other acquisition starts a new one.
    pub tenure: u64,
}

/// The shards this replica holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    pub held: BTreeMap<u32, HeldShard>,
    /// Shards the assignment gives this replica that it does not hold yet:
    /// their workers prepare (standby) until the Lease comes.
    pub incoming: BTreeSet<u32>,
    /// Shards another member owns that come to this replica if it dies:
    /// their workers stand by warm (see `balance::successors`).
    pub successor: BTreeSet<u32>,
    /// Shards lost only because their renewal failed (the API server could
    /// not be reached), by tenure, that no other replica is known to have
    /// held since. Their workers keep what they have not pushed: if the
    /// Lease comes back with this replica's name still on it, nobody wrote
    /// the branch in between, and the same tenure goes on.
    pub suspended: BTreeMap<u32, u64>,
}

impl Ownership {
    /// Held and not being handed over: run its workers and write its status.
    pub fn is_active(&self, shard: u32) -> bool {
        self.held.get(&shard).is_some_and(|h| !h.releasing)
    }

    pub fn is_releasing(&self, shard: u32) -> bool {
        self.held.get(&shard).is_some_and(|h| h.releasing)
    }

    pub fn is_incoming(&self, shard: u32) -> bool {
        self.incoming.contains(&shard)
    }

    pub fn is_successor(&self, shard: u32) -> bool {
        self.successor.contains(&shard)
    }

    pub fn is_held(&self, shard: u32) -> bool {
        self.held.contains_key(&shard)
    }

    /// The tenure a held or suspended shard belongs to.
    pub fn tenure(&self, shard: u32) -> Option<u64> {
        self.held.get(&shard).map(|h| h.tenure).or_else(|| self.suspended.get(&shard).copied())
    }

    /// The same shards in the same roles (expiry times aside).
    pub fn same_roles(&self, other: &Ownership) -> bool {
        self.incoming == other.incoming
            && self.successor == other.successor
            && self.suspended == other.suspended
            && self.held.len() == other.held.len()
            && self
                .held
                .iter()
                .zip(&other.held)
                .all(|((a, x), (b, y))| a == b && x.releasing == y.releasing && x.tenure == y.tenure)
    }
}

pub type OwnershipView = watch::Receiver<Arc<Ownership>>;

/// Why a push may not start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FenceError {
    #[error("shard {0} is not held by this replica")]
    NotHeld(u32),
    #[error("the Lease of shard {shard} expires in {left:?}, too soon to start a push (at least {needed:?})")]
    TooLate { shard: u32, left: Duration, needed: Duration },
    #[error("shard {shard} was held by another replica since this worker's tenure {tenure}")]
    Superseded { shard: u32, tenure: u64 },
}

/// A push starts only with more of the Lease left than this: a renewal
/// that is already late says another replica may own the shard soon.
pub const START_MARGIN: Duration = Duration::from_secs(1);

/// The fence in front of every push of one branch: its shard Lease must be
/// held when the push starts. It bounds when a push may start, not how long
/// it takes: a push that outlives the Lease cannot overwrite the next
/// owner's work, because every push is a compare-and-swap on the tip, and
/// the next owner fetches before its first push (docs/architecture.md).
#[derive(Clone, Debug)]
pub struct Fence {
    pub shard: u32,
    pub push_timeout: Duration,
    view: OwnershipView,
    /// The tenure of the first check that passed: the worker's commits
    /// build on what it fetched then, so a later tenure (another replica
    /// may have written in between) never opens this fence again. Shared by
    /// the clones, and kept when the worker is reconfigured.
    tenure: Arc<OnceLock<u64>>,
}

impl PartialEq for Fence {
    fn eq(&self, other: &Self) -> bool {
        self.shard == other.shard && self.push_timeout == other.push_timeout
    }
}

impl Fence {
    /// Bound at once to the shard's tenure if it is held now (a worker
    /// started in it), else by the first push that passes (a standby).
    pub fn new(shard: u32, push_timeout: Duration, view: OwnershipView) -> Self {
        let tenure: Arc<OnceLock<u64>> = Arc::default();
        if let Some(held) = view.borrow().held.get(&shard) {
            let _ = tenure.set(held.tenure);
        }
        Self { shard, push_timeout, view, tenure }
    }

    /// The tenure this fence is bound to, once a push passed it.
    pub fn tenure(&self) -> Option<u64> {
        self.tenure.get().copied()
    }

    /// A fence that always passes, for a replica that holds everything for
    /// ever (benchmarks and tests of the worker alone).
    pub fn unfenced(push_timeout: Duration) -> Self {
        let held = HeldShard {
            expires: Instant::now() + Duration::from_secs(100 * 365 * 86400),
            releasing: false,
            tenure: 0,
        };
        let (tx, view) =
            watch::channel(Arc::new(Ownership { held: BTreeMap::from([(0, held)]), ..Ownership::default() }));
        // The receiver keeps the last value after the sender is gone.
        drop(tx);
        Self { shard: 0, push_timeout, view, tenure: Arc::default() }
    }

    /// Ok(bound) when a push may start now; it must end within `bound`,
    /// the push timeout, which may outlast the Lease.
    pub fn check(&self, now: Instant) -> Result<Duration, FenceError> {
        let held =
            self.view.borrow().held.get(&self.shard).copied().ok_or(FenceError::NotHeld(self.shard))?;
        let tenure = *self.tenure.get_or_init(|| held.tenure);
        if tenure != held.tenure {
            return Err(FenceError::Superseded { shard: self.shard, tenure });
        }
        let left = held.expires.saturating_duration_since(now);
        if left <= START_MARGIN {
            return Err(FenceError::TooLate { shard: self.shard, left, needed: START_MARGIN });
        }
        Ok(self.push_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(shard: u32, expires: Instant, releasing: bool) -> OwnershipView {
        let (tx, rx) = watch::channel(Arc::new(Ownership {
            held: BTreeMap::from([(shard, HeldShard { expires, releasing, tenure: 1 })]),
            ..Ownership::default()
        }));
        drop(tx);
        rx
    }

    #[test]
    fn a_push_starts_while_the_lease_is_held_and_may_outlast_it() {
        let now = Instant::now();
        let timeout = Duration::from_secs(60);
        let fence = Fence::new(3, timeout, view(3, now + Duration::from_secs(6), false));
        assert_eq!(fence.check(now), Ok(timeout), "the push timeout may exceed the Lease left");
        assert_eq!(fence.check(now + Duration::from_secs(4)), Ok(timeout));
        assert!(matches!(fence.check(now + Duration::from_secs(5)), Err(FenceError::TooLate { .. })));
        assert!(matches!(fence.check(now + Duration::from_secs(9)), Err(FenceError::TooLate { .. })));
        let other = Fence::new(4, timeout, view(3, now + Duration::from_secs(6), false));
        assert_eq!(other.check(now), Err(FenceError::NotHeld(4)));
    }

    #[test]
    fn a_releasing_shard_may_still_push_its_drain() {
        let now = Instant::now();
        let fence = Fence::new(1, Duration::from_secs(1), view(1, now + Duration::from_secs(5), true));
        assert!(fence.check(now).is_ok());
    }

    #[test]
    fn roles_ignore_expiry() {
        let now = Instant::now();
        let a = Ownership {
            held: BTreeMap::from([(1, HeldShard { expires: now, releasing: false, tenure: 1 })]),
            ..Ownership::default()
        };
        let mut b = a.clone();
        b.held.get_mut(&1).unwrap().expires = now + Duration::from_secs(1);
        assert!(a.same_roles(&b));
        b.held.get_mut(&1).unwrap().releasing = true;
        assert!(!a.same_roles(&b));
        let mut c = a.clone();
        c.held.get_mut(&1).unwrap().tenure = 2;
        assert!(!a.same_roles(&c), "a new tenure is a new role");
        assert!(!a.same_roles(&Ownership::default()));
    }

    #[test]
    fn a_fence_stays_shut_once_its_shard_was_acquired_in_a_later_tenure() {
        let now = Instant::now();
        let held = |tenure| Ownership {
            held: BTreeMap::from([(
                2,
                HeldShard { expires: now + Duration::from_secs(6), releasing: false, tenure },
            )]),
            ..Ownership::default()
        };
        let (tx, rx) = watch::channel(Arc::new(Ownership::default()));
        let standby = Fence::new(2, Duration::from_secs(4), rx.clone());
        tx.send_replace(Arc::new(held(5)));
        assert_eq!(standby.tenure(), None, "a standby is bound by its first push");
        assert!(standby.check(now).is_ok());
        assert_eq!(standby.clone().tenure(), Some(5), "clones share the binding");
        let fence = Fence::new(2, Duration::from_secs(4), rx);
        assert_eq!(fence.tenure(), Some(5), "a worker of a held shard is bound at once");
        tx.send_replace(Arc::new(Ownership { suspended: BTreeMap::from([(2, 5)]), ..Ownership::default() }));
        assert_eq!(fence.check(now), Err(FenceError::NotHeld(2)), "suspended: no push");
        tx.send_replace(Arc::new(held(5)));
        assert!(fence.check(now).is_ok(), "the same tenure goes on after a lapse");
        tx.send_replace(Arc::new(held(6)));
        assert_eq!(fence.check(now), Err(FenceError::Superseded { shard: 2, tenure: 5 }));
        let fresh = Fence::new(2, Duration::from_secs(4), fence.view.clone());
        assert!(fresh.check(now).is_ok(), "a new worker binds to the new tenure");
    }

    #[test]
    fn unfenced_always_passes() {
        assert!(Fence::unfenced(Duration::from_secs(60)).check(Instant::now()).is_ok());
    }
}
