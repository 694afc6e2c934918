//! Reading the Lease records of an installation (pure): who is a live
//! member, and which shards may be taken.

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::settings::ShardSettings;

/// The state of a shard Lease as recorded by the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// No Lease, no holder, or the holder stopped renewing: may be taken.
    Free,
    /// Held by `holder` until `expires_at` (by the holder's renew time).
    Live { holder: String, expires_at: Timestamp },
}

/// `renewTime` (else `acquireTime`) + `leaseDurationSeconds`.
fn expiry(lease: &Lease) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    renewed.checked_add(SignedDuration::from_secs(i64::from(spec.lease_duration_seconds?))).ok()
}

/// The record of one Lease at wall-clock time `now`.
pub fn record(lease: Option<&Lease>, now: Timestamp) -> Record {
    let Some(lease) = lease else { return Record::Free };
    let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty());
    match (holder, expiry(lease)) {
        (Some(holder), Some(expires_at)) if expires_at >= now => Record::Live { holder, expires_at },
        _ => Record::Free,
    }
}

/// The holders of unexpired member Leases, with when each joined
/// (`acquireTime`), in the order of `leases`.
fn live_member_leases<'a>(
    settings: &ShardSettings,
    leases: impl IntoIterator<Item = &'a Lease>,
    now: Timestamp,
) -> impl Iterator<Item = (String, Option<Timestamp>)> {
    let prefix = settings.member_prefix();
    leases
        .into_iter()
        .filter(move |l| l.metadata.name.as_deref().is_some_and(|n| n.starts_with(&prefix)))
        .filter_map(move |l| match record(Some(l), now) {
            Record::Live { holder, .. } => {
                Some((holder, l.spec.as_ref().and_then(|s| s.acquire_time.as_ref()).map(|t| t.0)))
            }
            Record::Free => None,
        })
}

/// The members the shards are assigned among: the live members that joined
/// at least `warmup` ago (by their member Lease's `acquireTime`), or every
/// live member if none did (a fresh installation). A replica that rejoins
/// gets shards only once the handovers its leaving started are over: were
/// it counted at once, a shard on its way to another replica would turn
/// back mid-handover, and the standby that took its changes in would stop
/// before it could write them. This replica counts only if `joined` (when
/// it did), whatever the store says.
pub fn assignment_members<'a>(
    settings: &ShardSettings,
    leases: impl IntoIterator<Item = &'a Lease>,
    now: Timestamp,
    warmup: std::time::Duration,
    joined: Option<Timestamp>,
) -> Vec<String> {
    let mut live: Vec<(String, Option<Timestamp>)> = live_member_leases(settings, leases, now)
        .filter(|(holder, _)| holder != &settings.identity)
        .collect();
    live.extend(joined.map(|at| (settings.identity.clone(), Some(at))));
    let warmup = SignedDuration::try_from(warmup).unwrap_or(SignedDuration::MAX);
    let settled = |since: &Option<Timestamp>| {
        since.is_some_and(|t| t.saturating_add(warmup).is_ok_and(|end| end <= now))
    };
    let any_settled = live.iter().any(|(_, since)| settled(since));
    let mut members: Vec<String> =
        live.into_iter().filter(|(_, since)| !any_settled || settled(since)).map(|(m, _)| m).collect();
    members.sort();
    members.dedup();
    members
}

/// Annotation on a member Lease: the shards whose changes that replica
/// already routes to standby workers ("3,17"). The current owner stops
/// writing a shard it hands over once someone announced it.
pub const STANDBY_ANNOTATION: &str = "configbutler.ai/standby";

