//! `WatchRule` (namespaced, local sink only) and `ClusterWatchRule`
//! (cluster-scoped, sink in an explicit namespace).

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::GROUP;

use super::schema::{DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, declare_forbidden_namespace};
use super::status::ResourceStatus;

/// WatchRule records objects of its own namespace into a GitTarget of the
/// same namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "configbutler.ai",
    version = "v1alpha1",
    kind = "WatchRule",
    namespaced,
    status = "ResourceStatus",
    shortname = "wr",
    category = "gitops-reverser",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.sinkRef.name"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    derive = "PartialEq",
    doc = "WatchRule selects objects in its own namespace and records them into a local GitTarget."
)]
#[serde(rename_all = "camelCase")]
pub struct WatchRuleSpec {
    /// SinkRef must be local: it has no namespace field.
    pub sink_ref: LocalTargetReference,
    /// Rules select what is recorded.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<crate::api::Rule>,
    /// A ServiceAccount of this namespace whose RBAC bounds what the rule
    /// mirrors: only the resources it may list and watch here, checked with
    /// SubjectAccessReviews (Flux's model). Unset: the operator's
    /// `--default-service-account`, if set; else the operator's own RBAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub service_account_name: Option<String>,
    /// Flux's meaning: while true the rule records nothing, and the files it
    /// wrote stay as they are; when it turns false again, its GitTarget
    /// catches up with one sync commit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// ClusterWatchRule records objects cluster-wide (cluster-scoped kinds and
/// every namespace) into a GitTarget in a named namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "configbutler.ai",
    version = "v1alpha1",
    kind = "ClusterWatchRule",
    status = "ResourceStatus",
    shortname = "cwr",
    category = "gitops-reverser",
    printcolumn(name = "Target Namespace", type_ = "string", json_path = ".spec.sinkRef.namespace"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.sinkRef.name"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    derive = "PartialEq",
    doc = "ClusterWatchRule selects objects cluster-wide and records them into a GitTarget in a named namespace."
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterWatchRuleSpec {
    /// SinkRef must include the namespace of the GitTarget.
    pub sink_ref: NamespacedTargetReference,
    /// Rules select what is recorded.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<crate::api::Rule>,
    /// A ServiceAccount in the GitTarget's namespace (`sinkRef.namespace`)
    /// whose RBAC bounds what the rule mirrors: only the resources it may
    /// list and watch cluster-wide, checked with SubjectAccessReviews.
    /// Unset: the operator's `--default-service-account`, if set; else the
    /// operator's own RBAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub service_account_name: Option<String>,
    /// Flux's meaning: while true the rule records nothing, and the files it
    /// wrote stay as they are; when it turns false again, its GitTarget
    /// catches up with one sync commit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// A reference to a GitTarget in the referrer's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[schemars(transform = declare_forbidden_namespace)]
#[x_kube(
    validation = Rule::new("!has(self.__namespace__)")
        .message("a WatchRule's sinkRef must not set namespace: a WatchRule may only write to a GitTarget in its own namespace (use a ClusterWatchRule to name another namespace)")
        .field_path(".namespace")
)]
pub struct LocalTargetReference {
    /// API group of the referent.
    #[serde(default = "default_group")]
    #[x_kube(validation = Rule::new("self == 'configbutler.ai'").message("sinkRef.group must be configbutler.ai"))]
    pub group: String,
    /// Kind of the referent.
    #[serde(default)]
    pub kind: TargetKind,
    /// Name of the GitTarget.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to a GitTarget in an explicit namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NamespacedTargetReference {
    /// API group of the referent.
    #[serde(default = "default_group")]
    #[x_kube(validation = Rule::new("self == 'configbutler.ai'").message("sinkRef.group must be configbutler.ai"))]
    pub group: String,
    /// Kind of the referent.
    #[serde(default)]
    pub kind: TargetKind,
    /// Name of the GitTarget.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the GitTarget. Required: a ClusterWatchRule has none.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub namespace: String,
}

/// The kinds a rule can write to.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TargetKind {
    #[default]
    GitTarget,
}

fn default_group() -> String {
    GROUP.to_owned()
}
