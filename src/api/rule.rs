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
}

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
    }

    #[test]
    fn wildcard_operation_covers_each_operation() {
        assert!(Operation::All.covers(Operation::Delete));
        assert!(Operation::Create.covers(Operation::Create));
        assert!(!Operation::Create.covers(Operation::Update));
    }
}
