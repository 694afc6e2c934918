//! `GitTarget`: where to write (branch and folder), and which provider gives
//! the repository URL and credentials.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::commit::CommitSettings;
use super::status::GitTargetStatus;
use super::{FLUX_SOURCE_GROUP, GROUP};

/// GitTargetSpec defines where the audit log is written.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "configbutler.ai",
    version = "v1alpha1",
    kind = "GitTarget",
    namespaced,
    status = "GitTargetStatus",
    shortname = "gt",
    category = "gitops-reverser",
    printcolumn(name = "Branch", type_ = "string", json_path = ".spec.branch"),
    printcolumn(name = "Folder", type_ = "string", json_path = ".spec.baseFolder"),
    printcolumn(name = "Provider", type_ = "string", priority = "1", json_path = ".spec.providerRef.name"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Last Push", type_ = "date", json_path = ".status.workerStatus.lastPushTime"),
    printcolumn(name = "Queued", type_ = "integer", json_path = ".status.workerStatus.queuedEvents"),
    printcolumn(
        name = "Status",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    derive = "PartialEq",
    doc = "GitTarget defines where to write (branch and folder) and links to a provider."
)]
#[serde(rename_all = "camelCase")]
pub struct GitTargetSpec {
    /// ProviderRef points to the source of the URL and credentials: a native
    /// GitProvider or a Flux GitRepository, in the same namespace.
    pub provider_ref: GitProviderReference,

    /// The target branch for the audit log: a short branch name such as
    /// `main` or `audit/prod`, valid for `git check-ref-format --branch`.
    #[serde(default = "default_branch")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[^\x00-\x20\x7f~^:?*\[\\]+$"))]
    #[x_kube(
        validation = Rule::new("!self.startsWith('-')").message("branch must not start with '-'"),
        validation = Rule::new("!self.startsWith('refs/')")
            .message("branch must be a short name such as 'main', not a full ref such as 'refs/heads/main'"),
        validation = Rule::new("self != 'HEAD' && self != '@' && !self.contains('@{')")
            .message("branch must not be 'HEAD' or '@' and must not contain '@{'"),
        validation = Rule::new("!self.contains('..')").message("branch must not contain '..'"),
        validation = Rule::new("!self.startsWith('/') && !self.endsWith('/') && !self.contains('//')")
            .message("branch must not start or end with '/' or contain '//'"),
        validation = Rule::new(r#"!self.matches('(^|/)\\.')"#)
            .message("no '/'-separated component of branch may start with '.'"),
        validation = Rule::new(r#"!self.endsWith('.') && !self.matches('\\.lock(/|$)')"#)
            .message("branch must not end with '.' and no component may end with '.lock'")
    )]
    pub branch: String,

    /// The folder, relative to the repository root, that this target owns.
    /// Empty means the repository root.
    #[schemars(length(max = 512), regex(pattern = r"^[^\x00-\x1f\x7f\\]*$"))]
    #[x_kube(
        validation = Rule::new("!self.startsWith('/')")
            .message("baseFolder must be a relative path: it must not start with '/'"),
        validation = Rule::new(r#"!self.matches('(^|/)\\.\\.(/|$)')"#)
            .message("baseFolder must not contain '..' segments: a target may only write below the repository root"),
        validation = Rule::new(r#"!self.matches('(^|/)\\.git(/|$)')"#)
            .message("baseFolder must not point into a '.git' folder")
    )]
    pub base_folder: String,

    /// Flux's meaning: while true nothing is committed or pushed for this
    /// target; when it turns false again, one sync commit catches the
    /// folder up with the cluster (never a replay of every missed event).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// How the folder is laid out. `plain` (the default): one file per
    /// object. `kustomize`: the same, plus a `kustomization.yaml` in the
    /// base folder that lists every object file, so Flux or `kubectl apply
    /// -k` can apply the folder as it is.
    #[serde(default, skip_serializing_if = "Layout::is_plain")]
    pub layout: Layout,

    /// Commit shapes this target's commit messages; it replaces the
    /// provider's `commit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitSettings>,

    /// What becomes of the file of an object deleted from the cluster.
    /// `Always` (the default): it is deleted. `Never`: it stays as the
    /// object last was, and a commit that changes no file says so (subject
    /// `delete <resource>/<namespace>/<name> (file kept)`, trailer
    /// `Deleted-At`); resyncs delete no file of this target either.
    #[serde(default)]
    pub prune: Prune,
}

/// Whether a deleted object's file is deleted.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Prune {
    /// The file goes with the object.
    #[default]
    Always,
    /// The file stays; the deletion is a commit of its own.
    Never,
}

/// The layout of a GitTarget's folder.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One file per object.
    #[default]
    Plain,
    /// One file per object and a `kustomization.yaml` listing them.
    Kustomize,
}

impl Layout {
    fn is_plain(&self) -> bool {
        *self == Layout::Plain
    }
}

fn default_branch() -> String {
    "main".to_owned()
}

/// A typed reference to the provider of a GitTarget.
///
/// `group` may be left empty: it is then inferred from `kind`
/// (GitProvider → configbutler.ai, GitRepository → source.toolkit.fluxcd.io).
/// A group that does not belong to the kind is rejected.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!has(self.group) || self.group == '' || (self.kind == 'GitProvider' ? self.group == 'configbutler.ai' : self.group == 'source.toolkit.fluxcd.io')")
        .message("providerRef.group must match providerRef.kind: kind GitProvider belongs to group configbutler.ai and kind GitRepository to group source.toolkit.fluxcd.io (leave group empty to infer it from kind)")
        .field_path(".group")
)]
pub struct GitProviderReference {
    /// API group of the referent. Empty means: inferred from kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,

    /// Kind of the referent.
    #[serde(default)]
    pub kind: ProviderKind,

    /// Name of the referent, in the GitTarget's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl GitProviderReference {
    /// The group the reference resolves to, with the kind-aware default applied.
    pub fn effective_group(&self) -> &str {
        match self.group.as_deref() {
            Some(group) if !group.is_empty() => group,
            _ => self.kind.group(),
        }
    }
}

/// The kinds a GitTarget can take its repository from.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProviderKind {
    /// A native `configbutler.ai` GitProvider.
    #[default]
    GitProvider,
    /// A Flux `source.toolkit.fluxcd.io` GitRepository. Its Secret must grant
    /// write access.
    GitRepository,
}

impl ProviderKind {
    /// The API group this kind lives in.
    pub fn group(self) -> &'static str {
        match self {
            Self::GitProvider => GROUP,
            Self::GitRepository => FLUX_SOURCE_GROUP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(group: Option<&str>, kind: ProviderKind) -> GitProviderReference {
        GitProviderReference { group: group.map(str::to_owned), kind, name: "p".into() }
    }

    #[test]
    fn empty_group_is_inferred_from_kind() {
        assert_eq!(reference(None, ProviderKind::GitProvider).effective_group(), GROUP);
        assert_eq!(reference(Some(""), ProviderKind::GitRepository).effective_group(), FLUX_SOURCE_GROUP);
        assert_eq!(reference(Some("x.io"), ProviderKind::GitProvider).effective_group(), "x.io");
    }

    #[test]
    fn defaults_fill_kind_and_branch() {
        let spec: GitTargetSpec =
            serde_json::from_str(r#"{"providerRef":{"name":"p"},"baseFolder":"clusters/a"}"#).unwrap();
        assert_eq!(spec.branch, "main");
        assert_eq!(spec.provider_ref.kind, ProviderKind::GitProvider);
    }
}
