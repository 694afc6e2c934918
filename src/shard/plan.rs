//! Parts of the coordinator core's pass (pure): which held shards are
//! overdue (lost), which are due for renewal, which desired shards are
//! incoming, which to hand over and which of those may be released now.
//!
//! In: when each held Lease was last renewed, the shards the assignment
//! gives this replica, the drained reports, the time. Out: a [`PassPlan`]
//! and the shards to release; `core` turns them into Lease writes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The timing settings a pass decides with.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What to do with the shard Leases this pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassPlan {
    /// Held, but not renewed within the renew deadline: stop using them now.
    pub lose: Vec<u32>,
    /// Held and due for renewal.
    pub renew: Vec<u32>,
}

/// Decides about the held shards; `held` maps each to its last renewal
/// (None: never confirmed). Once one is due, every one renewed at least
/// three quarters of a retry period ago goes with it: renewals fall into step, so a
/// replica wakes and writes in bursts once per period instead of once
/// per shard (at 1,000 shards that was most of a replica's CPU), and no
/// Lease is written more than twice per period.
pub fn held_shards(held: &BTreeMap<u32, Option<Instant>>, timing: Timing, now: Instant) -> PassPlan {
    let mut plan = PassPlan::default();
    let mut any_due = false;
    let mut early = Vec::new();
    for (shard, renewed) in held {
        match renewed {
            Some(at) if *at + timing.renew_deadline > now => {
                if *at + timing.retry_period <= now {
                    any_due = true;
                    plan.renew.push(*shard);
                } else if *at + timing.retry_period * 3 / 4 <= now {
                    early.push(*shard);
                }
            }
            _ => plan.lose.push(*shard),
        }
    }
    if any_due {
        plan.renew.extend(early);
        plan.renew.sort_unstable();
    }
    plan
}

/// Desired shards not held yet: another live replica still holds them, or
/// acquiring failed this pass (a race, an API error). Their workers prepare
/// on standby, and keep what they received until the Lease comes: a
/// standby that stopped between the release and the acquire would lose
/// the changes only it had received.
pub fn incoming(desired: &BTreeSet<u32>, held: &BTreeSet<u32>) -> BTreeSet<u32> {
    desired.difference(held).copied().collect()
}

/// The state of handing shards over, carried from pass to pass.
#[derive(Clone, Debug, Default)]
pub struct Handover {
    /// Held shards no longer desired, and since when.
    undesired_since: BTreeMap<u32, Instant>,
    /// Shards whose writing stopped: their workers drain, then they go.
    pub releasing: BTreeSet<u32>,
}

impl Handover {
    /// Held shards that are no longer desired keep being written until
    /// another replica announced a standby for them (its watches already
    /// route their changes, so none falls between the two), or until `wait`
    /// passed (the new owner runs an older version, or cannot start). With
    /// no other live member (`standby_elsewhere` None) nobody will announce:
    /// no wait. A shard whose standby is gone again before the wait ended is
    /// written again: the old owner's drain leaves the changes since its cut
    /// to the standby, and a standby that stops takes them with it (seen in
    /// `ha_scaling`: the new owner changed twice while 3 of 5 replicas
    /// left). It is released once drained. Returns the shards to release now.
    pub fn pass(
        &mut self,
        held: &BTreeSet<u32>,
        desired: &BTreeSet<u32>,
        drained: &BTreeSet<u32>,
        standby_elsewhere: Option<&BTreeSet<u32>>,
        now: Instant,
        wait: Duration,
    ) -> Vec<u32> {
        let undesired: BTreeSet<u32> = held.difference(desired).copied().collect();
        self.undesired_since.retain(|s, _| undesired.contains(s));
        self.releasing.clear();
        for shard in &undesired {
            let since = *self.undesired_since.entry(*shard).or_insert(now);
            if standby_elsewhere.is_none_or(|s| s.contains(shard)) || since + wait <= now {
                self.releasing.insert(*shard);
            }
        }
        self.releasing.intersection(drained).copied().collect()
    }

    /// When a shard waiting for a standby stops waiting.
    pub fn next_deadline(&self, wait: Duration) -> Option<Instant> {
        self.undesired_since
            .iter()
            .filter(|(s, _)| !self.releasing.contains(s))
            .map(|(_, since)| *since + wait)
            .min()
    }

