//! Test support: brings up the local environment of real parts (or reuses a
//! running one), gives each test its own namespace and repository, and waits
//! on conditions with deadlines instead of sleeping.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod chart;
pub mod fixtures;
pub mod git;
pub mod history;
pub mod http;
pub mod jaeger;
pub mod leaks;
pub mod operator;
pub mod replicas;
pub mod scenario;
pub mod sops;
pub mod tenants;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The repository root. `cargo test` names it at run time too; that one wins,
/// because a shared target directory can hold a binary built in another checkout
/// (cargo does not rebuild a package for moving), whose compiled-in path is gone.
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
    })
}

/// The running local environment, described by `target/env/env.sh`.
pub struct Env {
    vars: HashMap<String, String>,
}

/// Brings the environment up once per test binary. `tests/env/up` reuses
/// running components and takes a lock, so parallel binaries do not race.
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = repo_root();
        let status =
            Command::new(root.join("tests/env/up")).current_dir(root).status().expect("run tests/env/up");
        assert!(status.success(), "tests/env/up failed: {status}");
        let text = std::fs::read_to_string(root.join("target/env/env.sh")).expect("read target/env/env.sh");
        Env { vars: parse_env_sh(&text) }
    })
}

/// Parses lines of the form `export NAME='value'`.
fn parse_env_sh(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

/// URLs of a fresh repository on the environment's git servers.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Repo {
    pub ssh_url: String,
    pub https_url: String,
    /// The same name on the reference sshd (git-shell), `ssh://git@127.0.0.1:PORT/NAME.git`:
    /// same keys and known_hosts as `ssh_url`; its pushes go to the same push log.
    pub sshd_url: String,
}

impl Env {
    /// A variable of env.sh; panics with its name if missing.
    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).unwrap_or_else(|| panic!("target/env/env.sh does not export {name}"))
    }

    /// All variables, for handing to a child process.
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.vars
    }

    /// A client acting as cluster admin.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(self.var("KUBECONFIG")).expect("read the admin kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("load the admin kubeconfig");
        kube::Client::try_from(config).expect("build a client")
    }

    /// Creates an empty repository with a unique name on the git server.
    pub fn new_repo(&self, prefix: &str) -> Repo {
        let name = unique_name(prefix);
        let output = Command::new(repo_root().join("tests/env/new-repo"))
            .arg(&name)
            .output()
            .expect("run tests/env/new-repo");
        assert!(
            output.status.success(),
            "new-repo {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("new-repo prints one line of JSON")
    }

    /// A path to the version-matched kubectl.
    pub fn kubectl(&self) -> PathBuf {
        match self.vars.get("GITENV_BIN") {
            Some(bin) => Path::new(bin).join("kubectl"),
            None => PathBuf::from("kubectl"),
        }
    }
}

/// Reads each `(id, yaml, object)` as kubectl and kustomize do (`yamlcheck`:
/// sigs.k8s.io/yaml and go-yaml v3, tests/env/README.md) and panics with its
/// report unless every document means its object.
pub fn assert_go_yaml_readers_agree(env: &Env, docs: &[(&str, &str, &serde_json::Value)]) {
    let yamlcheck = Path::new(env.var("GITENV_BIN")).join("yamlcheck");
    assert!(yamlcheck.exists(), "{} is missing; run tests/env/install", yamlcheck.display());
    let mut input = tempfile::tempfile().unwrap();
    for (id, yaml, object) in docs {
        let line = serde_json::json!({ "id": id, "yaml": yaml, "json": object });
        serde_json::to_writer(&mut input, &line).unwrap();
        std::io::Write::write_all(&mut input, b"\n").unwrap();
    }
    std::io::Seek::rewind(&mut input).unwrap();
    let output = Command::new(&yamlcheck).stdin(input).output().expect("run yamlcheck");
    let report = String::from_utf8_lossy(&output.stdout);
    let summary = format!("yamlcheck: {} documents, 0 mismatches\n", docs.len());
    assert!(
        output.status.success() && report.ends_with(&summary),
        "Go YAML readers read the files differently:\n{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Fault injection on the shared environment: `tests/env/component ACTION PART`
/// (`stop`, `kill`, `start`; `git`, `apiserver`, `kube-apiserver`).
/// Its output goes into the failure message: the test harness keeps that
/// whole, and would lose a child's own stderr among everything else.
pub fn component(action: &str, part: &str) {
    let out = Command::new(repo_root().join("tests/env/component")).args([action, part]).output().unwrap();
    assert!(
        out.status.success(),
        "tests/env/component {action} {part} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a component again when dropped, even if the test fails half-way.
pub struct StartOnDrop(pub &'static str);

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        component("start", self.0);
    }
}

/// A name unique across tests, processes and runs: `prefix-<pid>-<n>-<time>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{:x}-{n}-{:x}", std::process::id(), nanos % 0x10000)
}

/// A namespace that lives for one test and is deleted when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &kube::Client, prefix: &str) -> Self {
        let name = unique_name(prefix);
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create the test namespace");
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await; a detached kubectl keeps teardown off the test's runtime.
        let env = env();
        let _ = Command::new(env.kubectl())
            .args(["delete", "namespace", &self.name, "--wait=false", "--ignore-not-found"])
            .env("KUBECONFIG", env.var("KUBECONFIG"))
            .output();
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes a cluster-scoped object when dropped (best effort).
pub struct ClusterObjectGuard {
    pub resource: &'static str,
    pub name: String,
}

impl Drop for ClusterObjectGuard {
    fn drop(&mut self) {
        let env = env();
        let _ = Command::new(env.kubectl())
            .args(["delete", self.resource, &self.name, "--wait=false", "--ignore-not-found"])
            .env("KUBECONFIG", env.var("KUBECONFIG"))
            .output();
    }
}

/// Deletes a namespaced object and waits for it to be gone.
pub async fn delete_and_wait<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let _ = api.delete(name, &DeleteParams::default()).await;
    wait_for(&format!("{name} to be deleted"), Duration::from_secs(30), || async {
        api.get_opt(name).await.ok().flatten().is_none().then_some(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exported_single_quoted_values() {
        let vars = parse_env_sh("# comment\nexport A='x y'\nexport B='/p/q'\n");
        assert_eq!(vars["A"], "x y");
        assert_eq!(vars["B"], "/p/q");
    }
}
