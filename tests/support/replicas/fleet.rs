//! Many GitTargets on many branches of several repositories, in one test
//! namespace: target `tNN` records the ConfigMaps labelled `ha-target=tNN`
//! into folder `tNN`. Several targets may share a branch, each with its own
//! folder. The end check compares every folder with the live objects.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::future::join_all;
use gitops_reverser::route::BranchKey;
use gitops_reverser::sanitize::{ResourceRef, join_base, normalize_base_folder, sanitize};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::{Value, json};

use super::super::fixtures::{self, Access};
use super::super::git::{Auth, GitClient};
use super::super::history::History;
use super::super::{Env, Repo, TestNamespace};
use super::mirror::Mirror;
use super::pushes::{self, Push};

pub const LABEL: &str = "ha-target";

/// `push.interval` of every GitProvider of a fleet: a commit waits at most
/// this long (plus a push in flight) before a push carries it.
pub const PUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The shape of a fleet: `targets` targets spread round-robin over
/// `branches` branches, which are spread round-robin over `repos`.
#[derive(Clone, Copy, Debug)]
pub struct FleetSpec {
    pub repos: usize,
    pub branches: usize,
    pub targets: usize,
    /// ConfigMaps per target before the load starts.
    pub objects: usize,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub repo: usize,
    pub branch: String,
    pub folder: String,
}

pub struct Fleet {
    pub env: &'static Env,
    pub client: kube::Client,
    pub ns: TestNamespace,
    pub repos: Vec<Repo>,
    pub targets: Vec<Target>,
    pub git: GitClient,
    mirrors: Vec<Mirror>,
    /// Every target encrypts for this key's recipient (issue 17).
    pub identity: age::x25519::Identity,
    /// Per target, the token of its canary Secret (never changed).
    canaries: BTreeMap<String, String>,
}

impl Fleet {
    /// Creates the namespace, repositories, credentials, providers, targets,
    /// rules and initial ConfigMaps.
    pub async fn create(prefix: &str, spec: FleetSpec) -> Self {
        let env = super::super::env();
        let client = env.client().await;
        fixtures::install_crds(&client).await;
        let ns = TestNamespace::create(&client, prefix).await;
        let git = GitClient::new(Auth::ssh_rw(env));
        let repos: Vec<Repo> = (0..spec.repos).map(|r| env.new_repo(&format!("{prefix}{r}"))).collect();
        let mirrors = repos
            .iter()
            .enumerate()
            .map(|(r, repo)| Mirror::new(&git, &repo.ssh_url, &r.to_string()))
            .collect();
        let targets: Vec<Target> = (0..spec.targets)
            .map(|t| {
                let b = t % spec.branches;
                Target {
                    name: format!("t{t:02}"),
                    repo: b % spec.repos,
                    branch: format!("b{b:02}"),
                    folder: format!("t{t:02}"),
                }
            })
            .collect();
        let identity = age::x25519::Identity::generate();
        let canaries = targets
            .iter()
            .map(|t: &Target| {
                (t.name.clone(), format!("canary-{}-{}", t.name, super::super::unique_name("token")))
            })
            .collect();
        let fleet = Self { env, client, ns, repos, targets, git, mirrors, identity, canaries };
        fleet.apply_objects(spec.objects).await;
        fleet
    }

    pub fn namespace(&self) -> &str {
        &self.ns.name
    }

