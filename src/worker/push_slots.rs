//! How many pushes a replica runs at once: at most `--max-concurrent-pushes`,
//! fewer while the git server is too slow to answer in time.
//!
//! A push has to finish before its shard Lease could expire, so one that
//! runs into the timeout is killed and starts over. Every replica's pushes
//! add up at the git server; past its ceiling every push is slow, all of
//! them time out, and nothing gets through. So the limit adapts: a timeout
//! halves it (down to 1), and after as many successes in a row as the limit
//! allows it grows by one again (additive increase, multiplicative decrease).

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::info;

/// The replica's push slots, shared by every branch worker.
#[derive(Clone, Debug)]
pub struct PushSlots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    semaphore: Arc<Semaphore>,
    max: usize,
    limit: Mutex<Limit>,
}

#[derive(Debug)]
struct Limit {
    /// Pushes allowed at once now.
    current: usize,
    /// Permits to retire as they come back, after a decrease.
    retire: usize,
    /// Successes since the last change of `current`.
    successes: usize,
}

/// One push in flight; report how it ended, then drop it.
#[derive(Debug)]
pub struct PushSlot {
    permit: Option<OwnedSemaphorePermit>,
    inner: Arc<Inner>,
}

/// How a push ended, as far as the git server's load is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushEnd {
    /// The server answered in time (accepted or rejected the push).
    Answered,
    /// Killed at its deadline: the server is too slow for this many pushes.
    TimedOut,
    /// Anything else (no connection, credentials): says nothing about load.
    Other,
}

impl PushSlots {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(max)),
                max,
                limit: Mutex::new(Limit { current: max, retire: 0, successes: 0 }),
            }),
        }
    }

    /// Waits for a free slot.
    pub async fn acquire(&self) -> PushSlot {
        let permit = self.inner.semaphore.clone().acquire_owned().await.expect("the slots are never closed");
        PushSlot { permit: Some(permit), inner: self.inner.clone() }
    }
}

impl PushSlot {
    /// Adapts the limit to how the push ended and frees the slot.
    pub fn finish(self, end: PushEnd) {
        let mut limit = self.inner.limit.lock().expect("push slots lock");
        match end {
            PushEnd::TimedOut if limit.current > 1 => {
                let lower = limit.current / 2;
                limit.retire += limit.current - lower;
                limit.current = lower;
                limit.successes = 0;
                info!(limit = lower, "a push timed out: fewer pushes at once while the git server is slow");
            }
            PushEnd::TimedOut => limit.successes = 0,
            PushEnd::Answered if limit.current < self.inner.max => {
                limit.successes += 1;
                if limit.successes >= limit.current {
                    limit.successes = 0;
                    limit.current += 1;
                    // A permit still to retire stays in use instead.
                    if limit.retire > 0 {
                        limit.retire -= 1;
                    } else {
                        self.inner.semaphore.add_permits(1);
                    }
                }
            }
            PushEnd::Answered | PushEnd::Other => {}
        }
        // Dropping `self` (below) returns or retires the permit.
    }
}

impl Drop for PushSlot {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else { return };
        let mut limit = self.inner.limit.lock().expect("push slots lock");
        if limit.retire > 0 {
            limit.retire -= 1;
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn available(slots: &PushSlots) -> usize {
        slots.inner.semaphore.available_permits()
    }

    impl PushSlots {
        /// Pushes allowed at once now.
        fn limit(&self) -> usize {
            self.inner.limit.lock().expect("push slots lock").current
        }
    }

    #[tokio::test]
    async fn a_timeout_halves_the_pushes_in_flight_and_successes_restore_them() {
        let slots = PushSlots::new(4);
        let held: Vec<PushSlot> = futures::future::join_all((0..4).map(|_| slots.acquire())).await;
        let mut held = held.into_iter();
        held.next().unwrap().finish(PushEnd::TimedOut);
        assert_eq!(slots.limit(), 2);
        // The two permits above the new limit are retired as they come back.
        held.next().unwrap().finish(PushEnd::Other);
        assert_eq!(available(&slots), 0);
        held.next().unwrap().finish(PushEnd::Other);
        held.next().unwrap().finish(PushEnd::Other);
        assert_eq!(available(&slots), 2);
        assert_eq!(slots.limit(), 2);

        // Two successes at limit 2 grow it to 3, three more at 3 to 4, and no further.
        for expected in [2, 3, 3, 3, 4, 4, 4, 4, 4] {
            slots.acquire().await.finish(PushEnd::Answered);
            assert_eq!(slots.limit(), expected);
        }
        assert_eq!(available(&slots), 4);
    }

    #[tokio::test]
    async fn growth_while_permits_are_still_out_keeps_one_instead_of_adding_one() {
        let slots = PushSlots::new(8);
        let held: Vec<PushSlot> = futures::future::join_all((0..8).map(|_| slots.acquire())).await;
        let mut held = held.into_iter();
        held.next().unwrap().finish(PushEnd::TimedOut); // limit 4
        held.next().unwrap().finish(PushEnd::TimedOut); // limit 2, permits still to retire
        held.next().unwrap().finish(PushEnd::Answered);
        held.next().unwrap().finish(PushEnd::Answered); // limit 3
        assert_eq!(slots.limit(), 3);
        held.for_each(|slot| slot.finish(PushEnd::Other));
        assert_eq!(available(&slots), 3, "as many free slots as the limit once all came back");
    }

    #[tokio::test]
    async fn the_limit_never_drops_below_one_push() {
        let slots = PushSlots::new(2);
        for _ in 0..5 {
            slots.acquire().await.finish(PushEnd::TimedOut);
        }
        assert_eq!(slots.limit(), 1);
        assert_eq!(available(&slots), 1);
        let only = slots.acquire().await;
        let second = tokio::time::timeout(Duration::from_millis(50), slots.acquire()).await;
        assert!(second.is_err(), "a second push must wait while the limit is 1");
        drop(only);
        tokio::time::timeout(Duration::from_secs(5), slots.acquire()).await.expect("the slot came back");
    }

    #[tokio::test]
    async fn failures_that_are_not_timeouts_leave_the_limit_alone() {
        let slots = PushSlots::new(3);
        slots.acquire().await.finish(PushEnd::Other);
        assert_eq!((slots.limit(), available(&slots)), (3, 3));
    }
}
