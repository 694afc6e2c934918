//! Lease writes with exclusivity from the API server: the one place the
//! coordinator core's [`Write`]s meet real Lease objects.
//!
//! Every write carries the core's precondition: a create is atomic (409
//! AlreadyExists when the Lease exists), and acquire, renew and release are
//! a `replace` carrying the `resourceVersion` the core saw, so the API
//! server rejects the write with 409 Conflict when anyone changed the Lease
//! in between. There is never a write without a precondition, so two
//! contenders cannot both win a race (`tests/lease_race.rs`).
//!
//! The record follows client-go's leader election: `holderIdentity`,
//! `acquireTime`, `renewTime`, `leaseDurationSeconds`, and
//! `leaseTransitions`, incremented whenever the holder changes. Whether a
//! record has expired is the core's to judge, by its own monotonic clock;
//! nothing here reads a clock but to stamp `renewTime`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

use super::core::{Action, Precondition, Write, WriteOutcome};
use super::records::{STANDBY_ANNOTATION, format_shards};

/// Writes the Leases of one namespace for one identity.
#[derive(Clone)]
pub struct LeaseClient {
    api: Api<Lease>,
    namespace: String,
    identity: String,
    duration: Duration,
    /// Written on every Lease this client creates or takes over, so one
    /// label selector finds all Leases of an installation.
    labels: std::collections::BTreeMap<String, String>,
}

impl LeaseClient {
    /// `identity` must be unique per replica (e.g. the pod name); `duration`
    /// is written as `leaseDurationSeconds`, rounded up to whole seconds.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        identity: impl Into<String>,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            identity: identity.into(),
            duration,
            labels: Default::default(),
        }
    }

    pub fn with_labels(mut self, labels: std::collections::BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Carries out one write of the coordinator core on the Lease `name`:
    /// a create (precondition "absent"), or a replace of `base` (the newest
    /// object seen, or an empty one) carrying the required
    /// `resourceVersion`. Returns the outcome, and the object written.
    pub async fn execute(
        &self,
        name: &str,
        write: &Write,
        base: Option<Lease>,
    ) -> (WriteOutcome, Option<Lease>) {
        // As stored (microseconds): an unanswered write is recognised by it.
        let now = micros(Timestamp::now());
        let result = match &write.precondition {
            Precondition::Absent => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        namespace: Some(self.namespace.clone()),
                        labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
                        ..Default::default()
                    },
                    spec: Some(acquired_spec(&LeaseSpec::default(), &self.identity, self.duration, now)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Precondition::Version(version) => {
                let mut lease = base.unwrap_or_default();
                lease.metadata.name = Some(name.to_owned());
                lease.metadata.namespace = Some(self.namespace.clone());
                lease.metadata.resource_version = Some(version.clone());
                if !self.labels.is_empty() {
                    lease.metadata.labels.get_or_insert_with(Default::default).extend(self.labels.clone());
                }
                let old = lease.spec.clone().unwrap_or_default();
                lease.spec = Some(match &write.action {
                    Action::Acquire => acquired_spec(&old, &self.identity, self.duration, now),
                    Action::Renew { standby } => {
                        if let Some(standby) = standby {
                            let annotations = lease.metadata.annotations.get_or_insert_with(Default::default);
                            if standby.is_empty() {
                                annotations.remove(STANDBY_ANNOTATION);
                            } else {
                                annotations.insert(STANDBY_ANNOTATION.to_owned(), format_shards(standby));
                            }
                        }
                        LeaseSpec {
                            holder_identity: Some(self.identity.clone()),
                            renew_time: Some(MicroTime(now)),
                            lease_duration_seconds: Some(duration_seconds(self.duration)),
                            ..old
                        }
                    }
                    Action::Release => {
                        LeaseSpec { holder_identity: None, renew_time: Some(MicroTime(now)), ..old }
                    }
                });
                self.api.replace(name, &PostParams::default(), &lease).await
            }
            #[cfg(test)]
            Precondition::Unconditional => {
                let refused = "the shell never writes without a precondition".to_owned();
                return (WriteOutcome::Failed(refused), None);
            }
        };
        match result {
            Ok(written) => {
                let resource_version = written.metadata.resource_version.clone().unwrap_or_default();
                (WriteOutcome::Written { resource_version }, Some(written))
            }
            Err(e) if is_conflict(&e) || is_already_exists(&e) || is_not_found(&e) => {
                (WriteOutcome::Conflict, None)
            }
            // The server answered: nothing was written.
            Err(e @ kube::Error::Api(_)) => (WriteOutcome::Failed(e.to_string()), None),
            // No answer: it may have been applied.
            Err(error) => {
                tracing::debug!(lease = name, %error, "a Lease write got no answer");
                (WriteOutcome::TimedOut { renew_time: now }, None)
            }
        }
    }
}

