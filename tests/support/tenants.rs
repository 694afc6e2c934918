//! Tenants of one cluster for the hostile-tenant suite (issue 16): each a
//! namespace, a repository, credentials, a GitProvider, a GitTarget and a
//! WatchRule of its own; a steady trickle of changes per tenant and the lag
//! of each change (API write → its commit on the remote branch, from the
//! git server's push log); the leak checks; and the small hostile servers
//! (silent, redirecting, trap, switchable proxy).

use std::collections::BTreeMap;
use std::io::{Read, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::{Value, json};

use super::fixtures::{self, Access};
use super::git::{Auth, GitClient};
use super::replicas::now_ns;
use super::{Env, Repo, TestNamespace};

/// The label every tenant's rule selects its ConfigMaps by.
pub const LABEL: &str = "tenant";

/// One tenant. Every name is prefixed with the tenant's letter, so a leak of
/// one into another tenant's status or repository is found by searching.
pub struct Tenant {
    pub letter: &'static str,
    pub ns: TestNamespace,
    pub repo: Repo,
    pub branch: String,
    pub folder: String,
    /// The target encrypts its Secrets for this key (issue 17).
    pub identity: age::x25519::Identity,
    /// The token of Secret `canary-X`, which no other tenant, log, status
    /// or Event may ever show.
    pub canary: String,
}

impl Tenant {
    pub async fn create(client: &kube::Client, env: &Env, letter: &'static str) -> Self {
        let ns = TestNamespace::create(client, &format!("tenant-{letter}")).await;
        let repo = env.new_repo(&format!("tenant-{letter}"));
        Self {
            letter,
            ns,
            repo,
            branch: format!("audit-{letter}"),
            folder: format!("tenants/{letter}"),
            identity: age::x25519::Identity::generate(),
            canary: super::unique_name(&format!("canary-token-{letter}")),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.ns.name
    }

    pub fn name(&self, what: &str) -> String {
        format!("{what}-{}", self.letter)
    }

    /// Secret `keys-X`, GitProvider `forge-X` (SSH, read-write, push every
    /// second), GitTarget `ledger-X` (encrypting Secrets for the tenant's age
    /// key) and WatchRule `picks-X` for the ConfigMaps and Secrets labelled
    /// `tenant=X`, and Secret `canary-X`.
    pub async fn install(&self, client: &kube::Client, env: &Env) {
        let ns = self.namespace();
        let (secret, provider, target, rule) =
            (self.name("keys"), self.name("forge"), self.name("ledger"), self.name("picks"));
        fixtures::git_secret(client, env, ns, &secret, &Access::Ssh { read_only: false }).await;
        fixtures::provider(client, ns, &provider, &self.repo.ssh_url, &secret, json!({"interval": "1s"}))
            .await;
        let recipient = self.identity.to_public().to_string();
        let manifest = json!({
            "apiVersion": "configbutler.ai/v1alpha1", "kind": "GitTarget",
            "metadata": {"name": target, "namespace": ns},
            "spec": {"providerRef": {"name": provider}, "branch": self.branch, "baseFolder": self.folder,
                     "encryption": {"provider": "sops", "age": {"recipients": [recipient]}}},
        });
        fixtures::apply(client, ns, manifest).await;
        let mine = json!({"matchLabels": {LABEL: self.letter}});
        fixtures::watch_rule(
            client,
            ns,
            &rule,
            &target,
            json!([{"resources": ["configmaps", "secrets"], "labelSelector": mine}]),
        )
        .await;
        let canary = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": self.name("canary"), "namespace": ns, "labels": {LABEL: self.letter}},
            "stringData": {"token": self.canary},
        });
        fixtures::apply(client, ns, canary).await;
    }

    /// The sealed canary on the tenant's branch decrypts (real `sops`) to
    /// its token; a problem otherwise.
    pub fn canary_problem(&self, env: &Env) -> Option<String> {
        let git = GitClient::new(Auth::ssh_rw(env));
        let view = git.read_branch(&self.repo.ssh_url, &self.branch)?;
        let path =
            format!("{}/{}/core/secrets/{}.sops.yaml", self.folder, self.namespace(), self.name("canary"));
        let Some(file) = view.files.get(&path) else {
            return Some(format!("{}: no sealed canary {path}", self.letter));
        };
        let data = super::sops::decrypted_data(file.as_bytes(), &self.identity);
        let token = data["token"].as_str().map(|t| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(t).unwrap_or_default()
        });
        (token.as_deref() != Some(self.canary.as_bytes()))
            .then(|| format!("{}: {path} decrypts to another token", self.letter))
    }

    /// What no other tenant may ever see of this one: its namespace, the
    /// names of its objects, its repository's name and its branch.
    pub fn secrets_of_identity(&self) -> Vec<String> {
        let repo_name = self.repo.ssh_url.rsplit('/').next().unwrap().trim_end_matches(".git").to_owned();
        let mut needles = vec![self.ns.name.clone(), repo_name, self.branch.clone()];
        for what in ["keys", "forge", "ledger", "picks", "pulse"] {
            needles.push(self.name(what));
        }
        needles
    }
}

