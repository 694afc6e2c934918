//! Sharding settings and the relations between them (pure).

use std::time::Duration;

use super::ownership::START_MARGIN;

/// How shards and Leases are run. The defaults give a crash failover of
/// about one lease duration (8 s) and about 16 Lease writes per second for
/// the whole installation (32 shards renewed every 2 s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSettings {
    /// Fixed per installation: every replica must use the same value.
    pub shards: u32,
    /// Namespace of the member and shard Leases.
    pub namespace: String,
    /// Lease names are `<prefix>-member-<replica>` and `<prefix>-shard-<i>`.
    pub prefix: String,
    /// This replica's identity in the Leases; unique per replica.
    pub identity: String,
    /// Others may take a Lease this long after its last renewal.
    pub lease_duration: Duration,
    /// A holder that could not renew for this long stops the shard's work.
    pub renew_deadline: Duration,
    /// How often Leases are renewed and free ones are tried.
    pub retry_period: Duration,
    /// Bound on one push; a push starts only if the shard Lease is held for
    /// longer than this.
    pub push_timeout: Duration,
}

pub const MAX_SHARDS: u32 = 1024;

/// Settings that cannot work together, with the fix in the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("--shards must be between 1 and {MAX_SHARDS}, got {0}")]
    ShardCount(u32),
    #[error(
        "--lease-duration ({duration:?}) must be longer than --renew-deadline ({deadline:?}): a holder must stop before others may take over"
    )]
    DurationNotAboveDeadline { duration: Duration, deadline: Duration },
    #[error(
        "--renew-deadline ({deadline:?}) must be longer than 1.2 × --retry-period ({retry:?}): a single slow renewal must not drop the shards"
    )]
    DeadlineNotAboveRetry { deadline: Duration, retry: Duration },
    #[error(
        "--retry-period ({retry:?}) plus {margin:?} must be shorter than --lease-duration ({duration:?}), or pushes could not start between renewals"
    )]
    LeaseTooShortForPushes { retry: Duration, margin: Duration, duration: Duration },
    #[error("--lease-prefix and --replica must be non-empty and form valid Lease names: {0}")]
    Name(String),
    #[error("durations must be positive")]
    Zero,
}

/// How long a joining replica waits before shards are assigned to it: one
/// lease duration, so that a replica killed and restarted finds the Leases
/// of its last life expired or taken, and its arrival is one membership
/// change, not a stream of them while its process starts. Shorter than
/// the gap between two restarts of a rolling update, so each restarted
/// replica takes the shards that did not move yet.
pub fn warmup(lease_duration: Duration) -> Duration {
    lease_duration
}

impl ShardSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(SettingsError::ShardCount(self.shards));
        }
        if [self.lease_duration, self.renew_deadline, self.retry_period, self.push_timeout]
            .contains(&Duration::ZERO)
        {
            return Err(SettingsError::Zero);
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(SettingsError::DurationNotAboveDeadline {
                duration: self.lease_duration,
                deadline: self.renew_deadline,
            });
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err(SettingsError::DeadlineNotAboveRetry {
                deadline: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        if self.retry_period + START_MARGIN >= self.lease_duration {
            return Err(SettingsError::LeaseTooShortForPushes {
                retry: self.retry_period,
                margin: START_MARGIN,
                duration: self.lease_duration,
            });
        }
        if self.prefix.len() > 63 {
            return Err(SettingsError::Name(format!(
                "the prefix {:?} is longer than 63 characters (it is also a label value)",
                self.prefix
            )));
        }
        for name in [self.member_lease(), self.shard_lease(self.shards - 1)] {
            if !is_dns_subdomain(&name) {
                return Err(SettingsError::Name(format!(
                    "{name:?} is not a lowercase DNS subdomain of at most 253 characters"
                )));
            }
        }
        Ok(())
    }

    pub fn member_lease(&self) -> String {
        format!("{}-member-{}", self.prefix, self.identity)
    }

    pub fn shard_lease(&self, shard: u32) -> String {
        format!("{}-shard-{shard}", self.prefix)
    }

    pub fn member_prefix(&self) -> String {
        format!("{}-member-", self.prefix)
    }

    /// The shard of a Lease name of this installation, if it is one.
    pub fn shard_of_lease(&self, name: &str) -> Option<u32> {
        let index = name.strip_prefix(&self.prefix)?.strip_prefix("-shard-")?;
        let shard: u32 = index.parse().ok()?;
        (shard < self.shards && index == shard.to_string()).then_some(shard)
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn defaults() -> ShardSettings {
        ShardSettings {
            shards: 32,
            namespace: "gitops".into(),
            prefix: "gitops-reverser".into(),
            identity: "gitops-reverser-7d9f-abcde".into(),
            lease_duration: Duration::from_secs(8),
            renew_deadline: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
            push_timeout: Duration::from_secs(4),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(defaults().validate(), Ok(()));
    }

    #[test]
    fn a_push_may_outlast_the_lease() {
        let mut long = defaults();
        long.push_timeout = Duration::from_secs(60);
        assert_eq!(long.validate(), Ok(()), "only the start of a push is fenced");
    }

    #[test]
    fn relations_are_enforced() {
        let s = |f: fn(&mut ShardSettings)| {
            let mut s = defaults();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(s(|s| s.renew_deadline = Duration::from_secs(8)).contains("--lease-duration"));
        assert!(s(|s| s.retry_period = Duration::from_millis(4200)).contains("1.2 × --retry-period"));
        assert!(
            s(|s| {
                s.lease_duration = Duration::from_secs(3);
                s.renew_deadline = Duration::from_millis(2500);
            })
            .contains("pushes could not start between renewals")
        );
        assert!(s(|s| s.shards = 0).contains("--shards"));
        assert!(s(|s| s.shards = 5000).contains("--shards"));
        assert!(s(|s| s.identity = "Pod_1".into()).contains("DNS subdomain"));
        assert!(s(|s| s.retry_period = Duration::ZERO).contains("positive"));
        // Exactly 1.2 × retry is not enough.
        let mut edge = defaults();
        edge.renew_deadline = Duration::from_millis(2400);
        assert!(edge.validate().is_err());
    }

    #[test]
    fn lease_names_round_trip() {
        let s = defaults();
        assert_eq!(s.shard_lease(7), "gitops-reverser-shard-7");
        assert_eq!(s.shard_of_lease("gitops-reverser-shard-7"), Some(7));
        assert_eq!(s.shard_of_lease("gitops-reverser-shard-07"), None);
        assert_eq!(s.shard_of_lease("gitops-reverser-shard-32"), None);
        assert_eq!(s.shard_of_lease("other-shard-1"), None);
        assert_eq!(s.member_lease(), "gitops-reverser-member-gitops-reverser-7d9f-abcde");
    }
}
