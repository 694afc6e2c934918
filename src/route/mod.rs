//! Routing (pure): which GitTargets want an object, which watches the rules
//! need, and which branch worker a target belongs to.
//!
//! In: WatchRule/ClusterWatchRule specs, the API server's resource catalog,
//! and per event (resource, namespace, labels, operation).
//! Out: target keys, a deduplicated watch plan, branch keys.

mod catalog;
mod keys;
pub mod selector;
mod table;

pub use catalog::{ResourceCatalog, ServedResource, WILDCARD_EXCLUDED};
pub use keys::{BranchKey, TargetKey};
pub use table::{
    CompiledRule, OpMask, RouteTable, RuleError, RuleProblem, RuleSource, Scope, Selected, WatchPlan,
    WatchSpec,
};
