//! Whether the process still does its work, for `/healthz`.
//!
//! A vital task that ends takes the process down (`run`), but one that
//! hangs (a deadlock, a loop that never yields, an await that never
//! returns) would leave it up with green probes. Each vital loop beats a
//! [`Heartbeat`] every time it turns; `/healthz` fails once one has not
//! beaten for the stall timeout, so the kubelet restarts the pod. The
//! loops turn at least every few seconds even while the API server is
//! down (their calls time out), so an outage alone never trips it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The last time one vital loop turned.
#[derive(Debug)]
pub struct Heartbeat {
    name: &'static str,
    origin: Instant,
    /// Milliseconds from `origin`.
    last: AtomicU64,
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last.store(millis(self.origin.elapsed()), Ordering::Relaxed);
    }

    fn since_last(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// Every vital loop's heartbeat, and how long one may go quiet.
#[derive(Clone, Debug)]
pub struct Liveness {
    origin: Instant,
    beats: Vec<Arc<Heartbeat>>,
    /// `None`: never judged stalled.
    stall_after: Option<Duration>,
}

impl Liveness {
    /// `stall_after` zero switches the check off.
    pub fn new(stall_after: Duration) -> Self {
        Self {
            origin: Instant::now(),
            beats: Vec::new(),
            stall_after: (!stall_after.is_zero()).then_some(stall_after),
        }
    }

    /// A heartbeat for the loop `name`, counted as beaten now.
    pub fn register(&mut self, name: &'static str) -> Arc<Heartbeat> {
        let beat = self.register_silent(name);
        beat.beat();
        beat
    }

    /// A heartbeat last beaten when this `Liveness` was made.
    fn register_silent(&mut self, name: &'static str) -> Arc<Heartbeat> {
        let beat = Arc::new(Heartbeat { name, origin: self.origin, last: AtomicU64::new(0) });
        self.beats.push(beat.clone());
        beat
    }

    /// A `Liveness` made `ago`, whose loop `name` has not beaten since.
    #[cfg(test)]
    pub(crate) fn stalled_since(ago: Duration, stall_after: Duration, name: &'static str) -> Self {
        let origin = Instant::now().checked_sub(ago).expect("the machine has been up that long");
        let mut liveness = Self { origin, beats: Vec::new(), stall_after: Some(stall_after) };
        liveness.register_silent(name);
        liveness
    }

    /// `Err` names every loop that has been quiet past the limit.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let Some(limit) = self.stall_after else { return Ok(()) };
        verdict(self.beats.iter().map(|b| (b.name, b.since_last(now))), limit)
    }

    /// Every loop quiet past the limit, with how long it has been quiet.
    pub fn stalled(&self, now: Instant) -> Vec<(&'static str, Duration)> {
        let Some(limit) = self.stall_after else { return Vec::new() };
        self.beats.iter().map(|b| (b.name, b.since_last(now))).filter(|(_, quiet)| *quiet > limit).collect()
    }

    /// What [`Liveness::check`] says of these stalled loops.
    pub fn describe(&self, stalled: &[(&'static str, Duration)]) -> String {
        let limit = self.stall_after.unwrap_or_default();
        verdict(stalled.iter().copied(), limit).err().unwrap_or_default()
    }
}

/// The pure judgement: every (loop, time since it last turned) within `limit`.
pub fn verdict<'a>(
    quiet: impl IntoIterator<Item = (&'a str, Duration)>,
    limit: Duration,
) -> Result<(), String> {
    let stalled: Vec<String> = quiet
        .into_iter()
        .filter(|(_, quiet)| *quiet > limit)
        .map(|(name, quiet)| format!("the {name} has made no progress for {} s", quiet.as_secs()))
        .collect();
    if stalled.is_empty() {
        Ok(())
    } else {
        Err(format!("{} (limit {} s)", stalled.join("; "), limit.as_secs()))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(600);

    #[test]
    fn loops_within_the_limit_are_healthy() {
        let quiet = [("controller", Duration::from_secs(1)), ("shard coordinator", LIMIT)];
        assert_eq!(verdict(quiet, LIMIT), Ok(()));
    }

    #[test]
    fn every_stalled_loop_is_named() {
        let quiet = [
            ("controller", Duration::from_secs(601)),
            ("shard coordinator", Duration::from_secs(2)),
            ("watch manager", Duration::from_secs(900)),
        ];
        assert_eq!(
            verdict(quiet, LIMIT),
            Err("the controller has made no progress for 601 s; the watch manager has made no progress for 900 s \
                 (limit 600 s)"
                .to_owned())
        );
    }

    #[test]
    fn a_heartbeat_counts_from_its_last_beat() {
        let mut liveness = Liveness::new(Duration::from_secs(5));
        let beat = liveness.register("controller");
        let start = Instant::now();
        assert_eq!(liveness.check(start), Ok(()));
        let later = start + Duration::from_secs(60);
        assert!(liveness.check(later).unwrap_err().contains("the controller has made no progress"));
        beat.beat();
        assert_eq!(liveness.check(Instant::now() + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn a_zero_limit_switches_the_check_off() {
        let mut liveness = Liveness::new(Duration::ZERO);
        liveness.register("controller");
        assert_eq!(liveness.check(Instant::now() + Duration::from_secs(86_400)), Ok(()));
    }
}
