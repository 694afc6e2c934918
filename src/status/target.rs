//! The desired status of a GitTarget (pure), from what the controller and
//! the branch worker observed. Ready aggregates as the API spec says: True
//! only when Available is True and Active is True or Unknown.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Problem;
use super::conditions::{Desired, Status, build};
use crate::api::{ConditionType, GitStatus, GitTargetStatus, PushResult, Reason, WorkerStatus};

use crate::worker::branch::WorkerState;

/// The result of the last write-access check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Not checked yet.
    Checking,
    Verified {
        at: SystemTime,
    },
    Failed {
        at: SystemTime,
        reason: Reason,
        message: String,
    },
}

/// Everything the status is computed from.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub generation: Option<i64>,
    /// A configuration problem; when set, nothing else is attempted.
    pub problem: Option<&'a Problem>,
    pub access: &'a Access,
    /// None while no worker runs for the target.
    pub worker: Option<&'a WorkerState>,
    /// Secrets selected but not written.
    pub withheld_secrets: usize,
    /// Selected objects that do not sanitize ("Kind namespace/name"), with why.
    pub unsanitizable: &'a BTreeMap<String, String>,
    /// Its changes overflowed and are dropped until it is resynced.
    pub backlogged: bool,
    /// Why its provider's push settings do not apply to its shared branch.
    pub settings_overridden: Option<&'a str>,
    /// `spec.suspend`: nothing is committed or pushed.
    pub suspended: bool,
    pub url: &'a str,
    pub branch: &'a str,
    /// (replica, shard) running the worker.
    pub owner: Option<(&'a str, u32)>,
}

pub fn to_time(at: SystemTime) -> Time {
    let ts = k8s_openapi::jiff::Timestamp::try_from(at).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    Time(ts)
}

/// The newest word on write access: the checker's or the worker's.
fn availability(obs: &Observation) -> (Status, Reason, String) {
    let worker_error: Option<(SystemTime, Reason, String)> = obs.worker.and_then(|w| {
        let (reason, message) = w.error.as_ref()?;
        Some((w.last_checked?, *reason, message.clone()))
    });
    let worker_ok =
        obs.worker.and_then(|w| if w.error.is_none() && w.active { w.last_checked } else { None });
    type Word = (SystemTime, Status, Reason, String);
    fn consider(newest: &mut Option<Word>, word: Word) {
        if newest.as_ref().is_none_or(|(t, ..)| word.0 >= *t) {
            *newest = Some(word);
        }
    }
    let mut newest: Option<Word> = match obs.access {
        Access::Checking => None,
        Access::Verified { at } => {
            Some((*at, Status::True, Reason::Available, format!("write access to {} verified", obs.url)))
        }
        Access::Failed { at, reason, message } => Some((*at, Status::False, *reason, message.clone())),
    };
    if let Some((at, reason, message)) = worker_error.clone() {
        consider(&mut newest, (at, Status::False, reason, message));
    }
    if let Some(at) = worker_ok
        && newest.as_ref().is_some_and(|n| n.1 == Status::False)
    {
        consider(
            &mut newest,
            (at, Status::True, Reason::Available, format!("{} is reachable and accepts pushes", obs.url)),
        );
    }
    // Proven write access does not clear it: the branch's content is the
    // problem, and it stays until the worker fetches the branch again.
    if let Some((_, Reason::RemoteTooLarge, message)) = &worker_error
        && newest.as_ref().is_none_or(|n| n.1 == Status::True)
    {
        return (Status::False, Reason::RemoteTooLarge, message.clone());
    }
    match newest {
        Some((_, status, reason, message)) => (status, reason, message),
        None => (Status::Unknown, Reason::Checking, "checking write access to the repository".into()),
    }
}

/// What a suspended target's conditions say.
const SUSPENDED: &str =
    "suspended (spec.suspend): nothing is committed or pushed; when resumed, one sync commit catches up";