    pub fn forget(&mut self, shard: u32) {
        self.undesired_since.remove(&shard);
        self.releasing.remove(&shard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing =
        Timing { renew_deadline: Duration::from_secs(6), retry_period: Duration::from_secs(2) };

    #[test]
    fn held_shards_are_renewed_when_due_and_lost_past_the_deadline() {
        let now = Instant::now() + Duration::from_secs(100);
        let held = BTreeMap::from([
            (0, Some(now - Duration::from_secs(1))),
            (1, Some(now - Duration::from_secs(3))),
            (2, Some(now - Duration::from_secs(6))),
            (3, None),
        ]);
        assert_eq!(held_shards(&held, TIMING, now), PassPlan { lose: vec![2, 3], renew: vec![1] });
    }

    #[test]
    fn renewals_fall_into_step_once_one_is_due() {
        let now = Instant::now() + Duration::from_secs(100);
        let ago = |millis| Some(now - Duration::from_millis(millis));
        let held = BTreeMap::from([(0, ago(1_400)), (1, ago(1_600)), (2, ago(2_000))]);
        assert_eq!(
            held_shards(&held, TIMING, now).renew,
            vec![1, 2],
            "2 is due; 1 goes with it, 0 is too fresh"
        );
        let none_due = BTreeMap::from([(0, ago(1_400)), (1, ago(1_900))]);
        assert!(held_shards(&none_due, TIMING, now).renew.is_empty(), "nothing is due yet");
    }

    #[test]
    fn undesired_shards_are_written_until_a_standby_is_announced_or_the_wait_ends() {
        let now = Instant::now();
        let wait = Duration::from_secs(2);
        let held = BTreeSet::from([1, 2, 3]);
        let desired = BTreeSet::from([1]);
        let mut handover = Handover::default();
        let release =
            handover.pass(&held, &desired, &BTreeSet::from([2, 3]), Some(&BTreeSet::from([2])), now, wait);
        assert_eq!(handover.releasing, BTreeSet::from([2]), "3 waits for a standby");
        assert_eq!(release, vec![2], "2 is announced and drained");
        assert_eq!(handover.next_deadline(wait), Some(now + wait));
        let later = now + wait;
        let release = handover.pass(&held, &desired, &BTreeSet::new(), Some(&BTreeSet::new()), later, wait);
        assert_eq!(handover.releasing, BTreeSet::from([2, 3]), "the wait ended; 2 stays releasing");
        assert!(release.is_empty(), "neither is drained yet");
        assert_eq!(handover.next_deadline(wait), None);
        handover.pass(&held, &BTreeSet::from([1, 3]), &BTreeSet::new(), Some(&BTreeSet::new()), later, wait);
        assert_eq!(handover.releasing, BTreeSet::from([2]), "3 is desired again");
        let mut alone = Handover::default();
        alone.pass(&held, &BTreeSet::new(), &BTreeSet::new(), None, now, wait);
        assert_eq!(alone.releasing, held, "no other member: nobody to wait for");
    }

    #[test]
    fn a_shard_whose_standby_went_away_is_written_again_until_the_next_one() {
        let now = Instant::now();
        let wait = Duration::from_secs(8);
        let (held, desired) = (BTreeSet::from([1, 2]), BTreeSet::from([1]));
        let mut handover = Handover::default();
        let none = BTreeSet::new();
        handover.pass(&held, &desired, &none, Some(&BTreeSet::from([2])), now, wait);
        assert_eq!(handover.releasing, BTreeSet::from([2]));
        let later = now + Duration::from_secs(3);
        let release = handover.pass(&held, &desired, &BTreeSet::from([2]), Some(&none), later, wait);
        assert!(handover.releasing.is_empty(), "the standby left: written again");
        assert!(release.is_empty(), "and not released, though its worker drained");
        handover.pass(&held, &desired, &none, Some(&BTreeSet::from([2])), later, wait);
        assert_eq!(handover.releasing, BTreeSet::from([2]), "the next standby announced");
        let release = handover.pass(&held, &desired, &BTreeSet::from([2]), Some(&none), now + wait, wait);
        assert_eq!(release, vec![2], "past the wait, a missing standby holds nothing back");
    }

    #[test]
    fn desired_shards_not_held_yet_are_incoming() {
        let desired = BTreeSet::from([0, 1, 2, 3]);
        assert_eq!(incoming(&desired, &BTreeSet::from([1, 3, 7])), BTreeSet::from([0, 2]));
    }
}
