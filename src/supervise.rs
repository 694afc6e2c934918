//! Supervision of the vital tasks: a replica that is half dead must not
//! keep its shards.
//!
//! A vital task that fails (a controller pass panics, the HTTP server
//! stops) or stalls (a heartbeat quiet past the stall timeout) is reported
//! here. `run` then stops the replica as it would on SIGTERM, so its shards
//! are handed over at once instead of waiting for their Leases to expire,
//! and exits non-zero, so the kubelet restarts it.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use crate::health::Liveness;

/// How often the heartbeats are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a supervised task reports through.
#[derive(Clone, Debug)]
pub struct Supervision {
    /// Notified when the controller's pass has stalled: it is called off.
    pub abandon: Arc<Notify>,
    failures: mpsc::UnboundedSender<String>,
}

impl Supervision {
    /// The handle, and the receiver `run` waits on.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (failures, received) = mpsc::unbounded_channel();
        (Self { abandon: Arc::new(Notify::new()), failures }, received)
    }

    /// A vital task failed; `cause` says which and how.
    pub fn report(&self, cause: String) {
        let _ = self.failures.send(cause);
    }
}

/// Checks the heartbeats every second; reports a stall once per episode and
/// calls off the controller's pass when it is the controller that stalled.
pub async fn watch_heartbeats(liveness: Arc<Liveness>, supervision: Supervision, controller: &'static str) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    let mut episode = StallEpisode::default();
    loop {
        tick.tick().await;
        let stalled = liveness.stalled(Instant::now());
        if let Some(verdict) = episode.observe(&stalled, controller) {
            if verdict.abandon_controller {
                supervision.abandon.notify_one();
            }
            supervision.report(liveness.describe(&stalled));
        }
    }
}

/// Whether a stall is going on, so that it is acted on once.
#[derive(Debug, Default)]
struct StallEpisode {
    ongoing: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct Act {
    abandon_controller: bool,
}

impl StallEpisode {
    /// What to do about the loops that are stalled now: act when a stall
    /// begins, not again until every loop turned again.
    fn observe(&mut self, stalled: &[(&'static str, Duration)], controller: &str) -> Option<Act> {
        let begins = !stalled.is_empty() && !self.ongoing;
        self.ongoing = !stalled.is_empty();
        begins.then(|| Act { abandon_controller: stalled.iter().any(|(name, _)| *name == controller) })
    }
}

/// A panic's message, as far as it has one.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_secs(30);

    #[test]
    fn a_stall_is_acted_on_once_per_episode() {
        let mut episode = StallEpisode::default();
        assert_eq!(episode.observe(&[], "controller"), None);
        let controller = [("controller", QUIET)];
        assert_eq!(episode.observe(&controller, "controller"), Some(Act { abandon_controller: true }));
        assert_eq!(episode.observe(&controller, "controller"), None, "still the same stall");
        assert_eq!(episode.observe(&[], "controller"), None);
        assert_eq!(episode.observe(&controller, "controller"), Some(Act { abandon_controller: true }));
    }

    #[test]
    fn another_loop_s_stall_leaves_the_controller_s_pass_alone() {
        let mut episode = StallEpisode::default();
        let coordinator = [("shard coordinator", QUIET)];
        assert_eq!(episode.observe(&coordinator, "controller"), Some(Act { abandon_controller: false }));
    }

    #[tokio::test]
    async fn a_stalled_controller_is_reported_and_its_pass_called_off() {
        let liveness = Arc::new(Liveness::stalled_since(QUIET, Duration::from_secs(5), "controller"));
        let (supervision, mut failures) = Supervision::new();
        let abandon = supervision.abandon.clone();
        let watcher = tokio::spawn(watch_heartbeats(liveness, supervision, "controller"));
        let cause = tokio::time::timeout(Duration::from_secs(10), failures.recv()).await.unwrap().unwrap();
        assert!(cause.contains("the controller has made no progress"), "{cause}");
        tokio::time::timeout(Duration::from_secs(10), abandon.notified())
            .await
            .expect("the pass is called off");
        watcher.abort();
    }

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let text: Box<dyn Any + Send> = Box::new("static");
        assert_eq!(panic_message(text.as_ref()), "static");
        let owned: Box<dyn Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_message(owned.as_ref()), "owned");
        let other: Box<dyn Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(other.as_ref()), "no message");
    }
}
