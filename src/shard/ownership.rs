//! What this replica may do with each shard, published by the coordinator
//! and read by the controller (which workers run) and by workers (the fence
//! before each push).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// A held shard Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldShard {
    /// Local monotonic time by which all work under the Lease must stop.
    pub expires: Instant,
    /// Another replica should own it: stop intake, drain, then release.
    pub releasing: bool,
}

/// The shards this replica holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    pub held: BTreeMap<u32, HeldShard>,
    /// Shards the assignment gives this replica that it does not hold yet:
    /// their workers prepare (standby) until the Lease comes.
    pub incoming: BTreeSet<u32>,
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

    pub fn is_held(&self, shard: u32) -> bool {
        self.held.contains_key(&shard)
    }

    /// The same shards in the same roles (expiry times aside).
    pub fn same_roles(&self, other: &Ownership) -> bool {
        self.incoming == other.incoming
            && self.held.len() == other.held.len()
            && self.held.iter().zip(&other.held).all(|((a, x), (b, y))| a == b && x.releasing == y.releasing)
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
}

impl PartialEq for Fence {
    fn eq(&self, other: &Self) -> bool {
        self.shard == other.shard && self.push_timeout == other.push_timeout
    }
}

impl Fence {
    pub fn new(shard: u32, push_timeout: Duration, view: OwnershipView) -> Self {
        Self { shard, push_timeout, view }
    }

    /// A fence that always passes, for a replica that holds everything for
    /// ever (benchmarks and tests of the worker alone).
    pub fn unfenced(push_timeout: Duration) -> Self {
        let held =
            HeldShard { expires: Instant::now() + Duration::from_secs(100 * 365 * 86400), releasing: false };
        let (tx, view) =
            watch::channel(Arc::new(Ownership { held: BTreeMap::from([(0, held)]), ..Ownership::default() }));
        // The receiver keeps the last value after the sender is gone.
        drop(tx);
        Self { shard: 0, push_timeout, view }
    }

    /// Ok(bound) when a push may start now; it must end within `bound`,
    /// the push timeout, which may outlast the Lease.
    pub fn check(&self, now: Instant) -> Result<Duration, FenceError> {
        let held =
            self.view.borrow().held.get(&self.shard).copied().ok_or(FenceError::NotHeld(self.shard))?;
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
            held: BTreeMap::from([(shard, HeldShard { expires, releasing })]),
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
            held: BTreeMap::from([(1, HeldShard { expires: now, releasing: false })]),
            ..Ownership::default()
        };
        let mut b = a.clone();
        b.held.get_mut(&1).unwrap().expires = now + Duration::from_secs(1);
        assert!(a.same_roles(&b));
        b.held.get_mut(&1).unwrap().releasing = true;
        assert!(!a.same_roles(&b));
        assert!(!a.same_roles(&Ownership::default()));
    }

    #[test]
    fn unfenced_always_passes() {
        assert!(Fence::unfenced(Duration::from_secs(60)).check(Instant::now()).is_ok());
    }
}
