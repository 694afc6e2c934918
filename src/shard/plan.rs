//! The coordinator's decisions in one pass (pure): which held shards are
//! overdue (lost), which are due for renewal, which desired shards to try to
//! acquire, which to hand over and which of those may be released now.
//!
//! In: when each held Lease was last renewed, the Lease records, the shards
//! the assignment gives this replica, the drained reports, the time. Out: a
//! [`PassPlan`]; `coordinator` does the Lease writes and feeds results back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::records::Record;

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
/// (None: never confirmed).
pub fn held_shards(held: &BTreeMap<u32, Option<Instant>>, timing: Timing, now: Instant) -> PassPlan {
    let mut plan = PassPlan::default();
    for (shard, renewed) in held {
        match renewed {
            Some(at) if *at + timing.renew_deadline > now => {
                if *at + timing.retry_period <= now {
                    plan.renew.push(*shard);
                }
            }
            _ => plan.lose.push(*shard),
        }
    }
    plan
}

/// Desired shards this replica does not hold that it may take: free ones,
/// and ones whose Lease still names it (it restarted, or a renewal's answer
/// was lost).
pub fn to_acquire(
    desired: &BTreeSet<u32>,
    held: &BTreeSet<u32>,
    records: &BTreeMap<u32, Record>,
    me: &str,
) -> Vec<u32> {
    desired
        .iter()
        .filter(|s| !held.contains(s))
        .filter(|s| match records.get(s) {
            Some(Record::Free) => true,
            Some(Record::Live { holder, .. }) => holder == me,
            None => false,
        })
        .copied()
        .collect()
}

/// Held shards the assignment no longer gives this replica, and those of
/// them whose workers have drained (their Leases may be released now).
pub fn handover(
    held: &BTreeSet<u32>,
    desired: &BTreeSet<u32>,
    drained: &BTreeSet<u32>,
) -> (BTreeSet<u32>, Vec<u32>) {
    let releasing: BTreeSet<u32> = held.difference(desired).copied().collect();
    let release = releasing.intersection(drained).copied().collect();
    (releasing, release)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

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
    fn free_shards_and_our_own_stale_leases_are_acquired() {
        let records = BTreeMap::from([
            (0, Record::Free),
            (1, Record::Live { holder: "me".into(), expires_at: Timestamp::UNIX_EPOCH }),
            (2, Record::Live { holder: "other".into(), expires_at: Timestamp::UNIX_EPOCH }),
            (3, Record::Free),
        ]);
        let desired = BTreeSet::from([0, 1, 2, 3, 4]);
        let held = BTreeSet::from([3]);
        assert_eq!(to_acquire(&desired, &held, &records, "me"), vec![0, 1]);
    }

    #[test]
    fn undesired_shards_are_handed_over_and_released_once_drained() {
        let (releasing, release) =
            handover(&BTreeSet::from([1, 2, 3]), &BTreeSet::from([1]), &BTreeSet::from([3, 9]));
        assert_eq!(releasing, BTreeSet::from([2, 3]));
        assert_eq!(release, vec![3]);
    }
}
