//! When to push (pure): after `maxCommits` commits, or when the oldest
//! unpushed commit has waited `interval`; and how long to back off after a
//! failure.

use std::time::{Duration, Instant};

use crate::api::PushStrategy;
use crate::cli::parse_duration;

/// Default `push.interval`: a change waits at most this long for a push.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default `push.maxCommits`.
pub const DEFAULT_MAX_COMMITS: usize = 20;
/// Longest `push.interval` (the schema refuses longer ones; a GitProvider
/// from an older schema is capped here instead of overflowing the clock).
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The effective push batching of a branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushPolicy {
    pub interval: Duration,
    pub max_commits: usize,
}

impl Default for PushPolicy {
    fn default() -> Self {
        Self { interval: DEFAULT_INTERVAL, max_commits: DEFAULT_MAX_COMMITS }
    }
}

impl PushPolicy {
    /// From a provider's `push` (the schema already validated the values).
    pub fn from_spec(spec: Option<&PushStrategy>) -> Self {
        let default = Self::default();
        let Some(spec) = spec else { return default };
        Self {
            interval: spec
                .interval
                .as_deref()
                .and_then(|i| parse_duration(i).ok())
                .map_or(default.interval, |i| i.min(MAX_INTERVAL)),
            max_commits: spec.max_commits.map_or(default.max_commits, |m| m.max(1) as usize),
        }
    }

    /// When the next push is due, given the unpushed commits; a full batch
    /// is due `now`.
    pub fn due(&self, unpushed: usize, oldest: Option<Instant>, now: Instant) -> Option<Instant> {
        if unpushed == 0 {
            return None;
        }
        if unpushed >= self.max_commits {
            return Some(now);
        }
        oldest.map(|at| at.checked_add(self.interval).unwrap_or(at))
    }
}

/// Commits the next push may carry after one that carried `attempted` (pure):
/// a failure halves what was attempted (67 commits that timed out are next
/// 33, not half the cap), a success doubles the limit back towards `cap`.
pub fn next_push_limit(limit: usize, attempted: usize, pushed: bool, cap: usize) -> usize {
    if pushed { limit.saturating_mul(2).min(cap) } else { (limit.min(attempted) / 2).max(1) }
}

/// How long a listed object may wait for others of its list, so that a
/// large folder's initial list becomes a few large commits instead of one
/// commit (one rewrite of the folder's tree) per page the watch delivered.
pub const RESYNC_BATCH_WAIT: Duration = Duration::from_secs(1);

/// Until when a batch of listed objects at the head of the queue waits for
/// more (pure): not once it is full or a sweep (the end of a list) is queued
/// behind it, and never longer than RESYNC_BATCH_WAIT after the first arrived.
pub fn resync_batch_hold(
    first_arrived: Instant,
    queued: usize,
    full: usize,
    list_ended: bool,
    now: Instant,
) -> Option<Instant> {
    let until = first_arrived + RESYNC_BATCH_WAIT;
    (queued < full && !list_ended && until > now).then_some(until)
}

/// Exponential backoff between failed pushes: 1 s doubling to 30 s, each
/// step spread over ±25% by `salt` (the branch), so branches that failed
/// together (a git server outage) do not all come back at the same instant.
pub fn backoff(failures: u32, salt: u64) -> Duration {
    let base = Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30));
    let spread = xxhash_rust::xxh3::xxh3_64_with_seed(&failures.to_le_bytes(), salt) % 1001;
    base.mul_f64(0.75 + spread as f64 / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_values_override_defaults() {
        let spec = PushStrategy { interval: Some("1m".into()), max_commits: Some(5) };
        assert_eq!(
            PushPolicy::from_spec(Some(&spec)),
            PushPolicy { interval: Duration::from_secs(60), max_commits: 5 }
        );
        assert_eq!(PushPolicy::from_spec(None), PushPolicy::default());
    }

    /// A GitProvider from before the schema's limit: capped, never overflowing.
    #[test]
    fn an_interval_past_a_day_is_capped() {
        let spec = PushStrategy { interval: Some("8000h".into()), max_commits: None };
        let policy = PushPolicy::from_spec(Some(&spec));
        assert_eq!(policy.interval, MAX_INTERVAL);
        let now = Instant::now();
        assert_eq!(policy.due(1, Some(now), now), Some(now + MAX_INTERVAL));
    }

    #[test]
    fn a_full_batch_is_due_at_once_and_a_partial_one_after_the_interval() {
        let policy = PushPolicy { interval: Duration::from_secs(10), max_commits: 3 };
        let then = Instant::now();
        let now = then + Duration::from_secs(1);
        assert_eq!(policy.due(0, Some(then), now), None);
        assert_eq!(policy.due(2, Some(then), now), Some(then + Duration::from_secs(10)));
        assert_eq!(policy.due(3, Some(then), now), Some(now));
    }

    #[test]
    fn a_resync_batch_waits_a_moment_unless_full_or_its_list_ended() {
        let first = Instant::now();
        let soon = first + Duration::from_millis(300);
        assert_eq!(resync_batch_hold(first, 10, 100, false, soon), Some(first + RESYNC_BATCH_WAIT));
        assert_eq!(resync_batch_hold(first, 100, 100, false, soon), None, "full");
        assert_eq!(resync_batch_hold(first, 10, 100, true, soon), None, "the sweep is queued");
        assert_eq!(
            resync_batch_hold(first, 10, 100, false, first + RESYNC_BATCH_WAIT),
            None,
            "waited enough"
        );
    }

    #[test]
    fn the_push_limit_halves_what_failed_and_recovers() {
        assert_eq!(next_push_limit(1000, 67, false, 1000), 33);
        assert_eq!(next_push_limit(20, 67, false, 1000), 10);
        assert_eq!(next_push_limit(1, 5, false, 1000), 1, "never zero");
        assert_eq!(next_push_limit(33, 33, true, 1000), 66);
        assert_eq!(next_push_limit(700, 700, true, 1000), 1000);
    }

    #[test]
    fn backoff_grows_and_caps() {
        for salt in 0..50 {
            for (failures, base) in [(0, 1.0), (3, 8.0), (20, 30.0)] {
                let wait = backoff(failures, salt).as_secs_f64();
                assert!((0.75 * base..=1.25 * base).contains(&wait), "{failures} failures: {wait} s");
            }
        }
    }

    #[test]
    fn backoff_spreads_branches_that_failed_together() {
        let waits: std::collections::BTreeSet<u128> =
            (0..20u64).map(|branch| backoff(4, branch).as_millis()).collect();
        assert!(waits.len() >= 15, "20 branches retry at only {} distinct times", waits.len());
        assert_eq!(backoff(4, 7), backoff(4, 7), "the same branch and step wait the same");
    }
}
