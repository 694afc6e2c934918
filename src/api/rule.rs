//! `Rule`: what a WatchRule or ClusterWatchRule selects, shaped like a
//! Kubernetes admission rule plus a label selector.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Rule selects objects by operation, group, version and resource, like an
/// admission rule, and optionally by labels.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Operations to record. Defaults to every operation.
    #[serde(default = "all_operations")]
    #[schemars(length(min = 1))]
    pub operations: Vec<Operation>,

    /// API groups of the resources; "" is the core group, "*" is every group.
    /// Defaults to every group.
    #[serde(default = "wildcard")]
    #[schemars(length(min = 1), inner(regex(pattern = r"^(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$")))]
    pub api_groups: Vec<String>,

    /// API versions of the resources; "*" means the preferred version.
    /// Defaults to "*".
    #[serde(default = "wildcard")]
    #[schemars(length(min = 1), inner(regex(pattern = r"^(\*|v[0-9]+((alpha|beta)[0-9]+)?)$")))]
    pub api_versions: Vec<String>,

    /// Plural resource names such as `configmaps`, or "*" for every resource.
    /// Subresources are not supported.
    #[schemars(length(min = 1), inner(regex(pattern = r"^(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$")))]
    pub resources: Vec<String>,

    /// Only objects whose labels match are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,

    /// Fields left out of the files of the objects this entry selects, as
    /// JSON pointers (RFC 6901) such as `/spec/replicas`, or
    /// `/metadata/annotations/example.com~1checksum` for an annotation
    /// (`~1` stands for `/`, `~0` for `~`). A change to them alone makes no
    /// commit, and git never shows them. Defaults to none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 2, max = 512), regex(pattern = POINTER_PATTERN)))]
    #[x_kube(
        validation = kube::core::Rule::new(
            "self.all(p, !(p in ['/apiVersion', '/kind', '/metadata', '/metadata/name', '/metadata/namespace']))"
        )
        .message("ignoreFields must not name /apiVersion, /kind, /metadata, /metadata/name or /metadata/namespace: every file needs them")
    )]
    pub ignore_fields: Vec<String>,

    /// Field managers (as `metadata.managedFields` names them, such as
    /// `horizontal-pod-autoscaler` or `kube-controller-manager`) whose
    /// changes alone make no commit: a change whose every field only these
    /// managers own is not written. The fields stay in the file, which
    /// shows their latest value whenever another change is written.
    /// Defaults to none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 128)))]
    pub ignore_managers: Vec<String>,
}

/// A JSON pointer with at least one non-empty segment, and `~` only in the
/// escapes `~0` and `~1`.
pub const POINTER_PATTERN: &str = r"^(/([^~/]|~[01])+)+$";

/// An operation on an object.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    #[serde(rename = "CREATE")]
    Create,
    #[serde(rename = "UPDATE")]
    Update,
    #[serde(rename = "DELETE")]
    Delete,
    #[serde(rename = "*")]
    All,
}

impl Operation {
    /// Whether this entry selects `op`.
    pub fn covers(self, op: Operation) -> bool {
        self == Operation::All || self == op
    }
}

fn all_operations() -> Vec<Operation> {
    vec![Operation::All]
}

fn wildcard() -> Vec<String> {
    vec!["*".to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_rule_selects_everything_but_resources() {
        let rule: Rule = serde_json::from_str(r#"{"resources":["configmaps"]}"#).unwrap();
        assert_eq!(rule.operations, vec![Operation::All]);
        assert_eq!(rule.api_groups, vec!["*"]);
        assert_eq!(rule.api_versions, vec!["*"]);
        assert!(rule.label_selector.is_none());
        assert!(rule.ignore_fields.is_empty() && rule.ignore_managers.is_empty());
    }

    #[test]
    fn wildcard_operation_covers_each_operation() {
        assert!(Operation::All.covers(Operation::Delete));
        assert!(Operation::Create.covers(Operation::Create));
        assert!(!Operation::Create.covers(Operation::Update));
    }
}
