//! Condition helpers (pure): set a condition keeping its transition time
//! when the status did not change, as `meta.SetStatusCondition` does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{ConditionType, Reason};

/// A condition to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: ConditionType,
    pub status: Status,
    pub reason: Reason,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// Builds the condition list from `desired`, in the given order, reusing
/// the previous transition time where the status is unchanged.
pub fn build(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let type_ = d.type_.as_str();
            let status = d.status.as_str();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: d.reason.as_str().to_owned(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether two condition lists say the same thing (times aside).
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    same_states(a, b) && a.iter().zip(b).all(|(x, y)| x.message == y.message)
}

/// Whether two condition lists have the same types, statuses, reasons and
/// generations: messages aside, which may carry counters ("3 events
/// queued") that change with every push.
pub fn same_states(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.observed_generation == y.observed_generation
        })
}

/// The status of a condition type, if present.
pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let ready = |status, message: &str| Desired {
            type_: ConditionType::Ready,
            status,
            reason: Reason::Ready,
            message: message.into(),
        };
        let first = build(&[], &[ready(Status::True, "a")], Some(1), &time(100));
        let same_status = build(&first, &[ready(Status::True, "b")], Some(2), &time(200));
        assert_eq!(same_status[0].last_transition_time, time(100));
        assert!(!same(&first, &same_status));
        let flipped = build(&same_status, &[ready(Status::False, "b")], Some(2), &time(300));
        assert_eq!(flipped[0].last_transition_time, time(300));
    }
}