/// One change of the trickle: its sequence number and when the API server
/// had accepted it (unix ns).
#[derive(Clone, Copy, Debug)]
pub struct Write {
    pub seq: u64,
    pub at_ns: i128,
}

/// A background task that updates ConfigMap `pulse-X` of a tenant every
/// `period`, with `data.v = "nSEQ"`, and records when each write was accepted.
pub struct Trickle {
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Vec<Write>>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Trickle {
    pub fn start(client: &kube::Client, tenant: &Tenant, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), tenant.namespace());
        let (ns, name, letter) = (tenant.namespace().to_owned(), tenant.name("pulse"), tenant.letter);
        let (flag, record) = (stop.clone(), writes.clone());
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                seq += 1;
                let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns, "labels": {LABEL: letter}},
                    "data": {"v": format!("n{seq}")}});
                let params = PatchParams::apply("hostile-trickle").force();
                // A write the API server refused is not a change: no sample.
                if api.patch(&name, &params, &Patch::Apply(&manifest)).await.is_ok() {
                    record.lock().unwrap().push(Write { seq, at_ns: now_ns() });
                }
            }
        });
        Self { stop, writes, handle: Some(handle) }
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.writes.lock().unwrap().len()
    }

    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

/// Reads what a tenant's branch had at each push: a bare mirror of its
/// repository, the push log's lines for its branch, and the trickle's
/// value in each pushed commit.
pub struct LagProbe {
    git: GitClient,
    dir: PathBuf,
    url: String,
    repo_name: String,
    branch: String,
    file_suffix: String,
}

impl LagProbe {
    pub fn new(env: &Env, tenant: &Tenant) -> Self {
        let git = GitClient::new(Auth::ssh_rw(env));
        let dir = git.workdir("mirror");
        git.ok(&dir, &["init", "--quiet", "--bare"]);
        Self {
            git,
            dir,
            url: tenant.repo.ssh_url.clone(),
            repo_name: tenant.repo.ssh_url.rsplit('/').next().unwrap().trim_end_matches(".git").to_owned(),
            branch: tenant.branch.clone(),
            file_suffix: format!("/configmaps/{}.yaml", tenant.name("pulse")),
        }
    }

    /// (push time, highest trickle sequence on the branch from then on), in
    /// push order: a write is on the remote from the first push whose
    /// sequence is at least its own (the trickle only counts up).
    pub fn pushed(&self, env: &Env) -> Vec<(i128, u64)> {
        let log = std::fs::read_to_string(env.var("GITENV_PUSHLOG")).unwrap_or_default();
        let wanted_ref = format!("refs/heads/{}", self.branch);
        let mut pushes: Vec<(i128, String)> = log
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() >= 7 && f[1] == self.repo_name && f[4] == wanted_ref)
                    .then(|| Some((parse_log_time(f[0])?, f[6].to_owned())))
                    .flatten()
            })
            .collect();
        pushes.sort();
        if pushes.is_empty() {
            return Vec::new();
        }
        // Every pushed commit is an ancestor of the tip (the operator only fast-forwards).
        self.git.ok(&self.dir, &["fetch", "--quiet", "--force", &self.url, "+refs/heads/*:refs/heads/*"]);
        let tip = format!("refs/heads/{}", self.branch);
        let listed = self.git.ok(&self.dir, &["ls-tree", "-r", "--name-only", &tip]);
        let Some(path) = listed.lines().find(|p| p.ends_with(&self.file_suffix)).map(str::to_owned) else {
            return Vec::new();
        };
        let input: String = pushes.iter().map(|(_, sha)| format!("{sha}:{path}\n")).collect();
        let output = self.git.run_input(&self.dir, &["cat-file", "--batch"], input.as_bytes());
        let seqs = parse_batch(&output.stdout);
        let mut highest = 0u64;
        pushes
            .iter()
            .zip(seqs)
            .map(|((at, _), seq)| {
                highest = highest.max(seq.unwrap_or(0));
                (*at, highest)
            })
            .collect()
    }
}

