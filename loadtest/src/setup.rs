//! One measured run: a namespace, a repository, the operator as a process,
//! and the objects that connect them.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::env::Env;

pub struct Run<'a> {
    env: &'a Env,
    client: kube::Client,
    pub namespace: String,
    pub repo: String,
    url: String,
    operator: Child,
    scratch: std::path::PathBuf,
    binary: std::path::PathBuf,
}

fn spawn_operator(env: &Env, binary: &Path, ns: &str, scratch: &Path, log: &str) -> Result<Child, String> {
    let log = std::fs::File::create(scratch.join(log)).map_err(|e| e.to_string())?;
    Command::new(binary)
        .args(["run", "--namespace", ns, "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(scratch.join("data"))
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .stderr(log)
        .spawn()
        .map_err(|e| e.to_string())
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        let _ = self.operator.kill();
        let _ = self.operator.wait();
    }
}

async fn apply(client: &kube::Client, ns: &str, manifest: Value) -> Result<(), String> {
    let (group, version) = match manifest["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), manifest["apiVersion"].as_str().unwrap().to_owned()),
    };
    let gvk = kube::api::GroupVersionKind::gvk(&group, &version, manifest["kind"].as_str().unwrap());
    let resource = kube::api::ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> = if gvk.kind == "Namespace" {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), ns, &resource)
    };
    let name = manifest["metadata"]["name"].as_str().unwrap().to_owned();
    api.patch(&name, &PatchParams::apply("loadtest").force(), &Patch::Apply(&manifest))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

impl<'a> Run<'a> {
    pub async fn start(
        env: &'a Env,
        operator: &Path,
        prefix: &str,
        interval: &str,
        max_commits: u32,
    ) -> Result<Self, String> {
        let client = env.client().await?;
        let stamp = format!("{prefix}-{}", std::process::id());
        let url = env.new_repo(&stamp)?;
        let ns = stamp.clone();
        apply(&client, "", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .await?;
        let crds = Command::new(operator).arg("crd").output().map_err(|e| e.to_string())?;
        let kubectl = Path::new(env.var("GITENV_BIN")).join("kubectl");
        let mut apply_crds = Command::new(kubectl)
            .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
            .env("KUBECONFIG", env.var("KUBECONFIG"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        std::io::Write::write_all(apply_crds.stdin.as_mut().unwrap(), &crds.stdout)
            .map_err(|e| e.to_string())?;
        apply_crds.wait().map_err(|e| e.to_string())?;
        apply(&client, &ns, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git", "namespace": ns},
            "stringData": {"identity": env.file("GITENV_SSH_KEY_RW"), "known_hosts": env.file("GITENV_KNOWN_HOSTS")}})).await?;
        apply(&client, &ns, json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "GitProvider", "metadata": {"name": "git", "namespace": ns},
            "spec": {"url": url, "secretRef": {"name": "git"}, "push": {"interval": interval, "maxCommits": max_commits}}})).await?;
        apply(&client, &ns, json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "GitTarget", "metadata": {"name": "t", "namespace": ns},
            "spec": {"providerRef": {"name": "git"}, "baseFolder": "load"}})).await?;
        apply(&client, &ns, json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "WatchRule", "metadata": {"name": "r", "namespace": ns},
            "spec": {"sinkRef": {"name": "t"}, "rules": [{"resources": ["configmaps"], "labelSelector": {"matchLabels": {"loadtest": "yes"}}}]}})).await?;
        let scratch = env.root.join("target/loadtest").join(&stamp);
        std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
        let child = spawn_operator(env, operator, &ns, &scratch, "operator.log")?;
        let run = Self {
            env,
            client,
            namespace: ns,
            repo: stamp,
            url,
            operator: child,
            scratch,
            binary: operator.to_owned(),
        };
        run.wait_ready().await?;
        Ok(run)
    }

    /// Kills the operator and starts a new one (fresh data dir), as after a
    /// crash; waits until its target is Ready.
    pub async fn restart_operator(&mut self) -> Result<(), String> {
        let _ = self.operator.kill();
        let _ = self.operator.wait();
        let data = self.scratch.join("data");
        let _ = std::fs::remove_dir_all(&data);
        self.operator =
            spawn_operator(self.env, &self.binary, &self.namespace, &self.scratch, "operator-2.log")?;
        self.wait_ready().await
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "configbutler.ai",
                "v1alpha1",
                "GitTarget",
            )),
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let ready = api.get("t").await.ok().and_then(|t| {
                let conditions = t.data["status"]["conditions"].as_array()?.clone();
                Some(conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            });
            if ready == Some(true) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err("the GitTarget did not become Ready within 120 s".into())
    }

    fn body(&self, name: &str, value: &str) -> k8s_openapi::api::core::v1::ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": self.namespace, "labels": {"loadtest": "yes"}},
            "data": {"value": value}}),
        )
        .unwrap()
    }

    pub async fn configmap(&self, name: &str, value: &str) -> Result<(), String> {
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), &self.namespace);
        api.create(&PostParams::default(), &self.body(name, value)).await.map(drop).map_err(|e| e.to_string())
    }

    pub async fn configmaps_in_parallel(&self, count: usize, parallel: usize) -> Result<(), String> {
        let results: Vec<Result<(), String>> = futures::stream::iter(0..count)
            .map(|i| async move { self.configmap(&format!("mem-{i}"), &i.to_string()).await })
            .buffer_unordered(parallel)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Waits until `count` CREATE commits are pushed; returns, per object
    /// name, the server time of the push that carried its commit.
    pub async fn wait_pushed(&self, count: usize, timeout: Duration) -> Result<HashMap<String, f64>, String> {
        let deadline = Instant::now() + timeout;
        let clone = self.scratch.join("clone");
        loop {
            let pushes = self.env.pushes(&self.repo);
            if !pushes.is_empty() {
                if !clone.exists() {
                    self.env.git(&self.scratch, &["clone", "--quiet", "--bare", &self.url, "clone"])?;
                }
                self.env.git(&clone, &["fetch", "--quiet", "origin", "+refs/heads/*:refs/heads/*"])?;
                let mut at = HashMap::new();
                for (time, old, new) in &pushes {
                    let range =
                        if old.chars().all(|c| c == '0') { new.clone() } else { format!("{old}..{new}") };
                    // Live changes name the object in the subject, a SYNC commit in its body.
                    for line in self.env.git(&clone, &["log", "--format=%B", &range])?.lines() {
                        if let Some(name) =
                            line.strip_prefix("CREATE ConfigMap ").and_then(|s| s.split('/').nth(1))
                        {
                            at.entry(name.to_owned()).or_insert(*time);
                        }
                    }
                }
                if at.len() >= count {
                    return Ok(at);
                }
                eprintln!("{} of {count} changes pushed", at.len());
            }
            if Instant::now() > deadline {
                return Err(format!("only some of {count} changes were pushed within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.operator.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    pub fn peak_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }
}
