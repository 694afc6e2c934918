//! Shard Leases with exclusivity from the API server.
//!
//! Every write is a compare-and-swap: acquire, renew and release replace the
//! Lease object that was read, carrying its `resourceVersion`, so the API
//! server rejects the write with 409 Conflict when anyone changed the Lease in
//! between. Creating an absent Lease is atomic too (409 AlreadyExists). A
//! contender that gets a 409 does not hold the Lease; there is never a patch
//! without a precondition, so two contenders cannot both win a race.
//!
//! The record follows client-go's leader election: `holderIdentity`,
//! `acquireTime`, `renewTime`, `leaseDurationSeconds`, and
//! `leaseTransitions`, incremented whenever the holder changes.
//!
//! **Clock-skew assumption.** A Lease held by someone else counts as expired
//! when the record's `renewTime + leaseDurationSeconds` lies before this
//! replica's wall clock. `renewTime` was written from the holder's wall clock,
//! so this is only safe while replicas' clocks agree to well within the
//! margin between the lease duration and the holder's renew deadline (NTP
//! keeps nodes within milliseconds; the durations are seconds). The holder
//! itself never relies on wall clocks: its own deadline ([`Claim::Held`]'s
//! `expires`) is a monotonic [`Instant`] taken *before* the winning request
//! was sent, so it is never later than the expiry others compute.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

use super::core::{Action, Precondition, Write, WriteOutcome};
use super::records::{STANDBY_ANNOTATION, format_shards};

/// An API error other than the 409s that mean "someone else won".
#[derive(Debug, thiserror::Error)]
#[error("{action} Lease {namespace}/{name}: {source}")]
pub struct LeaseError {
    pub action: &'static str,
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// The outcome of an acquire or renew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This identity holds the Lease as of `resource_version`.
    Held {
        /// The version written by our last successful update; the precondition
        /// of the next renew or release.
        resource_version: String,
        /// Local monotonic time just before the winning request was sent.
        renewed_at: Instant,
        /// `renewed_at + duration`: stop all work under this Lease before it.
        expires: Instant,
    },
    /// Someone else holds a live Lease until `expires_at` (their record).
    HeldByOther { holder: String, expires_at: SystemTime },
    /// Not held by us: someone else wrote it first, or it is gone.
    Lost,
}

impl Claim {
    pub fn is_held(&self) -> bool {
        matches!(self, Claim::Held { .. })
    }
}

