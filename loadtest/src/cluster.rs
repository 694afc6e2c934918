//! The Kubernetes side of a run: a namespace, a repository, one GitProvider,
//! T GitTargets (branch `b<i>`, folder `t<i>`) each with a WatchRule that
//! selects the ConfigMaps labelled `lt-target=t<i>`, and the load objects
//! `o-<j>` spread over the targets round-robin.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::env::Env;

pub struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
    /// Repository name on the git server (also the namespace name).
    pub repo: String,
    pub url: String,
    pub targets: usize,
}

/// The value written into object `o-<j>`: a global sequence number, so a
/// pushed file names exactly which change it carries.
pub fn value_of(seq: u64) -> String {
    format!("v{seq}")
}

pub fn parse_value(text: &str) -> Option<u64> {
    text.trim().trim_matches(|c| c == '\'' || c == '"').strip_prefix('v')?.parse().ok()
}

pub fn object_name(j: usize) -> String {
    format!("o-{j}")
}

pub fn branch_of(target: usize) -> String {
    format!("b{target}")
}

async fn apply(client: &kube::Client, ns: &str, manifest: Value) -> Result<(), String> {
    let api_version = manifest["apiVersion"].as_str().unwrap_or_default().to_owned();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = GroupVersionKind::gvk(group, version, manifest["kind"].as_str().unwrap_or_default());
    let resource = ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> = if gvk.kind == "Namespace" {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), ns, &resource)
    };
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    api.patch(&name, &PatchParams::apply("loadtest").force(), &Patch::Apply(&manifest))
        .await
        .map(drop)
        .map_err(|e| format!("apply {}/{name}: {e}", gvk.kind))
}

fn install_crds(env: &Env, operator: &Path) -> Result<(), String> {
    let crds = Command::new(operator).arg("crd").output().map_err(|e| format!("{operator:?} crd: {e}"))?;
    let kubectl = Path::new(env.var("GITENV_BIN")).join("kubectl");
    let mut child = Command::new(kubectl)
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::io::Write::write_all(child.stdin.as_mut().expect("piped"), &crds.stdout)
        .map_err(|e| e.to_string())?;
    drop(child.stdin.take());
    let status = child.wait().map_err(|e| e.to_string())?;
    status.success().then_some(()).ok_or_else(|| "kubectl apply of the CRDs failed".into())
}

impl Cluster {
    /// Creates the namespace, repository, provider and `targets` targets.
    pub async fn create(
        env: &Env,
        operator: &Path,
        stamp: &str,
        targets: usize,
        interval: &str,
        max_commits: u32,
    ) -> Result<Self, String> {
        let client = env.client().await?;
        let url = env.new_repo(stamp)?;
        let ns = stamp.to_owned();
        install_crds(env, operator)?;
        apply(&client, "", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .await?;
        apply(&client, &ns, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git", "namespace": ns},
            "stringData": {"identity": env.file("GITENV_SSH_KEY_RW"), "known_hosts": env.file("GITENV_KNOWN_HOSTS")}}))
        .await?;
        apply(&client, &ns, json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "GitProvider",
            "metadata": {"name": "git", "namespace": ns},
            "spec": {"url": url, "secretRef": {"name": "git"}, "push": {"interval": interval, "maxCommits": max_commits}}}))
        .await?;
        for i in 0..targets {
            apply(&client, &ns, json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "GitTarget",
                "metadata": {"name": format!("t{i}"), "namespace": ns},
                "spec": {"providerRef": {"name": "git"}, "branch": branch_of(i), "baseFolder": format!("t{i}")}}))
            .await?;
            apply(&client, &ns, json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "WatchRule",
                "metadata": {"name": format!("r{i}"), "namespace": ns},
                "spec": {"sinkRef": {"name": format!("t{i}")},
                         "rules": [{"resources": ["configmaps"], "labelSelector": {"matchLabels": {"lt-target": format!("t{i}")}}}]}}))
            .await?;
        }
        Ok(Self { client, namespace: ns, repo: stamp.to_owned(), url, targets })
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates or overwrites object `o-<j>` with the value of `seq`.
    pub async fn write(&self, j: usize, seq: u64) -> Result<(), String> {
        let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": object_name(j), "namespace": self.namespace,
                         "labels": {"lt-target": format!("t{}", j % self.targets)}},
            "data": {"value": value_of(seq)}});
        self.configmaps()
            .patch(&object_name(j), &PatchParams::apply("loadtest").force(), &Patch::Apply(&manifest))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Creates objects `o-0` … `o-<count-1>` (value = index), `parallel` in flight.
    pub async fn create_objects(&self, count: usize, parallel: usize) -> Result<(), String> {
        let results: Vec<Result<(), String>> = futures::stream::iter(0..count)
            .map(|j| async move { self.write(j, j as u64).await })
            .buffer_unordered(parallel)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// The live load objects of target `i`, as the operator must write them:
    /// file path below the branch root → sanitized YAML bytes.
    pub async fn expected_files(&self, target: usize) -> Result<BTreeMap<String, Vec<u8>>, String> {
        use gitops_reverser::sanitize::{ResourceRef, join_base, normalize_base_folder, sanitize};
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "ConfigMap"), "configmaps");
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
        let rref = ResourceRef {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            namespaced: true,
        };
        let base = normalize_base_folder(&format!("t{target}"));
        let list = api
            .list(&ListParams::default().labels(&format!("lt-target=t{target}")))
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .map(|object| {
                let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
                let sanitized = sanitize(&value, &rref).map_err(|e| e.to_string())?;
                Ok((join_base(&base, &sanitized.path), sanitized.yaml))
            })
            .collect()
    }

    /// Waits until every GitTarget reports Ready=True.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let resource =
            ApiResource::from_gvk(&GroupVersionKind::gvk("configbutler.ai", "v1alpha1", "GitTarget"));
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
        let deadline = Instant::now() + timeout;
        loop {
            let ready = api.list(&ListParams::default()).await.map(|list| {
                list.items
                    .iter()
                    .filter(|t| {
                        t.data["status"]["conditions"]
                            .as_array()
                            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                    })
                    .count()
            });
            if ready.as_ref().is_ok_and(|n| *n == self.targets) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{ready:?} of {} GitTargets Ready within {timeout:?}", self.targets));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Deletes the namespace (and so every object of the run).
    pub async fn delete(&self) {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let _ = api.delete(&self.namespace, &Default::default()).await;
    }
}
