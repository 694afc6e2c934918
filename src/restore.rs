//! `gitops-reverser restore --from DIR [--dry-run]`: applies a mirrored
//! folder back to a cluster with server-side apply, in dependency order:
//! Namespaces, then CustomResourceDefinitions (waited for until
//! Established), then RBAC and ServiceAccounts, then everything else.
//!
//! Reading and ordering the files is pure ([`plan`]); only [`run`] talks
//! to the API server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope, pinned_kind};
use serde_json::Value;

/// Settings of the `restore` command.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The mirrored folder (a checkout of the branch, or a GitTarget's base folder in it).
    #[arg(long)]
    pub from: PathBuf,
    /// Ask the API server to validate every object without storing any.
    #[arg(long)]
    pub dry_run: bool,
    /// The field manager of the applied fields.
    #[arg(long, default_value = "gitops-reverser-restore")]
    pub field_manager: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a Kubernetes object: {why}")]
    NotAnObject { path: PathBuf, why: String },
    #[error("cannot load the Kubernetes client configuration (in-cluster or KUBECONFIG): {0}")]
    KubeConfig(#[source] kube::Error),
    #[error("{failed} of {total} objects were not applied:\n{details}")]
    Failed { failed: usize, total: usize, details: String },
}

/// One object to apply, with the file it came from.
#[derive(Debug, Clone)]
pub struct Planned {
    pub path: PathBuf,
    pub object: Value,
}

impl Planned {
    fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    fn describe(&self) -> String {
        let name = self.object["metadata"]["name"].as_str().unwrap_or_default();
        match self.object["metadata"]["namespace"].as_str() {
            Some(ns) => format!("{} {ns}/{name}", self.kind()),
            None => format!("{} {name}", self.kind()),
        }
    }
}

/// Where a kind goes in the order: what others depend on first.
fn rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ServiceAccount" | "ClusterRole" | "Role" | "ClusterRoleBinding" | "RoleBinding" => 2,
        _ => 3,
    }
}

/// Every object file below `dir`, parsed and in the order to apply them.
/// Skipped: hidden folders (`.git`), `kustomization.yaml`, and SOPS files
/// (`*.sops.yaml`: they need a key, which this command does not take).
pub fn plan(dir: &Path) -> Result<Vec<Planned>, RestoreError> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    let mut planned = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|source| RestoreError::Read { path: path.clone(), source })?;
        let object: Value = serde_saphyr::from_str(&text)
            .map_err(|e| RestoreError::NotAnObject { path: path.clone(), why: e.to_string() })?;
        for field in ["apiVersion", "kind"] {
            if !object[field].is_string() {
                return Err(RestoreError::NotAnObject { path, why: format!("no {field}") });
            }
        }
        if !object["metadata"]["name"].is_string() {
            return Err(RestoreError::NotAnObject { path, why: "no metadata.name".into() });
        }
        planned.push(Planned { path, object });
    }
    planned.sort_by(|a, b| rank(a.kind()).cmp(&rank(b.kind())).then_with(|| a.path.cmp(&b.path)));
    Ok(planned)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RestoreError> {
    let entries =
        std::fs::read_dir(dir).map_err(|source| RestoreError::Read { path: dir.to_owned(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| RestoreError::Read { path: dir.to_owned(), source })?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, out)?;
        } else if name.ends_with(".yaml")
            && name != crate::worker::kustomization::FILE_NAME
            && !name.ends_with(".sops.yaml")
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Applies the planned objects; prints one line per object.
pub async fn run(args: RestoreArgs) -> Result<(), RestoreError> {
    let planned = plan(&args.from)?;
    let client = kube::Client::try_default().await.map_err(RestoreError::KubeConfig)?;
    let mut params = PatchParams::apply(&args.field_manager).force();
    params.dry_run = args.dry_run;
    let mut kinds: HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)> = HashMap::new();
    let mut failures = Vec::new();
    for (index, item) in planned.iter().enumerate() {
        match apply(&client, &mut kinds, &params, item).await {
            Ok(()) => println!("{} {}", if args.dry_run { "validated" } else { "applied" }, item.describe()),
            Err(why) => failures.push(format!("{} ({}): {why}", item.describe(), item.path.display())),
        }
        let next_is_not_a_crd = planned.get(index + 1).is_none_or(|n| n.kind() != "CustomResourceDefinition");
        if item.kind() == "CustomResourceDefinition" && next_is_not_a_crd && !args.dry_run {
            // Custom objects need their CRDs served: wait, and discover again.
            wait_established(&client, &planned).await;
            kinds.clear();
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(RestoreError::Failed {
            failed: failures.len(),
            total: planned.len(),
            details: failures.join("\n"),
        })
    }
}

async fn apply(
    client: &kube::Client,
    kinds: &mut HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>,
    params: &PatchParams,
    item: &Planned,
) -> Result<(), String> {
    let api_version = item.object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, item.kind());
    if !kinds.contains_key(&gvk) {
        let found =
            pinned_kind(client, &gvk).await.map_err(|e| format!("the API server does not serve it: {e}"))?;
        kinds.insert(gvk.clone(), found);
    }
    let (resource, capabilities) = &kinds[&gvk];
    let name = item.object["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = match (&capabilities.scope, item.object["metadata"]["namespace"].as_str()) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, resource),
        (Scope::Namespaced, None) => return Err("namespaced, but the file has no metadata.namespace".into()),
        (Scope::Cluster, _) => Api::all_with(client.clone(), resource),
    };
    api.patch(name, params, &Patch::Apply(&item.object)).await.map(drop).map_err(|e| e.to_string())
}

/// Waits (up to a minute) until every planned CRD is Established.
async fn wait_established(client: &kube::Client, planned: &[Planned]) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names: Vec<&str> = planned
        .iter()
        .filter(|p| p.kind() == "CustomResourceDefinition")
        .filter_map(|p| p.object["metadata"]["name"].as_str())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    while Instant::now() < deadline {
        interval.tick().await;
        let mut established = 0;
        for name in &names {
            let Ok(crd) = api.get(name).await else { continue };
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            if conditions.iter().any(|c| c.type_ == "Established" && c.status == "True") {
                established += 1;
            }
        }
        if established == names.len() {
            return;
        }
    }
    eprintln!("gitops-reverser restore: not every CRD was Established within a minute; going on");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, path: &str, text: &str) {
        let full = dir.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    #[test]
    fn namespaces_and_crds_come_first_and_non_objects_are_skipped_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "ns/apps/deployments/web.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: ns\n",
        );
        write(
            d,
            "_cluster/core/namespaces/ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns\n",
        );
        write(
            d,
            "_cluster/apiextensions.k8s.io/customresourcedefinitions/w.yaml",
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: w\n",
        );
        write(
            d,
            "ns/rbac.authorization.k8s.io/roles/r.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: r\n  namespace: ns\n",
        );
        write(d, "kustomization.yaml", "resources: []\n");
        write(d, "ns/core/secrets/s.sops.yaml", "sops: {}\n");
        write(d, ".git/config.yaml", "not: an object\n");
        let kinds: Vec<String> = plan(d).unwrap().iter().map(|p| p.kind().to_owned()).collect();
        assert_eq!(kinds, ["Namespace", "CustomResourceDefinition", "Role", "Deployment"]);

        write(d, "README.yaml", "title: notes\n");
        let error = plan(d).unwrap_err().to_string();
        assert!(error.contains("README.yaml is not a Kubernetes object: no apiVersion"), "{error}");
    }
}
