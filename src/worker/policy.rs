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
                .unwrap_or(default.interval),
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
        oldest.map(|at| at + self.interval)
    }
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