/// The lag of each write: from its acceptance to the first push that
/// carried it (None: not pushed yet).
pub fn lags(writes: &[Write], pushed: &[(i128, u64)]) -> Vec<(Write, Option<Duration>)> {
    writes
        .iter()
        .map(|w| {
            let at = pushed.iter().find(|(_, seq)| *seq >= w.seq).map(|(at, _)| *at);
            (*w, at.map(|at| Duration::from_nanos((at - w.at_ns).max(0) as u64)))
        })
        .collect()
}

fn parse_log_time(field: &str) -> Option<i128> {
    let (secs, nanos) = field.split_once('.').unwrap_or((field, "0"));
    Some(secs.parse::<i128>().ok()? * 1_000_000_000 + format!("{nanos:0<9}")[..9].parse::<i128>().ok()?)
}

/// The trickle's sequence in each object of a `cat-file --batch` answer.
fn parse_batch(mut out: &[u8]) -> Vec<Option<u64>> {
    let mut seqs = Vec::new();
    while let Some(newline) = out.iter().position(|&b| b == b'\n') {
        let header = String::from_utf8_lossy(&out[..newline]).into_owned();
        out = &out[newline + 1..];
        let fields: Vec<&str> = header.split_whitespace().collect();
        if fields.len() != 3 {
            seqs.push(None); // "<name> missing"
            continue;
        }
        let size: usize = fields[2].parse().unwrap_or(0);
        let body = String::from_utf8_lossy(&out[..size.min(out.len())]).into_owned();
        out = &out[(size + 1).min(out.len())..];
        seqs.push(sequence_in(&body));
    }
    seqs
}

/// `nSEQ` of the `v:` line of a trickle file.
fn sequence_in(yaml: &str) -> Option<u64> {
    yaml.lines().find_map(|line| {
        let value = line.trim().strip_prefix("v:")?.trim().trim_matches(|c| c == '"' || c == '\'');
        value.strip_prefix('n')?.parse().ok()
    })
}

/// Median and 95th percentile (nearest rank); zeros when empty.
pub fn median_p95(samples: &[Duration]) -> (Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2 };
    let rank = ((n as f64) * 0.95).ceil() as usize;
    (median, sorted[rank.clamp(1, n) - 1])
}