/// Acquires, renews and releases Leases in one namespace for one identity.
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

    /// Creates the Lease if absent (create is atomic: 409 AlreadyExists = not
    /// acquired), or takes it over if it is free (no holder) or expired
    /// (`renewTime + leaseDurationSeconds < now`), with an update carrying the
    /// read `resourceVersion`. Never takes a live Lease held by someone else.
    /// A live Lease already recorded under this identity (e.g. after a
    /// restart) is taken back without counting a transition.
    pub async fn try_acquire(&self, name: &str) -> Result<Claim, LeaseError> {
        Ok(self.try_acquire_after(name).await?.0)
    }

    /// [`Self::try_acquire`], and when it was acquired, the holder named by
    /// the version it replaced (`None`: created, or released). The replace
    /// carried that version as its precondition, so nobody else wrote the
    /// Lease in between: if the holder is this identity, no other replica
    /// has held it since this one's last write.
    pub async fn try_acquire_after(&self, name: &str) -> Result<(Claim, Option<String>), LeaseError> {
        let Some(current) = self.api.get_opt(name).await.map_err(|e| self.error("read", name, e))? else {
            return Ok((self.create(name).await?, None));
        };
        let started = Instant::now();
        let now = Timestamp::now();
        let old = current.spec.clone().unwrap_or_default();
        if let Some(claim) = self.held_by_other(&old, now) {
            return Ok((claim, None));
        }
        let previous = old.holder_identity.clone().filter(|h| !h.is_empty());
        let mut lease = current;
        lease.spec = Some(acquired_spec(&old, &self.identity, self.duration, now));
        if !self.labels.is_empty() {
            lease.metadata.labels.get_or_insert_with(Default::default).extend(self.labels.clone());
        }
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(written) => Ok((self.held(&written, started), previous)),
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok((self.observe(name).await?, None)),
            Err(e) => Err(self.error("take over", name, e)),
        }
    }

    /// Renews a Lease this identity holds: an update with the last known
    /// `resourceVersion`; a Conflict, a changed version or another holder →
    /// [`Claim::Lost`]. A claim that is not [`Claim::Held`] renews to `Lost`.
    pub async fn renew(&self, name: &str, held: &Claim) -> Result<Claim, LeaseError> {
        self.renew_annotated(name, held, None).await
    }

    /// Renews, and sets (`Some(value)`) or removes (`Some("")`) one
    /// annotation in the same compare-and-swap write.
    pub async fn renew_annotated(
        &self,
        name: &str,
        held: &Claim,
        annotation: Option<(&str, &str)>,
    ) -> Result<Claim, LeaseError> {
        let Some(mut lease) = self.read_held(name, held).await? else {
            return Ok(Claim::Lost);
        };
        if let Some((key, value)) = annotation {
            let annotations = lease.metadata.annotations.get_or_insert_with(Default::default);
            if value.is_empty() {
                annotations.remove(key);
            } else {
                annotations.insert(key.to_owned(), value.to_owned());
            }
        }
        let started = Instant::now();
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(duration_seconds(self.duration));
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(written) => Ok(self.held(&written, started)),
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(Claim::Lost),
            Err(e) => Err(self.error("renew", name, e)),
        }
    }

    /// Gives a held Lease back (`holderIdentity` cleared) with a precondition.
    /// If it was not ours any more (Conflict, changed version, another holder
    /// or deleted) nothing is written and this still returns `Ok`.
    pub async fn release(&self, name: &str, held: &Claim) -> Result<(), LeaseError> {
        let Some(mut lease) = self.read_held(name, held).await? else {
            tracing::debug!(lease = name, "release: not held any more");
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) || is_not_found(&e) => {
                tracing::debug!(lease = name, "release: not held any more");
                Ok(())
            }
            Err(e) => Err(self.error("release", name, e)),
        }
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
        let now = Timestamp::now();
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
                (WriteOutcome::TimedOut, None)
            }
        }
    }

    /// Reads the Lease and returns it with `held`'s version as precondition,
    /// or `None` when the claim is not `Held`, the Lease is gone, changed
    /// since, or names another holder.
    async fn read_held(&self, name: &str, held: &Claim) -> Result<Option<Lease>, LeaseError> {
        let Claim::Held { resource_version, .. } = held else {
            return Ok(None);
        };
        let Some(lease) = self.api.get_opt(name).await.map_err(|e| self.error("read", name, e))? else {
            return Ok(None);
        };
        let ours =
            lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str());
        if !ours || lease.metadata.resource_version.as_ref() != Some(resource_version) {
            return Ok(None);
        }
        // The read version is ours, so the replace carries it as precondition.
        Ok(Some(lease))
    }

    async fn create(&self, name: &str) -> Result<Claim, LeaseError> {
        let started = Instant::now();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.namespace.clone()),
                labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
                ..Default::default()
            },
            spec: Some(acquired_spec(&LeaseSpec::default(), &self.identity, self.duration, Timestamp::now())),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(written) => Ok(self.held(&written, started)),
            Err(e) if is_already_exists(&e) || is_conflict(&e) => self.observe(name).await,
            Err(e) => Err(self.error("create", name, e)),
        }
    }

    /// After losing a race: who holds it now, without trying again.
    async fn observe(&self, name: &str) -> Result<Claim, LeaseError> {
        let current = self.api.get_opt(name).await.map_err(|e| self.error("read", name, e))?;
        let spec = current.and_then(|l| l.spec).unwrap_or_default();
        Ok(self.held_by_other(&spec, Timestamp::now()).unwrap_or(Claim::Lost))
    }

    /// `HeldByOther` when `spec` names another identity and is live at `now`.
    fn held_by_other(&self, spec: &LeaseSpec, now: Timestamp) -> Option<Claim> {
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty() && *h != self.identity)?;
        let expires_at = expiry(spec).filter(|e| *e >= now)?;
        Some(Claim::HeldByOther { holder: holder.to_owned(), expires_at: expires_at.into() })
    }

    fn held(&self, written: &Lease, started: Instant) -> Claim {
        Claim::Held {
            resource_version: written.metadata.resource_version.clone().unwrap_or_default(),
            renewed_at: started,
            expires: started + self.duration,
        }
    }

    fn error(&self, action: &'static str, name: &str, source: kube::Error) -> LeaseError {
        LeaseError { action, namespace: self.namespace.clone(), name: name.to_owned(), source }
    }
}

/// `renewTime` (else `acquireTime`) + `leaseDurationSeconds` of the record;
/// `None` when either is missing: such a record proves no liveness.
fn expiry(spec: &LeaseSpec) -> Option<Timestamp> {
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let seconds = spec.lease_duration_seconds?;
    renewed.checked_add(SignedDuration::from_secs(i64::from(seconds))).ok()
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
    fn expiry_is_renew_time_plus_duration() {
        assert_eq!(expiry(&record(Some("a"), 1_000, 15, 0)), Some(ts(1_015)));
        let without_renew = LeaseSpec { renew_time: None, ..record(Some("a"), 1_000, 15, 0) };
        assert_eq!(expiry(&without_renew), Some(ts(915)), "falls back to acquireTime");
        let without_duration = LeaseSpec { lease_duration_seconds: None, ..record(Some("a"), 1_000, 15, 0) };
        assert_eq!(expiry(&without_duration), None);
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

    #[tokio::test]
    async fn only_a_live_record_of_another_identity_is_held_by_other() {
        // Api::namespaced needs a client; an unreachable one is never called here.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let leases =
            LeaseClient::new(kube::Client::try_from(config).unwrap(), "ns", "me", Duration::from_secs(15));
        let now = ts(1_010);
        assert!(matches!(
            leases.held_by_other(&record(Some("a"), 1_000, 15, 0), now),
            Some(Claim::HeldByOther { ref holder, .. }) if holder == "a"
        ));
        assert_eq!(leases.held_by_other(&record(Some("a"), 990, 15, 0), now), None, "expired");
        assert_eq!(leases.held_by_other(&record(None, 1_000, 15, 0), now), None, "free");
        assert_eq!(leases.held_by_other(&record(Some(""), 1_000, 15, 0), now), None, "free");
        assert_eq!(leases.held_by_other(&record(Some("me"), 1_000, 15, 0), now), None, "ours");
    }
}