/// Formats a set of shards for [`STANDBY_ANNOTATION`].
pub fn format_shards(shards: &BTreeSet<u32>) -> String {
    shards.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The shards of a [`STANDBY_ANNOTATION`] value; what does not parse is
/// left out.
pub fn parse_shards(value: &str) -> BTreeSet<u32> {
    value.split(',').filter_map(|s| s.trim().parse::<u32>().ok()).collect()
}

/// The shards that live members other than `me` announced a standby for.
pub fn standby_announced<'a>(
    settings: &ShardSettings,
    leases: impl IntoIterator<Item = &'a Lease>,
    now: Timestamp,
    me: &str,
) -> BTreeSet<u32> {
    let prefix = settings.member_prefix();
    leases
        .into_iter()
        .filter(|l| l.metadata.name.as_deref().is_some_and(|n| n.starts_with(&prefix)))
        .filter(|l| matches!(record(Some(l), now), Record::Live { ref holder, .. } if holder != me))
        .filter_map(|l| l.metadata.annotations.as_ref()?.get(STANDBY_ANNOTATION))
        .flat_map(|value| parse_shards(value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    fn lease(name: &str, holder: Option<&str>, renewed: Timestamp, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(seconds),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn records_expire_by_the_holder_renew_time() {
        let now = Timestamp::now();
        let fresh = lease("p-shard-1", Some("a"), now - SignedDuration::from_secs(3), 8);
        let stale = lease("p-shard-1", Some("a"), now - SignedDuration::from_secs(9), 8);
        let released = lease("p-shard-1", None, now, 8);
        assert!(matches!(record(Some(&fresh), now), Record::Live { ref holder, .. } if holder == "a"));
        assert_eq!(record(Some(&stale), now), Record::Free);
        assert_eq!(record(Some(&released), now), Record::Free);
        assert_eq!(record(None, now), Record::Free);
    }

    #[test]
    fn members_are_the_live_member_leases() {
        let settings = crate::shard::settings::tests_support::settings("p", "a");
        let now = Timestamp::now();
        let leases = [
            lease("p-member-b", Some("b"), now, 8),
            lease("p-member-a", Some("a"), now, 8),
            lease("p-member-c", Some("c"), now - SignedDuration::from_secs(60), 8),
            lease("p-member-d", None, now, 8),
            lease("p-shard-0", Some("e"), now, 8),
            lease("q-member-f", Some("f"), now, 8),
        ];
        let mut live: Vec<String> = live_member_leases(&settings, &leases, now).map(|(m, _)| m).collect();
        live.sort();
        assert_eq!(live, ["a", "b"]);
    }

    #[test]
    fn members_that_joined_within_the_warmup_get_no_shards_unless_all_did() {
        let settings = crate::shard::settings::tests_support::settings("p", "a");
        let now = Timestamp::now();
        let joined = |name: &str, holder: &str, ago: i64| {
            let mut l = lease(name, Some(holder), now, 8);
            l.spec.as_mut().unwrap().acquire_time = Some(MicroTime(now - SignedDuration::from_secs(ago)));
            l
        };
        let warmup = std::time::Duration::from_secs(15);
        let leases = [joined("p-member-b", "b", 60), joined("p-member-c", "c", 5)];
        let members = |me| assignment_members(&settings, &leases, now, warmup, me);
        assert_eq!(members(Some(now - SignedDuration::from_secs(100))), ["a", "b"], "c is warming up");
        assert_eq!(members(Some(now)), ["b"], "so is this replica");
        assert_eq!(members(None), ["b"], "a leaving replica counts nowhere");
        let fresh = [joined("p-member-b", "b", 1), joined("p-member-c", "c", 5)];
        assert_eq!(
            assignment_members(&settings, &fresh, now, warmup, Some(now)),
            ["a", "b", "c"],
            "a fresh installation: everyone at once"
        );
    }

    #[test]
    fn standby_is_read_from_live_members_other_than_this_one() {
        let settings = crate::shard::settings::tests_support::settings("p", "a");
        let now = Timestamp::now();
        let annotated = |name: &str, holder: &str, renewed: Timestamp, value: &str| {
            let mut l = lease(name, Some(holder), renewed, 8);
            l.metadata.annotations = Some([(STANDBY_ANNOTATION.to_owned(), value.to_owned())].into());
            l
        };
        let leases = [
            annotated("p-member-b", "b", now, "3,17"),
            annotated("p-member-a", "a", now, "5"),
            annotated("p-member-c", "c", now - SignedDuration::from_secs(60), "9"),
            annotated("p-member-d", "d", now, "x,4"),
            annotated("p-shard-1", "e", now, "11"),
        ];
        assert_eq!(standby_announced(&settings, &leases, now, "a"), BTreeSet::from([3, 4, 17]));
        assert_eq!(format_shards(&BTreeSet::from([17, 3])), "3,17");
    }
}