/// Every text the operator showed tenant `ns` about the objects named
/// `names`: the conditions of its GitTargets, GitProviders and WatchRules,
/// and the Events in its namespace about them (an Event about an earlier
/// attack's object may still arrive after that attack).
pub async fn texts_shown_to(client: &kube::Client, ns: &str, names: &[String]) -> Vec<String> {
    let mut texts = Vec::new();
    for kind in ["GitTarget", "GitProvider", "WatchRule"] {
        let resource =
            ApiResource::from_gvk(&GroupVersionKind::gvk(gitops_reverser::api::GROUP, "v1alpha1", kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
        for object in api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
            let name = object.metadata.name.unwrap_or_default();
            if let Some(status) = object.data.get("status").filter(|_| names.contains(&name)) {
                texts.push(format!("{kind} {name}: {status}"));
            }
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    for event in events.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        if !event.involved_object.name.as_ref().is_some_and(|n| names.contains(n)) {
            continue;
        }
        texts.push(format!(
            "Event {} {}: {}",
            event.reason.unwrap_or_default(),
            event.involved_object.name.unwrap_or_default(),
            event.message.unwrap_or_default()
        ));
    }
    texts
}

/// The needles found in `texts`: (needle, text).
pub fn leaks<'a>(texts: &'a [String], needles: &'a [String]) -> Vec<(&'a str, &'a str)> {
    let mut found = Vec::new();
    for text in texts {
        for needle in needles {
            if text.contains(needle.as_str()) {
                found.push((needle.as_str(), text.as_str()));
            }
        }
    }
    found
}

/// Everything ever pushed to `url`: every branch's commits, their
/// messages, paths and contents (`git log --all -p`), for the leak check.
pub fn whole_history(env: &Env, url: &str) -> String {
    let git = GitClient::new(Auth::ssh_rw(env));
    let dir = git.workdir("history");
    git.ok(&dir, &["init", "--quiet", "--bare"]);
    let fetched = git.run(&dir, &["fetch", "--quiet", url, "+refs/heads/*:refs/heads/*"]);
    assert!(fetched.status.success(), "fetch {url}: {}", super::git::stderr(&fetched));
    let refs = git.ok(&dir, &["for-each-ref", "--format=%(refname)"]);
    let mut all = refs.clone();
    if !refs.trim().is_empty() {
        // A's own tree bomb is left out: its one commit lists 10^10 paths.
        all.push_str(&git.ok(&dir, &["log", "--exclude=refs/heads/bomb", "--all", "-p", "--format=%H%n%B"]));
    }
    all
}

/// Deletes every object of tenant `ns` that an attack may have made, and
/// waits until the operator's kinds are gone.
pub async fn clear_namespace(client: &kube::Client, ns: &str) {
    let gvk = |group: &str, version: &str, kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    };
    let group = gitops_reverser::api::GROUP;
    let kinds = [
        gvk(group, "v1alpha1", "WatchRule", "watchrules"),
        gvk(group, "v1alpha1", "GitTarget", "gittargets"),
        gvk(group, "v1alpha1", "GitProvider", "gitproviders"),
        gvk("", "v1", "Secret", "secrets"),
        gvk("", "v1", "Event", "events"),
        gvk("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        gvk("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    ];
    for resource in &kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete the {} of {ns}: {e}", resource.plural));
    }
    let accounts: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &gvk("", "v1", "ServiceAccount", "serviceaccounts"));
    let _ = accounts
        .delete_collection(&DeleteParams::default(), &ListParams::default().fields("metadata.name!=default"))
        .await;
    for resource in &kinds[..3] {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
        super::wait_for(
            &format!("the {} of {ns} to be gone", resource.plural),
            Duration::from_secs(60),
            || async {
                api.list(&ListParams::default()).await.ok().filter(|l| l.items.is_empty()).map(|_| ())
            },
        )
        .await;
    }
}

