//! The `configbutler.ai/v1alpha1` API: GitProvider, GitTarget, WatchRule and
//! ClusterWatchRule as Rust types, their status and condition vocabulary, and
//! the CRDs generated from them. No I/O lives here.

// kube's `printcolumn(type_ = ...)` repeats per column, which this lint
// mistakes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

mod commit;
mod conditions;
mod crd;
mod provider;
mod rule;
mod schema;
mod status;
mod target;
mod watch_rule;

pub use commit::CommitSettings;
pub use conditions::{ConditionType, Reason};
pub use crd::{all_crds, crd_file_name, crd_yaml, crds_yaml};
pub use provider::{
    GitProvider, GitProviderSpec, GitProviderStatus, PushStrategy, SecretReference, SigningFormat,
    SigningKeySpec, SigningKeyStatus,
};
pub use rule::{Operation, Rule};
pub use status::{GitStatus, GitTargetStatus, PushResult, ResourceStatus, WorkerStatus};
pub use target::{GitProviderReference, GitTarget, GitTargetSpec, Layout, ProviderKind, Prune};
pub use watch_rule::{
    ClusterWatchRule, ClusterWatchRuleSpec, LocalTargetReference, NamespacedTargetReference, WatchRule,
    WatchRuleSpec,
};

/// The API group of every kind defined here.
pub const GROUP: &str = "configbutler.ai";
/// The only served (and storage) version.
pub const VERSION: &str = "v1alpha1";
/// The API group of Flux's `GitRepository`.
pub const FLUX_SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
