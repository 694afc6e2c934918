//! Status types. `GitTargetStatus` is exactly the spec's; the other kinds
//! report conditions and the generation they observed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Status of a GitTarget.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GitTargetStatus {
    /// Ready (summary), Available, Active and Synced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The last generation that was reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Repository metadata; only populated when Available=True.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_status: Option<GitStatus>,

    /// Branch worker state; only populated when the Active condition exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_status: Option<WorkerStatus>,
}

/// Git repository metadata.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitStatus {
    /// Whether the branch exists on the remote.
    pub branch_exists: bool,
    /// SHA of the latest commit; empty if the branch does not exist yet.
    #[serde(rename = "lastCommitSHA", default, skip_serializing_if = "Option::is_none")]
    pub last_commit_sha: Option<String>,
    /// When this information was last verified.
    pub last_checked: Time,
}

/// Branch worker state.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// Whether the worker is running.
    pub active: bool,
    /// Number of events waiting to be processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_events: Option<i64>,
    /// When the last successful push happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_time: Option<Time>,
    /// Result of the last push attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_status: Option<PushResult>,
    /// The replica that runs the worker (and writes this status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The shard of the target's branch; its Lease names the owner too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

/// Result of a push attempt.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushResult {
    Success,
    Failed,
    Pending,
}

/// Status of GitProvider, WatchRule and ClusterWatchRule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// Ready, with a reason and a message saying how to fix a problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The last generation that was reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
