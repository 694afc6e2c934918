//! Write-access checks in the background: ls-remote plus a dry-run push that
//! reaches receive-pack, for each resolved target, repeated periodically and
//! soon after a failure. The controller never waits on the network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, Semaphore, mpsc};

use super::targets::TargetState;
use crate::route::TargetKey;
use crate::status::target::Access;
use crate::worker::remote::Remote;

/// Retry a failed check this soon.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// Checks that run at once: each is a git process and a connection, and a
/// tenant with thousands of targets must not fork thousands of them.
const CONCURRENT_CHECKS: usize = 8;

type Outcome = (TargetKey, u64, Access);

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
                let result = match Remote::new(&resolved.provider.url, resolved.credentials.clone()) {
                    Ok(remote) => remote.verify_write_access(&resolved.branch).await,
                    Err(error) => Err(error),
                };
                let access = match result {
                    Ok(()) => Access::Verified { at: SystemTime::now() },
                    Err(error) => Access::Failed {
                        at: SystemTime::now(),
                        reason: error.reason(),
                        message: error.to_string(),
                    },
                };
                let _ = sender.send((key, seq, access));
                changed.notify_one();
            });
        }
    }

    /// Applies finished checks; results for outdated inputs are dropped.
    pub fn collect(&mut self, targets: &mut HashMap<TargetKey, TargetState>) {
        while let Ok((key, seq, access)) = self.results.try_recv() {
            let Some(state) = targets.get_mut(&key) else { continue };
            if state.check_seq != seq {
                continue;
            }
            state.checking = false;
            match &access {
                Access::Failed { reason, message, .. } => {
                    tracing::warn!(git_target = %key, ?reason, %message, "write access check failed; retrying soon");
                    state.next_check = Some(Instant::now() + RETRY_AFTER_FAILURE);
                }
                Access::Verified { .. } => state.verified_once = true,
                Access::Checking => {}
            }
            state.access = access;
        }
    }
}
