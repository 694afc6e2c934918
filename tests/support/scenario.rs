//! One write-path scenario: a namespace, a repository, the objects that
//! connect them, and the operator; with waits on the branch and on status.

use std::time::Duration;

use serde_json::{Value, json};

use super::fixtures::{self, Access};
use super::git::{Auth, BranchView, GitClient};
use super::operator::Operator;
use super::{Env, Repo, TestNamespace, wait_for};

pub const WAIT: Duration = Duration::from_secs(60);

pub struct Scenario {
    pub env: &'static Env,
    pub client: kube::Client,
    pub ns: TestNamespace,
    pub repo: Repo,
    pub git: GitClient,
}

impl Scenario {
    pub async fn new(prefix: &str) -> Self {
        let env = super::env();
        let client = env.client().await;
        fixtures::install_crds(&client).await;
        let ns = TestNamespace::create(&client, prefix).await;
        let repo = env.new_repo(prefix);
        Self { env, client, ns, repo, git: GitClient::new(Auth::ssh_rw(env)) }
    }

    pub fn namespace(&self) -> &str {
        &self.ns.name
    }

    /// Secret + GitProvider named `name` for this repo over SSH (read-write).
    pub async fn ssh_provider(&self, name: &str, push: Value) {
        self.provider(name, &self.repo.ssh_url.clone(), &Access::Ssh { read_only: false }, push).await;
    }

    /// Secret + GitProvider named `name` for `url` with `access`.
    pub async fn provider(&self, name: &str, url: &str, access: &Access, push: Value) {
        fixtures::git_secret(&self.client, self.env, self.namespace(), name, access).await;
        fixtures::provider(&self.client, self.namespace(), name, url, name, push).await;
    }

    pub async fn target(&self, name: &str, provider: &str, branch: &str, folder: &str) {
        fixtures::target(&self.client, self.namespace(), name, json!({"name": provider}), branch, folder)
            .await;
    }

    pub async fn rule(&self, name: &str, target: &str, rules: Value) {
        fixtures::watch_rule(&self.client, self.namespace(), name, target, rules).await;
    }

    pub async fn configmap(&self, name: &str, data: Value) {
        fixtures::configmap(&self.client, self.namespace(), name, data).await;
    }

    /// A ConfigMap with `labels` and `data`.
    pub async fn labelled_configmap(&self, name: &str, labels: Value, data: Value) {
        let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": self.namespace(), "labels": labels}, "data": data});
        fixtures::apply(&self.client, self.namespace(), manifest).await;
    }

    pub fn operator(&self) -> Operator {
        Operator::start(self.env, self.namespace())
    }

    /// The operator with `extra` flags.
    pub fn operator_with(&self, extra: &[&str]) -> Operator {
        Operator::start_with(self.env, self.namespace(), extra)
    }

    /// Starts the operator and waits until its first list of the watched
    /// objects is complete, so later changes arrive as live events (one
    /// commit each) rather than in the initial sync commit.
    pub async fn operator_synced(&self) -> Operator {
        let operator = self.operator();
        operator.wait_log("initial list complete").await;
        operator
    }

    pub fn branch(&self, branch: &str) -> Option<BranchView> {
        self.git.read_branch(&self.repo.ssh_url, branch)
    }

    /// Waits until the branch satisfies `check`.
    pub async fn wait_branch(
        &self,
        what: &str,
        branch: &str,
        check: impl Fn(&BranchView) -> bool,
    ) -> BranchView {
        wait_for(what, WAIT, || async { self.branch(branch).filter(|view| check(view)) }).await
    }

    /// Waits until condition `type_` of GitTarget `target` satisfies `check`;
    /// returns (status, reason, message).
    pub async fn wait_condition(
        &self,
        target: &str,
        type_: &str,
        check: impl Fn(&(String, String, String)) -> bool,
    ) -> (String, String, String) {
        wait_for(&format!("{type_} of GitTarget {target}"), WAIT, || async {
            fixtures::condition(&self.client, self.namespace(), target, type_).await.filter(|c| check(c))
        })
        .await
    }

    /// Path of an object file below `folder` for a core-group resource.
    pub fn core_path(&self, folder: &str, plural: &str, name: &str) -> String {
        let prefix = if folder.is_empty() { String::new() } else { format!("{folder}/") };
        format!("{prefix}{}/core/{plural}/{name}.yaml", self.namespace())
    }

    /// The repository's name on the server.
    pub fn repo_name(&self) -> String {
        self.repo.ssh_url.rsplit('/').next().unwrap().trim_end_matches(".git").to_owned()
    }

    /// A JWT for this repository, signed by soft-serve for the rw user: it
    /// accepts it as a bearer token.
    pub fn mint_jwt(&self) -> String {
        let output = std::process::Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes"])
            .args(["-o", "BatchMode=yes", "-i", self.env.var("GITENV_SSH_KEY_RW"), "-o"])
            .arg(format!("UserKnownHostsFile={}", self.env.var("GITENV_KNOWN_HOSTS")))
            .args(["-p", self.env.var("GITENV_SSH_PORT"), "127.0.0.1", "jwt", &self.repo_name()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Pushes the server logged for this repository: (user, ref, old, new).
    pub fn pushes(&self) -> Vec<(String, String, String, String)> {
        let log = std::fs::read_to_string(self.env.var("GITENV_PUSHLOG")).unwrap_or_default();
        let name = self.repo_name();
        log.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() >= 7 && f[1] == name)
                    .then(|| (f[2].to_owned(), f[4].to_owned(), f[5].to_owned(), f[6].to_owned()))
            })
            .collect()
    }
}

impl Scenario {
    /// What the target's folder must hold for `plural` (a core resource):
    /// every live object of this namespace, sanitized, by path.
    pub async fn expected_core_files(
        &self,
        folder: &str,
        plural: &str,
        kind: &str,
    ) -> std::collections::BTreeMap<String, String> {
        use gitops_reverser::sanitize::{ResourceRef, join_base, normalize_base_folder, sanitize};
        use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), self.namespace(), &resource);
        let rref = ResourceRef {
            group: String::new(),
            version: "v1".into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced: true,
        };
        let base = normalize_base_folder(folder);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|object| {
                let sanitized = sanitize(&serde_json::to_value(object).unwrap(), &rref).unwrap();
                (join_base(&base, &sanitized.path), String::from_utf8(sanitized.yaml).unwrap())
            })
            .collect()
    }

    /// Waits until the files of `plural` below `folder` on `branch` equal
    /// the sanitized live objects, byte for byte.
    pub async fn wait_converged(&self, branch: &str, folder: &str, plural: &str, kind: &str) -> BranchView {
        let marker = format!("/core/{plural}/");
        wait_for(&format!("{branch} to equal the live {plural}"), WAIT, || async {
            let expected = self.expected_core_files(folder, plural, kind).await;
            let view = self.branch(branch)?;
            let actual: std::collections::BTreeMap<String, String> = view
                .files
                .iter()
                .filter(|(p, _)| p.contains(&marker))
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect();
            (actual == expected).then_some(view)
        })
        .await
    }
}
