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

/// Exponential backoff between failed pushes: 1 s doubling to 30 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
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
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }
}
