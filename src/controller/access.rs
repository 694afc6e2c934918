//! Write-access checks in the background: ls-remote plus a dry-run push that
//! reaches receive-pack, for each resolved target, repeated periodically and
//! soon after a failure. The controller never waits on the network.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use tokio::sync::{Notify, Semaphore, mpsc};

use super::targets::TargetState;
use crate::api::Reason;
use crate::route::TargetKey;
use crate::status::target::Access;
use crate::worker::remote::Remote;

/// Retry a failed check this soon.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// The longest wait after checks that panicked in a row.
const MAX_PANIC_BACKOFF: Duration = Duration::from_secs(300);
/// Checks that run at once: each is a git process and a connection, and a
/// tenant with thousands of targets must not fork thousands of them.
const CONCURRENT_CHECKS: usize = 8;

/// A finished check: its target, its inputs' sequence number, the result,
/// and whether it panicked.
type Outcome = (TargetKey, u64, Access, bool);

pub struct AccessChecks {
    results: mpsc::UnboundedReceiver<Outcome>,
    sender: mpsc::UnboundedSender<Outcome>,
    changed: Arc<Notify>,
    running: Arc<Semaphore>,
}

impl AccessChecks {
    pub fn new(changed: Arc<Notify>) -> Self {
        let (sender, results) = mpsc::unbounded_channel();
        Self { results, sender, changed, running: Arc::new(Semaphore::new(CONCURRENT_CHECKS)) }
    }

    /// Starts a check for every resolved target that is due.
    pub fn schedule(&self, targets: &mut HashMap<TargetKey, TargetState>, interval: Duration) {
        let now = Instant::now();
        for (key, state) in targets.iter_mut() {
            if state.checking || state.next_check.is_some_and(|at| at > now) {
                continue;
            }
            let Some(resolved) = state.resolved().cloned() else { continue };
            state.checking = true;
            state.next_check = Some(now + interval);
            let (key, seq, sender, changed) =
                (key.clone(), state.check_seq, self.sender.clone(), self.changed.clone());
            let running = self.running.clone();
            tokio::spawn(async move {
                let Ok(_slot) = running.acquire_owned().await else { return };
                let (access, panicked) = answered(check(&resolved), &key).await;
                let _ = sender.send((key, seq, access, panicked));
                changed.notify_one();
            });
        }
    }

    /// Applies finished checks; results for outdated inputs are dropped.
    pub fn collect(&mut self, targets: &mut HashMap<TargetKey, TargetState>) {
        while let Ok((key, seq, access, panicked)) = self.results.try_recv() {
            let Some(state) = targets.get_mut(&key) else { continue };
            if state.check_seq != seq {
                continue;
            }
            state.checking = false;
            state.check_panics = if panicked { state.check_panics.saturating_add(1) } else { 0 };
            match &access {
                Access::Failed { reason, message, .. } => {
                    tracing::warn!(git_target = %key, ?reason, %message, "write access check failed; retrying soon");
                    state.next_check = Some(Instant::now() + retry_after(state.check_panics));
                }
                Access::Verified { .. } => state.verified_once = true,
                Access::Checking => {}
            }
            state.access = access;
        }
    }
}

/// One check: ls-remote and a dry-run push.
async fn check(resolved: &super::targets::Resolved) -> Access {
    let result = match Remote::new(&resolved.provider.url, resolved.credentials.clone()) {
        Ok(remote) => remote.verify_write_access(&resolved.branch).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => Access::Verified { at: SystemTime::now() },
        Err(error) => {
            Access::Failed { at: SystemTime::now(), reason: error.reason(), message: error.to_string() }
        }
    }
}

/// The check's result, or a failure if it panicked (then `true`): a check
/// that panics still answers, or its target would stay `checking` and never
/// be checked again.
async fn answered(check: impl Future<Output = Access>, key: &TargetKey) -> (Access, bool) {
    match AssertUnwindSafe(check).catch_unwind().await {
        Ok(access) => (access, false),
        Err(panic) => {
            let cause = crate::supervise::panic_message(panic.as_ref());
            tracing::error!(git_target = %key, %cause, "the write access check panicked");
            let access = Access::Failed {
                at: SystemTime::now(),
                reason: Reason::GitOperationFailed,
                message: format!("the write access check failed unexpectedly ({cause}); it is retried"),
            };
            (access, true)
        }
    }
}

/// How long after a failed check the next one runs: soon after an ordinary
/// failure, and doubling with every panic in a row.
fn retry_after(panics_in_a_row: u32) -> Duration {
    match panics_in_a_row {
        0 => RETRY_AFTER_FAILURE,
        n => RETRY_AFTER_FAILURE.saturating_mul(1 << (n - 1).min(16)).min(MAX_PANIC_BACKOFF),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_that_panics_answers_with_a_failure() {
        let key = TargetKey::new("ns", "t");
        let (access, panicked) = answered(async { panic!("index out of bounds") }, &key).await;
        assert!(panicked);
        match access {
            Access::Failed { reason, message, .. } => {
                assert_eq!(reason, Reason::GitOperationFailed);
                assert!(message.contains("failed unexpectedly (index out of bounds)"), "{message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        let (access, panicked) = answered(async { Access::Checking }, &key).await;
        assert!(!panicked && matches!(access, Access::Checking));
    }

    #[test]
    fn checks_that_panic_back_off_up_to_a_limit() {
        assert_eq!(retry_after(0), RETRY_AFTER_FAILURE);
        assert_eq!(retry_after(1), RETRY_AFTER_FAILURE);
        assert_eq!(retry_after(2), RETRY_AFTER_FAILURE * 2);
        assert_eq!(retry_after(3), RETRY_AFTER_FAILURE * 4);
        assert_eq!(retry_after(40), MAX_PANIC_BACKOFF);
        assert_eq!(retry_after(u32::MAX), MAX_PANIC_BACKOFF);
    }
}