    async fn apply_objects(&self, objects: usize) {
        let ns = self.namespace();
        for (r, repo) in self.repos.iter().enumerate() {
            let name = format!("git-{r}");
            fixtures::git_secret(&self.client, self.env, ns, &name, &Access::Ssh { read_only: false }).await;
            let push = json!({"interval": format!("{}s", PUSH_INTERVAL.as_secs())});
            fixtures::provider(&self.client, ns, &name, &repo.ssh_url, &name, push).await;
        }
        let mut manifests: Vec<Value> = Vec::new();
        let recipient = self.identity.to_public().to_string();
        for t in &self.targets {
            manifests.push(json!({
                "apiVersion": "configbutler.ai/v1alpha1", "kind": "GitTarget",
                "metadata": {"name": t.name, "namespace": ns},
                "spec": {"providerRef": {"name": format!("git-{}", t.repo)}, "branch": t.branch, "baseFolder": t.folder,
                         "encryption": {"provider": "sops", "age": {"recipients": [recipient]}}},
            }));
            let mine = json!({"matchLabels": {LABEL: t.name}});
            manifests.push(json!({
                "apiVersion": "configbutler.ai/v1alpha1", "kind": "WatchRule",
                "metadata": {"name": t.name, "namespace": ns},
                "spec": {"sinkRef": {"name": t.name},
                         "rules": [{"resources": ["configmaps", "secrets"], "labelSelector": mine}]},
            }));
            // Every chaos test carries a Secret through its faults: sealed,
            // never churned, never leaked (issue 17, acceptances 2 and 3).
            manifests.push(json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": format!("{}-canary", t.name), "namespace": ns, "labels": {LABEL: t.name}},
                "stringData": {"token": self.canaries[&t.name]},
            }));
            for k in 0..objects {
                manifests.push(configmap_manifest(
                    ns,
                    &format!("{}-{k}", t.name),
                    &t.name,
                    &json!({"v": "initial"}),
                ));
            }
        }
        for chunk in manifests.chunks(16) {
            join_all(chunk.iter().map(|m| fixtures::apply(&self.client, ns, m.clone()))).await;
        }
    }

    /// The ConfigMaps that exist before the load, by name → target.
    pub fn initial_objects(&self, objects: usize) -> Vec<(String, String)> {
        self.targets
            .iter()
            .flat_map(|t| (0..objects).map(move |k| (format!("{}-{k}", t.name), t.name.clone())))
            .collect()
    }

    pub fn target_names(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.name.clone()).collect()
    }

    /// Every (repo index, branch) the fleet writes to.
    pub fn branches(&self) -> BTreeSet<(usize, String)> {
        self.targets.iter().map(|t| (t.repo, t.branch.clone())).collect()
    }

    pub fn shard_of(&self, repo: usize, branch: &str, shards: u32) -> u32 {
        gitops_reverser::shard::hash::shard_of(&BranchKey::new(&self.repos[repo].ssh_url, branch), shards)
    }

    /// The branches whose shard `holders` gives to `replica`.
    pub fn branches_of(&self, holders: &[Option<String>], replica: &str) -> Vec<(usize, String)> {
        self.branches()
            .into_iter()
            .filter(|(repo, branch)| {
                holders[self.shard_of(*repo, branch, holders.len() as u32) as usize].as_deref()
                    == Some(replica)
            })
            .collect()
    }

    /// The repository's name on the server.
    pub fn repo_name(&self, repo: usize) -> String {
        let url = &self.repos[repo].ssh_url;
        url.rsplit('/').next().unwrap().trim_end_matches(".git").to_owned()
    }

    pub fn repo_index(&self, name: &str) -> usize {
        (0..self.repos.len()).find(|&r| self.repo_name(r) == name).expect("a repository of this fleet")
    }

    /// Every push to the fleet's repositories at or after `since_ns`, with
    /// the replica that made it (from the pushed commit's trailer).
    pub fn pushes(&self, since_ns: i128) -> Vec<Push> {
        let names: BTreeSet<String> = (0..self.repos.len()).map(|r| self.repo_name(r)).collect();
        let mut all: Vec<Push> =
            pushes::read(self.env, &names).into_iter().filter(|p| p.at_ns >= since_ns).collect();
        for (r, mirror) in self.mirrors.iter().enumerate() {
            let name = self.repo_name(r);
            let wanted: Vec<&str> = all.iter().filter(|p| p.repo == name).map(|p| p.new.as_str()).collect();
            if wanted.is_empty() {
                continue;
            }
            mirror.fetch(&self.git);
            let who = mirror.replicas_of(&self.git, wanted);
            for push in all.iter_mut().filter(|p| p.repo == name) {
                push.replica = who.get(&push.new).cloned().flatten();
            }
        }
        all
    }

    /// The target with this name.
    pub fn target(&self, name: &str) -> &Target {
        self.targets.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no target {name}"))
    }

    /// The file that records ConfigMap `name` of `target`, by full path on
    /// its branch: the operator's own sanitizer decides, as in [`Self::expected`].
    pub fn object_path(&self, name: &str, target: &str) -> String {
        let manifest = configmap_manifest(self.namespace(), name, target, &json!({}));
        let sanitized = sanitize(&manifest, &configmap_ref()).expect("sanitize a fleet ConfigMap");
        join_base(&normalize_base_folder(&self.target(target).folder), &sanitized.path)
    }

    /// The full history of every branch of the fleet (fetched now): every
    /// value each file held in some commit.
    pub fn history(&self) -> BTreeMap<(usize, String), History> {
        for mirror in &self.mirrors {
            mirror.fetch(&self.git);
        }
        self.branches()
            .into_iter()
            .map(|(repo, branch)| {
                let history = self.mirrors[repo].history(&self.git, &branch).unwrap_or_default();
                ((repo, branch), history)
            })
            .collect()
    }

    /// What every target's folder must hold: the sanitized live ConfigMaps
    /// labelled for it, by full path.
    pub async fn expected(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "ConfigMap"), "configmaps");
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), self.namespace(), &resource);
        let list = api.list(&ListParams::default().labels(LABEL)).await.expect("list the ConfigMaps");
        let rref = configmap_ref();
        let mut expected: BTreeMap<String, BTreeMap<String, String>> =
            self.targets.iter().map(|t| (t.name.clone(), BTreeMap::new())).collect();
        for object in list.items {
            let owner =
                object.metadata.labels.as_ref().and_then(|l| l.get(LABEL)).cloned().unwrap_or_default();
            let Some(target) = self.targets.iter().find(|t| t.name == owner) else { continue };
            let mut value = serde_json::to_value(&object).unwrap();
            // List items carry no type; the watch events the operator sees do.
            value["apiVersion"] = json!("v1");
            value["kind"] = json!("ConfigMap");
            let sanitized = sanitize(&value, &rref).unwrap();
            let path = join_base(&normalize_base_folder(&target.folder), &sanitized.path);
            expected.get_mut(&target.name).unwrap().insert(path, String::from_utf8(sanitized.yaml).unwrap());
        }
        expected
    }

    /// What every target's folder holds on the remote now.
    pub fn actual(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        for mirror in &self.mirrors {
            mirror.fetch(&self.git);
        }
        let mut by_branch: BTreeMap<(usize, String), BTreeMap<String, String>> = BTreeMap::new();
        for (repo, branch) in self.branches() {
            let files = self.mirrors[repo].files(&self.git, &branch).unwrap_or_default();
            by_branch.insert((repo, branch), files);
        }
        self.targets
            .iter()
            .map(|t| {
                let prefix = format!("{}/", t.folder);
                let files = by_branch[&(t.repo, t.branch.clone())]
                    .iter()
                    .filter(|(path, _)| path.starts_with(&prefix) && !path.ends_with(".sops.yaml"))
                    .map(|(p, c)| (p.clone(), c.clone()))
                    .collect();
                (t.name.clone(), files)
            })
            .collect()
    }

    /// The status of each of `targets` (its conditions and worker), one line each.
    async fn statuses(&self, targets: &[&String]) -> String {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("configbutler.ai", "v1alpha1", "GitTarget"),
            "gittargets",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), self.namespace(), &resource);
        let mut lines = Vec::new();
        for name in targets {
            let status = match api.get(name).await {
                Ok(target) => target.data.get("status").cloned().unwrap_or(Value::Null).to_string(),
                Err(error) => format!("unreadable: {error}"),
            };
            lines.push(format!("{name}: {status}"));
        }
        lines.join("\n")
    }

    /// Acceptance 8: waits until, for every target, the files under its
    /// folder equal the sanitized live objects byte for byte. Returns the
    /// number of files compared; panics with the differences at the deadline.
    pub async fn wait_converged(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let expected = self.expected().await;
            let actual = self.actual();
            if expected == actual {
                return expected.values().map(BTreeMap::len).sum();
            }
            if Instant::now() >= deadline {
                let differing: Vec<&String> = expected
                    .iter()
                    .filter(|(name, files)| actual.get(*name) != Some(*files))
                    .map(|(n, _)| n)
                    .collect();
                panic!(
                    "after {timeout:?} the remote still differs from the cluster:\n{}\nwhat those targets say:\n{}",
                    diff(&expected, &actual),
                    self.statuses(&differing).await
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Fleet {
    /// The sealed file of target `t`'s canary Secret, by full path.
    pub fn canary_path(&self, target: &str) -> String {
        let t = self.target(target);
        format!(
            "{}/{}/core/secrets/{target}-canary.sops.yaml",
            normalize_base_folder(&t.folder),
            self.namespace()
        )
    }

    /// Issue 17 through the faults of a chaos test, once it has converged:
    /// every target's canary Secret is on its branch, sealed, the real
    /// `sops` decrypts it to the live token, and exactly one commit ever
    /// touched it (a failover, restart or resync of an unchanged Secret
    /// commits nothing); and no token, nor the age key or the cluster's
    /// digest key, is in any object of any repository, any replica's log,
    /// or any status or Event of the namespace. Returns the Secrets checked.
    pub async fn assert_secrets_sealed_unchurned_unleaked(&self, logs: &BTreeMap<String, String>) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for mirror in &self.mirrors {
                mirror.fetch(&self.git);
            }
            let missing: Vec<String> = self
                .targets
                .iter()
                .map(|t| (t, self.canary_path(&t.name)))
                .filter(|(t, path)| {
                    !self.mirrors[t.repo].files(&self.git, &t.branch).unwrap_or_default().contains_key(path)
                })
                .map(|(_, path)| path)
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "sealed canaries missing after 60 s: {missing:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut churned = Vec::new();
        for t in &self.targets {
            let path = self.canary_path(&t.name);
            let files = self.mirrors[t.repo].files(&self.git, &t.branch).unwrap_or_default();
            let file = files.get(&path).unwrap_or_else(|| panic!("{}: no sealed canary {path}", t.name));
            assert!(file.contains("ENC[AES256_GCM,"), "{path} is not sealed:\n{file}");
            let data = super::super::sops::decrypted_data(file.as_bytes(), &self.identity);
            let token = base64_decode(data["token"].as_str().unwrap_or_default());
            assert_eq!(token, self.canaries[&t.name], "{path} decrypts to another token");
            let commits = self.mirrors[t.repo].commits_touching(&self.git, &t.branch, &path);
            if commits.len() != 1 {
                churned.push(format!("{path}: {} commits {commits:?}", commits.len()));
            }
        }
        assert!(churned.is_empty(), "unchanged Secrets were committed again:\n{}", churned.join("\n"));

        let digest_key: k8s_openapi::api::core::v1::Secret =
            Api::namespaced(self.client.clone(), self.namespace()).get(DIGEST_KEY_SECRET).await.unwrap();
        let digest_key = digest_key.data.unwrap()["digest.key"].0.clone();
        let mut scan = super::super::leaks::LeakScan::new()
            .value(
                "the age private key",
                age::secrecy::ExposeSecret::expose_secret(&self.identity.to_string()).as_bytes(),
            )
            .value("the digest key", &digest_key);
        for (target, token) in &self.canaries {
            scan = scan.value(&format!("{target}'s canary token"), token.as_bytes());
        }
        for (r, mirror) in self.mirrors.iter().enumerate() {
            scan.repository(&self.git, mirror.dir(), &self.repo_name(r));
        }
        for (replica, log) in logs {
            scan.text(&format!("the log of {replica}"), log.as_bytes());
        }
        scan.namespace(&self.client, self.namespace()).await;
        scan.assert_clean();
        self.targets.len()
    }
}

/// The digest key Secret the fleet's replicas make (`--digest-key-secret`
/// default, in the Lease namespace, which is the fleet's).
pub const DIGEST_KEY_SECRET: &str = "gitops-reverser-sops-digest";

fn base64_decode(text: &str) -> String {
    use base64::Engine;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default())
        .unwrap_or_default()
}

fn configmap_ref() -> ResourceRef {
    ResourceRef {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
        namespaced: true,
    }
}

/// The ConfigMap a fleet target records.
pub fn configmap_manifest(ns: &str, name: &str, target: &str, data: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": ns, "labels": {LABEL: target}}, "data": data})
}

/// Per differing target: missing, extra and changed paths (a few of each).
fn diff(
    expected: &BTreeMap<String, BTreeMap<String, String>>,
    actual: &BTreeMap<String, BTreeMap<String, String>>,
) -> String {
    let empty = BTreeMap::new();
    let mut lines = Vec::new();
    for (target, want) in expected {
        let have = actual.get(target).unwrap_or(&empty);
        let missing: Vec<&String> = want.keys().filter(|p| !have.contains_key(*p)).collect();
        let extra: Vec<&String> = have.keys().filter(|p| !want.contains_key(*p)).collect();
        let changed: Vec<&String> =
            want.iter().filter(|(p, c)| have.get(*p).is_some_and(|h| h != *c)).map(|(p, _)| p).collect();
        if missing.is_empty() && extra.is_empty() && changed.is_empty() {
            continue;
        }
        lines.push(format!(
            "{target}: missing {} {:?}, extra {} {:?}, changed {} {:?}",
            missing.len(),
            missing.iter().take(3).collect::<Vec<_>>(),
            extra.len(),
            extra.iter().take(3).collect::<Vec<_>>(),
            changed.len(),
            changed.iter().take(3).collect::<Vec<_>>(),
        ));
    }
    lines.join("\n")
}