/// `at` cut to the microseconds a `MicroTime` stores.
fn micros(at: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(at.as_microsecond()).unwrap_or(at)
}

/// The spec this identity writes when acquiring the record `old` at `now`.
fn acquired_spec(old: &LeaseSpec, identity: &str, duration: Duration, now: Timestamp) -> LeaseSpec {
    let same_holder = old.holder_identity.as_deref() == Some(identity);
    let transitions = old.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        acquire_time: if same_holder { old.acquire_time.clone() } else { Some(MicroTime(now)) },
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(duration_seconds(duration)),
        lease_transitions: Some(
            if same_holder || (old.holder_identity.is_none() && old.renew_time.is_none()) {
                transitions
            } else {
                transitions.saturating_add(1)
            },
        ),
        ..old.clone()
    }
}

fn duration_seconds(duration: Duration) -> i32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i32::try_from(seconds.max(1)).unwrap_or(i32::MAX)
}

fn api_status(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.is_conflict())
}

fn is_already_exists(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.is_already_exists())
}

fn is_not_found(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.is_not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn record(holder: Option<&str>, renewed: i64, seconds: i32, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            acquire_time: Some(MicroTime(ts(renewed - 100))),
            renew_time: Some(MicroTime(ts(renewed))),
            lease_duration_seconds: Some(seconds),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    #[test]
    fn takeover_from_another_holder_counts_a_transition() {
        let spec = acquired_spec(&record(Some("a"), 1_000, 15, 4), "b", Duration::from_secs(10), ts(2_000));
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.acquire_time, Some(MicroTime(ts(2_000))));
        assert_eq!(spec.renew_time, Some(MicroTime(ts(2_000))));
        assert_eq!(spec.lease_duration_seconds, Some(10));
        assert_eq!(spec.lease_transitions, Some(5));
    }

    #[test]
    fn taking_back_an_own_record_keeps_acquire_time_and_transitions() {
        let old = record(Some("a"), 1_000, 15, 4);
        let spec = acquired_spec(&old, "a", Duration::from_secs(15), ts(1_005));
        assert_eq!(spec.acquire_time, old.acquire_time);
        assert_eq!(spec.lease_transitions, Some(4));
    }

    #[test]
    fn a_brand_new_lease_starts_at_zero_transitions_and_a_released_one_counts() {
        let fresh = acquired_spec(&LeaseSpec::default(), "a", Duration::from_secs(15), ts(1));
        assert_eq!(fresh.lease_transitions, Some(0));
        let released = record(None, 1_000, 15, 2);
        assert_eq!(
            acquired_spec(&released, "b", Duration::from_secs(15), ts(1_001)).lease_transitions,
            Some(3)
        );
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(duration_seconds(Duration::from_millis(1_500)), 2);
        assert_eq!(duration_seconds(Duration::from_secs(15)), 15);
        assert_eq!(duration_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn a_stamp_survives_the_round_trip_through_the_api_server() {
        // Nanoseconds past the microsecond would make an applied write
        // look like someone else's.
        let stamp = micros(Timestamp::from_nanosecond(1_764_000_000_123_456_789).unwrap());
        let json = serde_json::to_string(&MicroTime(stamp)).unwrap();
        assert_eq!(json, "\"2025-11-24T16:00:00.123456Z\"");
        let back: MicroTime = serde_json::from_str(&json).unwrap();
        assert_eq!(back.0, stamp);
    }
}
