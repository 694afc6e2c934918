//! Condition types and reasons, exactly the vocabulary of the API spec.
//! Types use positive polarity so that kstatus and Flux tooling read them.

use std::fmt;

/// The four condition types a GitTarget reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// Summary: configured and operational. Check this first.
    Ready,
    /// The repository is reachable and writable with the given credentials.
    Available,
    /// The branch worker is running and processing events.
    Active,
    /// Every event has been pushed to git.
    Synced,
}

impl ConditionType {
    pub const ALL: [ConditionType; 4] = [Self::Ready, Self::Available, Self::Active, Self::Synced];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Available => "Available",
            Self::Active => "Active",
            Self::Synced => "Synced",
        }
    }
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every condition reason of the spec, grouped by the condition it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    // Ready
    Ready,
    Validating,
    BranchNotAllowed,
    InvalidConfiguration,
    /// A rule's ServiceAccount may not read some of what it selects.
    AccessDenied,
    /// `spec.suspend` is true.
    Suspended,
    // Available
    Available,
    AuthenticationFailed,
    RepositoryNotFound,
    NetworkError,
    GitOperationFailed,
    /// Not in the spec's list: the remote branch is past one of the
    /// operator's size limits (`--max-fetch-size` and friends).
    RemoteTooLarge,
    Checking,
    // Active
    Active,
    Idle,
    WorkerNotStarted,
    WorkerStopped,
    // Synced
    Synced,
    SyncInProgress,
    SyncFailed,
    EventsQueued,
    /// More changes waited than the watch keeps: dropped, then resynced.
    Backlogged,
    /// Not in the spec's list: the server refuses every push (a hook, a
    /// protected branch), so the branch is quarantined until it accepts.
    PushRejected,
}

impl Reason {
    pub const ALL: [Reason; 23] = [
        Self::Ready,
        Self::Validating,
        Self::BranchNotAllowed,
        Self::InvalidConfiguration,
        Self::AccessDenied,
        Self::Suspended,
        Self::Available,
        Self::AuthenticationFailed,
        Self::RepositoryNotFound,
        Self::NetworkError,
        Self::GitOperationFailed,
        Self::RemoteTooLarge,
        Self::Checking,
        Self::Active,
        Self::Idle,
        Self::WorkerNotStarted,
        Self::WorkerStopped,
        Self::Synced,
        Self::SyncInProgress,
        Self::SyncFailed,
        Self::EventsQueued,
        Self::Backlogged,
        Self::PushRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Validating => "Validating",
            Self::BranchNotAllowed => "BranchNotAllowed",
            Self::InvalidConfiguration => "InvalidConfiguration",
            Self::AccessDenied => "AccessDenied",
            Self::Suspended => "Suspended",
            Self::Available => "Available",
            Self::AuthenticationFailed => "AuthenticationFailed",
            Self::RepositoryNotFound => "RepositoryNotFound",
            Self::NetworkError => "NetworkError",
            Self::GitOperationFailed => "GitOperationFailed",
            Self::RemoteTooLarge => "RemoteTooLarge",
            Self::Checking => "Checking",
            Self::Active => "Active",
            Self::Idle => "Idle",
            Self::WorkerNotStarted => "WorkerNotStarted",
            Self::WorkerStopped => "WorkerStopped",
            Self::Synced => "Synced",
            Self::SyncInProgress => "SyncInProgress",
            Self::SyncFailed => "SyncFailed",
            Self::EventsQueued => "EventsQueued",
            Self::Backlogged => "Backlogged",
            Self::PushRejected => "PushRejected",
        }
    }

    /// The condition type this reason is defined for.
    pub fn condition(self) -> ConditionType {
        match self {
            Self::Ready
            | Self::Validating
            | Self::BranchNotAllowed
            | Self::InvalidConfiguration
            | Self::AccessDenied
            | Self::Suspended => ConditionType::Ready,
            Self::Available
            | Self::AuthenticationFailed
            | Self::RepositoryNotFound
            | Self::NetworkError
            | Self::GitOperationFailed
            | Self::RemoteTooLarge
            | Self::Checking => ConditionType::Available,
            Self::Active | Self::Idle | Self::WorkerNotStarted | Self::WorkerStopped => ConditionType::Active,
            Self::Synced
            | Self::SyncInProgress
            | Self::SyncFailed
            | Self::EventsQueued
            | Self::Backlogged
            | Self::PushRejected => ConditionType::Synced,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_and_cover_every_condition() {
        let names: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for ty in ConditionType::ALL {
            assert!(Reason::ALL.iter().any(|r| r.condition() == ty), "{ty} has no reason");
        }
    }

    #[test]
    fn reason_strings_match_the_spec_constants() {
        // Spot-check against the Go constants' values in the API spec.
        assert_eq!(Reason::BranchNotAllowed.as_str(), "BranchNotAllowed");
        assert_eq!(Reason::EventsQueued.condition(), ConditionType::Synced);
        assert_eq!(Reason::Checking.condition(), ConditionType::Available);
        assert_eq!(Reason::WorkerNotStarted.condition(), ConditionType::Active);
    }
}