/// A TCP server that accepts every connection and never answers: the
/// hostile git server that hangs (a TLS or SSH handshake that never comes).
pub struct SilentServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl SilentServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    count.fetch_add(1, Ordering::Relaxed);
                    held.push(stream); // open, unread, unanswered
                }
            }
        });
        Self { addr, stop, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// A plain-HTTP server that answers every request with `code` and a
/// `Location` of `location` + the request's path below the first
/// `.git`, and records each request line and whether it carried an
/// `Authorization` header.
pub struct Redirector {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<(String, bool)>>>,
    stop: Arc<AtomicBool>,
}

impl Redirector {
    pub fn start(code: u16, location: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag, location) = (requests.clone(), stop.clone(), location.to_owned());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let head = read_head(&mut stream);
                let line = head.lines().next().unwrap_or_default().to_owned();
                let authorized = head.lines().any(|l| l.to_ascii_lowercase().starts_with("authorization:"));
                let path = line.split_whitespace().nth(1).unwrap_or("/");
                let rest = path.split_once(".git").map_or(path, |(_, rest)| rest);
                log.lock().unwrap().push((line.clone(), authorized));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} Moved\r\nLocation: {location}{rest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Self { addr, requests, stop }
    }

    pub fn requests(&self) -> Vec<(String, bool)> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn read_head(stream: &mut TcpStream) -> String {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A TCP proxy to `upstream` that can be switched to swallow everything:
/// open connections are cut and new ones are accepted and never answered,
/// as a git server that hangs after it once worked.
pub struct Proxy {
    pub addr: SocketAddr,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (quiet, flag, streams) = (silent.clone(), stop.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                if quiet.load(Ordering::Relaxed) {
                    streams.lock().unwrap().push(client); // held, never answered
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                for stream in [&client, &server] {
                    if let Ok(copy) = stream.try_clone() {
                        streams.lock().unwrap().push(copy);
                    }
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Self { addr, silent, stop, open }
    }

    /// Cuts every open connection and answers no new one.
    pub fn go_silent(&self) {
        self.silent.store(true, Ordering::Relaxed);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.go_silent();
        let _ = TcpStream::connect(self.addr);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Creates `count` ConfigMaps `NAME-i` labelled `labels` in `ns`, `parallel`
/// requests at a time; returns how many the API server took.
pub async fn flood(
    client: &kube::Client,
    ns: &str,
    name: &str,
    labels: Value,
    count: usize,
    parallel: usize,
) -> usize {
    use futures::StreamExt;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let object: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-{i}"), "labels": labels},
                "data": {"i": i.to_string()}}))
            .unwrap();
            async move { api.create(&Default::default(), &object).await.is_ok() }
        })
        .buffer_unordered(parallel)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await
}

/// Per (attack, tenant): the lag samples of the writes made in the window.
pub type Samples = BTreeMap<(String, &'static str), Vec<Duration>>;

/// Pushes branch `branch` to `url`: a tree bomb, `depth` levels of trees of
/// ten entries each pointing at the same subtree, so a pack of a few KiB
/// holds 10^depth files.
pub fn push_tree_bomb(env: &Env, url: &str, branch: &str, depth: u32) {
    let git = GitClient::new(Auth::ssh_rw(env));
    let dir = git.workdir("bomb");
    git.ok(&dir, &["init", "--quiet", "--bare"]);
    let blob = git.run_input(&dir, &["hash-object", "-w", "--stdin"], b"boom\n");
    let mut entry = ("100644 blob", String::from_utf8_lossy(&blob.stdout).trim().to_owned());
    for _ in 0..=depth {
        let listing: String = (0..10).map(|k| format!("{} {}\tx{k}\n", entry.0, entry.1)).collect();
        let tree = git.run_input(&dir, &["mktree"], listing.as_bytes());
        assert!(tree.status.success(), "mktree: {}", super::git::stderr(&tree));
        entry = ("040000 tree", String::from_utf8_lossy(&tree.stdout).trim().to_owned());
    }
    let commit = git.ok(&dir, &["commit-tree", &entry.1, "-m", "tree bomb"]);
    git.ok(&dir, &["push", "--quiet", url, &format!("{}:refs/heads/{branch}", commit.trim())]);
}

/// A plain-HTTP git server (smart protocol v0) whose one branch comes in a
/// pack that never ends: a blob of 5 GiB, stored uncompressed, streamed
/// until the client hangs up.
pub struct HugePackServer {
    pub addr: SocketAddr,
    pub sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HugePackServer {
    pub const BLOB: u64 = 5 << 30;

    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, flag) = (sent.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let count = count.clone();
                std::thread::spawn(move || serve_huge_pack(stream, &count));
            }
        });
        Self { addr, sent, stop }
    }
}

impl Drop for HugePackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn pkt(line: &str) -> String {
    format!("{:04x}{line}", line.len() + 4)
}

fn serve_huge_pack(mut stream: TcpStream, sent: &AtomicUsize) {
    let head = read_head(&mut stream);
    let line = head.lines().next().unwrap_or_default().to_owned();
    let commit = "1".repeat(40);
    if line.starts_with("GET ") {
        let body = format!(
            "{}0000{}{}0000",
            pkt("# service=git-upload-pack\n"),
            pkt(&format!("{commit} HEAD\0ofs-delta\n")),
            pkt(&format!("{commit} refs/heads/main\n"))
        );
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nCache-Control: no-cache\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    // The wants: read and ignored; what comes back is the same whatever they say.
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0usize);
    let mut body = vec![0u8; length.min(1 << 20)];
    let _ = stream.read_exact(&mut body);
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-result\r\nConnection: close\r\n\r\n0008NAK\n"
    );
    let mut pack = b"PACK".to_vec();
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&1u32.to_be_bytes());
    // Object header: type blob (3), size as git's varint.
    let mut size = HugePackServer::BLOB;
    let mut byte = 0x30 | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        pack.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    pack.push(byte);
    pack.extend_from_slice(&[0x78, 0x01]); // zlib, then stored deflate blocks
    if stream.write_all(&pack).is_err() {
        return;
    }
    let mut block = vec![0u8; 5 + 65535];
    block[1..5].copy_from_slice(&[0xff, 0xff, 0x00, 0x00]); // not final, LEN 65535, NLEN
    let mut left = HugePackServer::BLOB;
    while left > 0 {
        if stream.write_all(&block).is_err() {
            return;
        }
        sent.fetch_add(block.len(), Ordering::Relaxed);
        left = left.saturating_sub(65535);
    }
}