/// The status a GitTarget should have.
pub fn desired(previous: Option<&GitTargetStatus>, obs: &Observation, now: SystemTime) -> GitTargetStatus {
    let now_time = to_time(now);
    let mut conditions = Vec::with_capacity(4);
    let (available, available_reason, available_message) = match obs.problem {
        Some(_) => (Status::Unknown, Reason::Checking, "waiting for a valid configuration".into()),
        None => availability(obs),
    };
    let (active, active_reason, active_message) = match (obs.problem, obs.worker) {
        (Some(_), _) => (Status::False, Reason::WorkerNotStarted, "the configuration is invalid".to_owned()),
        (None, _) if obs.suspended => (Status::False, Reason::WorkerStopped, SUSPENDED.to_owned()),
        (None, None) => {
            (Status::False, Reason::WorkerNotStarted, "the branch worker has not started".to_owned())
        }
        (None, Some(w)) if !w.active => {
            (Status::False, Reason::WorkerNotStarted, "the branch worker is fetching the branch".to_owned())
        }
        (None, Some(w)) if w.queued + w.unpushed > 0 => {
            (Status::True, Reason::Active, format!("processing {} queued events", w.queued))
        }
        (None, Some(_)) => (Status::True, Reason::Idle, "waiting for changes".to_owned()),
    };
    let (synced, synced_reason, synced_message) = match obs
        .worker
        .filter(|w| w.active && obs.problem.is_none())
    {
        None if obs.suspended => (Status::Unknown, Reason::SyncInProgress, SUSPENDED.to_owned()),
        None => (Status::Unknown, Reason::SyncInProgress, "not synchronising yet".to_owned()),
        Some(_) if obs.backlogged => (
            Status::False,
            Reason::Backlogged,
            format!(
                "more than {} changes waited for this branch's worker: they are dropped, and the target is resynced \
                 from the cluster once the worker has caught up",
                crate::watch::PARK_LIMIT
            ),
        ),
        Some(w) if w.local_error.is_some() => (
            Status::False,
            Reason::SyncFailed,
            format!(
                "cannot commit to the local repository: {}; the change is kept and retried",
                w.local_error.as_deref().unwrap_or_default()
            ),
        ),
        Some(w) if w.quarantined.is_some() => (
            Status::False,
            Reason::PushRejected,
            format!(
                "the server refuses every push: {}; {} commits wait and are retried with back-off",
                w.quarantined.as_deref().unwrap_or_default(),
                w.unpushed
            ),
        ),
        Some(w) if w.capped => (
            Status::False,
            Reason::EventsQueued,
            format!(
                "{} commits wait for a push, the most a branch keeps: further changes to an object are merged until pushes go through",
                w.unpushed
            ),
        ),
        Some(w) if w.unpushed > 0 && w.last_push_failed => {
            let why = w.error.as_ref().map_or("the last push failed".to_owned(), |(_, m)| m.clone());
            (Status::False, Reason::SyncFailed, format!("{} commits wait for a push: {why}", w.unpushed))
        }
        Some(_) if !obs.unsanitizable.is_empty() => {
            (Status::False, Reason::SyncFailed, unsanitizable_message(obs.unsanitizable))
        }
        Some(w) if w.queued + w.unpushed > 0 => (
            Status::False,
            Reason::EventsQueued,
            format!("{} events queued, {} commits waiting to be pushed", w.queued, w.unpushed),
        ),
        Some(w) => (
            Status::True,
            Reason::Synced,
            match &w.remote_tip {
                Some(sha) => format!("all changes are pushed; {} is at {}", obs.branch, short(sha)),
                None => "nothing to push yet".to_owned(),
            },
        ),
    };
    let (ready, ready_reason, ready_message) = match obs.problem {
        Some(problem) => (Status::False, problem.reason, problem.message.clone()),
        None if obs.suspended => (Status::False, Reason::Suspended, SUSPENDED.to_owned()),
        None if available == Status::True && active != Status::False => {
            let mut message = "GitTarget is operational".to_owned();
            if let Some(why) = obs.settings_overridden {
                message.push_str(&format!("; {why}"));
            }
            if obs.withheld_secrets > 0 {
                message.push_str(&format!(
                    "; {} Secrets were not written because no encryption is configured",
                    obs.withheld_secrets
                ));
            }
            (Status::True, Reason::Ready, message)
        }
        None if available == Status::False => (Status::False, available_reason, available_message.clone()),
        None => (Status::False, Reason::Validating, "waiting for checks to complete".to_owned()),
    };
    conditions.push(Desired {
        type_: ConditionType::Ready,
        status: ready,
        reason: ready_reason,
        message: ready_message,
    });
    conditions.push(Desired {
        type_: ConditionType::Available,
        status: available,
        reason: available_reason,
        message: available_message,
    });
    conditions.push(Desired {
        type_: ConditionType::Active,
        status: active,
        reason: active_reason,
        message: active_message,
    });
    conditions.push(Desired {
        type_: ConditionType::Synced,
        status: synced,
        reason: synced_reason,
        message: synced_message,
    });

    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let git_status = (available == Status::True).then(|| {
        let worker = obs.worker;
        GitStatus {
            branch_exists: worker.is_some_and(|w| w.branch_exists),
            last_commit_sha: worker.and_then(|w| w.remote_tip.clone()),
            last_checked: to_time(worker.and_then(|w| w.last_checked).unwrap_or(now)),
        }
    });
    let worker_status = obs.worker.map(|w| WorkerStatus {
        active: w.active,
        queued_events: Some((w.queued + w.unpushed) as i64),
        last_push_time: w.last_push.map(to_time),
        last_push_status: if w.unpushed > 0 && !w.last_push_failed {
            Some(PushResult::Pending)
        } else if w.last_push.is_some() || w.last_push_failed {
            Some(if w.last_push_failed { PushResult::Failed } else { PushResult::Success })
        } else {
            None
        },
        replica: obs.owner.map(|(replica, _)| replica.to_owned()),
        shard: obs.owner.map(|(_, shard)| shard),
    });
    GitTargetStatus {
        conditions: build(previous_conditions, &conditions, obs.generation, &now_time),
        observed_generation: obs.generation,
        git_status,
        worker_status,
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

#[cfg(test)]
mod tests;

/// Names the first few objects that cannot be written, and why.
fn unsanitizable_message(objects: &BTreeMap<String, String>) -> String {
    const SHOWN: usize = 3;
    let mut message = format!(
        "{} selected objects cannot be written; their files keep the last version written: ",
        objects.len()
    );
    let shown: Vec<String> =
        objects.iter().take(SHOWN).map(|(object, why)| format!("{object}: {why}")).collect();
    message.push_str(&shown.join("; "));
    if objects.len() > SHOWN {
        message.push_str(&format!("; and {} more", objects.len() - SHOWN));
    }
    message
}
