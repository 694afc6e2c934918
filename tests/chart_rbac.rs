//! The chart's RBAC is enough and no larger than needed: the operator runs
//! against the real API server as the chart's ServiceAccount, with exactly
//! the RBAC the chart renders, and the write path works; then, one test per
//! rule (of the ClusterRole and of the Lease Role), the same with that single
//! rule removed, and what breaks.
//!
//! Each test asserts its outcome on the real parts (the branch, the push
//! log, status, Events, Leases), and asserts absence only once the operator
//! demonstrably got past the point where it would have acted. The baseline
//! shows each of those outcomes present. `CHART_RBAC_WIDEN=1` keeps the rule
//! each test would remove: every test but the baselines (the one above and
//! the one with `rbac.secretNamespaces` listing the target's namespace) must
//! then fail (issue 20, acceptance 3). Two more tests render with
//! `rbac.secretNamespaces` (issue 16): Secrets are read where it says only.

mod support;

use std::path::PathBuf;
use std::process::Command;

use gitops_reverser::api::{GitProvider, GitTarget, WatchRule};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use support::chart::{self, run_ok};
use support::operator::Operator;
use support::scenario::{Scenario, WAIT};
use support::{ClusterObjectGuard, TestNamespace, fixtures, wait_for};

/// `helm` arguments that add Secrets to the chart's default watched kinds,
/// as a user whose GitTargets encrypt them does.
fn secrets_watched() -> Vec<String> {
    let values =
        std::fs::read_to_string(support::repo_root().join("charts/gitops-reverser/values.yaml")).unwrap();
    let values: Value = serde_saphyr::from_str(&values).unwrap();
    let mut kinds = values["rbac"]["watchedResources"].as_array().expect("default watched kinds").clone();
    kinds.push(json!({"apiGroups": [""], "resources": ["secrets"]}));
    vec!["--set-json".into(), format!("rbac.watchedResources={}", Value::Array(kinds))]
}

/// `without` this drops the rules of the digest key Role (both of them).
const DIGEST_KEY: &str = "digest-key";

/// A scenario whose operator acts as the chart's ServiceAccount.
struct AsChart {
    scenario: Scenario,
    operator: Operator,
    service_account: String,
    _kubeconfig: tempfile::TempDir,
    _guards: Vec<ClusterObjectGuard>,
}

/// Renders the chart's ServiceAccount and RBAC with the scenario's namespace
/// as the release namespace, drops the ClusterRole rule whose resources
/// include `without` (if any), applies them, and starts the operator with a
/// token of that ServiceAccount. The configuration objects, and a ConfigMap
/// `seed` that a working operator mirrors, are created before it starts.
async fn start(prefix: &str, without: Option<&str>) -> AsChart {
    start_with(prefix, without, |_| Vec::new()).await
}

/// `start`, rendering the chart with the `helm` arguments that `values`
/// returns for the scenario's namespace.
async fn start_with(
    prefix: &str,
    without: Option<&str>,
    values: impl FnOnce(&str) -> Vec<String>,
) -> AsChart {
    let tools = chart::tools();
    let scenario = Scenario::new(prefix).await;
    let ns = scenario.namespace().to_owned();
    scenario.ssh_provider("git", json!({"interval": "1s"})).await;
    scenario.target("audit", "git", "main", "clusters/test").await;
    scenario.rule("cms", "audit", json!([{"resources": ["configmaps"]}])).await;
    scenario.configmap("seed", json!({"seeded": "yes"})).await;
    // Acceptance 3 of issue 20: with the rule kept, the test must fail.
    let without = without.filter(|_| std::env::var_os("CHART_RBAC_WIDEN").is_none());

    // The namespace names the release, so cluster-scoped names are unique per test.
    let mut args = values(&ns);
    args.extend(
        ["--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"]
            .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let manifests = chart::render_release(tools, &ns, &ns, None, &args);
    let mut objects = as_json(&tools.kubectl, &manifests);
    let mut guards = Vec::new();
    let mut service_account = String::new();
    let mut removed = 0;
    for object in &mut objects {
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let kind = object["kind"].as_str().unwrap().to_owned();
        if let (Some(resource), "ClusterRole" | "Role") = (without, kind.as_str()) {
            // The digest key Role's rules go together, and only as DIGEST_KEY.
            let digest_role = name.ends_with("-digest-key");
            let rules = object["rules"].as_array_mut().unwrap();
            let before = rules.len();
            if resource == DIGEST_KEY {
                if digest_role {
                    rules.clear();
                }
            } else if !digest_role {
                rules.retain(|rule| !rule["resources"].as_array().unwrap().iter().any(|r| r == resource));
            }
            removed += usize::from(before != rules.len());
        }
        match kind.as_str() {
            "ServiceAccount" => service_account = name,
            "ClusterRole" => guards.push(ClusterObjectGuard { resource: "clusterrole", name }),
            "ClusterRoleBinding" => guards.push(ClusterObjectGuard { resource: "clusterrolebinding", name }),
            _ => {}
        }
    }
    assert_eq!(
        removed,
        usize::from(without.is_some()),
        "not exactly one Role or ClusterRole lost {without:?}"
    );
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    run_ok(Command::new(&tools.kubectl).args(["apply", "-f", "-"]), Some(list.to_string().as_bytes()));

    let token = run_ok(
        Command::new(&tools.kubectl).args(["create", "token", &service_account, "-n", &ns, "--duration=1h"]),
        None,
    );
    let token = String::from_utf8(token.stdout).unwrap();
    let kubeconfig = tempfile::tempdir().unwrap();
    let path = kubeconfig.path().join("kubeconfig");
    let env = scenario.env;
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "env", "cluster": {
            "server": env.var("GITENV_APISERVER_URL"),
            "certificate-authority": env.var("GITENV_KUBE_CA_CRT")}}],
        "users": [{"name": "chart", "user": {"token": token.trim()}}],
        "contexts": [{"name": "chart", "context": {"cluster": "env", "user": "chart", "namespace": ns}}],
        "current-context": "chart",
    });
    std::fs::write(&path, config.to_string()).unwrap();
    // As the chart configures it: Leases in the release namespace, named after the release.
    let prefix = format!("{ns}-gitops-reverser");
    let digest = format!("{prefix}-sops-digest");
    let operator = Operator::start_as(
        &ns,
        &path,
        &["--lease-namespace", &ns, "--lease-prefix", &prefix, "--digest-key-secret", &digest],
    );
    AsChart { scenario, operator, service_account, _kubeconfig: kubeconfig, _guards: guards }
}

/// The manifests as JSON objects, through the real kubectl.
fn as_json(kubectl: &PathBuf, manifests: &str) -> Vec<Value> {
    let out = run_ok(
        Command::new(kubectl).args(["create", "--dry-run=client", "-o", "json", "-f", "-"]),
        Some(manifests.as_bytes()),
    );
    // One JSON document per object, one after the other.
    serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>().map(Result::unwrap).collect()
}

impl AsChart {
    /// Whether the API server lets the chart's ServiceAccount `verb`
    /// `secrets` in `namespace` (None: in every namespace at once).
    fn may(&self, verb: &str, namespace: Option<&str>) -> bool {
        let user = format!("system:serviceaccount:{}:{}", self.scenario.namespace(), self.service_account);
        let mut cmd = Command::new(&chart::tools().kubectl);
        cmd.args(["auth", "can-i", verb, "secrets", "--as", &user]);
        match namespace {
            Some(ns) => cmd.args(["-n", ns]),
            None => cmd.arg("--all-namespaces"),
        };
        let out = chart::run(&mut cmd, None);
        // can-i prints yes or no, exiting 0 or 1; anything else is an error.
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => true,
            "no" => false,
            other => panic!("kubectl auth can-i: {other:?} {}", String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// How many log lines have every one of `needles`.
    fn log_lines(&self, needles: &[&str]) -> usize {
        self.operator.logs().lines().filter(|line| needles.iter().all(|n| line.contains(n))).count()
    }

    /// The seed ConfigMap and a live change reach the branch.
    async fn write_path_works(&self) {
        let s = &self.scenario;
        let seed = s.core_path("clusters/test", "configmaps", "seed");
        s.wait_branch("the seed ConfigMap's file", "main", |view| view.files.contains_key(&seed)).await;
        s.configmap("app", json!({"greeting": "hello"})).await;
        let path = s.core_path("clusters/test", "configmaps", "app");
        s.wait_branch("the ConfigMap's file", "main", |view| {
            view.files.get(&path).is_some_and(|f| f.contains("greeting: hello"))
        })
        .await;
    }

    /// A GitTarget `sealed` on branch `sealed` that encrypts Secrets, a rule
    /// selecting Secret `db`, and that Secret; returns the sealed file's path.
    async fn sealed_target(&self) -> String {
        let s = &self.scenario;
        let ns = s.namespace();
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let target = json!({
            "apiVersion": "configbutler.ai/v1alpha1", "kind": "GitTarget",
            "metadata": {"name": "sealed", "namespace": ns},
            "spec": {"providerRef": {"name": "git"}, "branch": "sealed", "baseFolder": "clusters/test",
                     "encryption": {"provider": "sops", "age": {"recipients": [recipient]}}},
        });
        fixtures::apply(&s.client, ns, target).await;
        let selected = json!({"matchLabels": {"sealed": "yes"}});
        s.rule("db", "sealed", json!([{"resources": ["secrets"], "labelSelector": selected}])).await;
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": "db", "namespace": ns, "labels": {"sealed": "yes"}},
                            "stringData": {"password": "not-in-git"}});
        fixtures::apply(&s.client, ns, secret).await;
        let path = s.core_path("clusters/test", "secrets", "db");
        format!("{}.sops.yaml", path.trim_end_matches(".yaml"))
    }

    /// A second GitTarget, `via-flux`, on branch `flux` of the same
    /// repository through a Flux GitRepository (same Secret), with a rule.
    async fn flux_target(&self) {
        let s = &self.scenario;
        let ns = s.namespace();
        let repository = json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "flux-repo", "namespace": ns},
            "spec": {"url": s.repo.ssh_url, "secretRef": {"name": "git"}, "interval": "10m"},
        });
        fixtures::apply(&s.client, ns, repository).await;
        let reference = json!({"kind": "GitRepository", "name": "flux-repo"});
        fixtures::target(&s.client, ns, "via-flux", reference, "flux", "clusters/test").await;
        s.rule("cms-flux", "via-flux", json!([{"resources": ["configmaps"]}])).await;
    }

    fn events(&self) -> Vec<Value> {
        let tools = chart::tools();
        let out = run_ok(
            Command::new(&tools.kubectl).args([
                "get",
                "events.events.k8s.io",
                "-n",
                self.scenario.namespace(),
                "-o",
                "json",
            ]),
            None,
        );
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Events the operator published, as "reason: note".
    fn our_events(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["reportingController"] == "gitops-reverser")
            .map(|e| format!("{}: {}", e["reason"], e["note"]))
            .collect()
    }

    /// Our objects in the namespace that carry any status, as "Kind name: status".
    async fn statuses(&self) -> Vec<String> {
        let (client, ns) = (&self.scenario.client, self.scenario.namespace());
        let all = ListParams::default();
        let mut found = Vec::new();
        for t in Api::<GitTarget>::namespaced(client.clone(), ns).list(&all).await.unwrap() {
            found.extend(t.status.map(|s| format!("GitTarget {:?}: {s:?}", t.metadata.name)));
        }
        for p in Api::<GitProvider>::namespaced(client.clone(), ns).list(&all).await.unwrap() {
            found.extend(p.status.map(|s| format!("GitProvider {:?}: {s:?}", p.metadata.name)));
        }
        for r in Api::<WatchRule>::namespaced(client.clone(), ns).list(&all).await.unwrap() {
            found.extend(r.status.map(|s| format!("WatchRule {:?}: {s:?}", r.metadata.name)));
        }
        found
    }

    /// Leases of the release namespace that someone holds, as "name by holder".
    async fn held_leases(&self) -> Vec<String> {
        let api = Api::<Lease>::namespaced(self.scenario.client.clone(), self.scenario.namespace());
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|lease| {
                let holder = lease.spec?.holder_identity.filter(|h| !h.is_empty())?;
                Some(format!("{} by {holder}", lease.metadata.name.unwrap_or_default()))
            })
            .collect()
    }

    /// An unlabelled sample of the operator's /metrics.
    fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = support::http::get(self.operator.addr, "/metrics")?;
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The branch's files, or nothing if it does not exist.
    fn files(&self, branch: &str) -> Vec<String> {
        self.scenario.branch(branch).map(|view| view.files.into_keys().collect()).unwrap_or_default()
    }
}

/// Forbidden, as the API server words it in the operator's log.
fn forbidden(verb: &str, resource: &str) -> [String; 2] {
    [format!("cannot {verb} resource"), format!(r#"\"{resource}\""#)]
}

/// The positive baseline: every outcome the other tests assert absent is
/// here, with exactly the chart's RBAC.
#[tokio::test(flavor = "multi_thread")]
async fn with_exactly_the_chart_rbac_the_write_path_works() {
    let run = start_with("rbac-all", None, |_| secrets_watched()).await;
    run.flux_target().await;
    let sealed = run.sealed_target().await;
    run.write_path_works().await;
    let view =
        run.scenario.wait_branch("the sealed Secret", "sealed", |v| v.files.contains_key(&sealed)).await;
    assert!(!view.files[&sealed].contains("not-in-git"), "{}", view.files[&sealed]);
    let (status, _, message) = run.scenario.wait_condition("audit", "Ready", |c| c.0 == "True").await;
    assert_eq!(status, "True", "{message}");
    let (status, _, message) = run.scenario.wait_condition("via-flux", "Ready", |c| c.0 == "True").await;
    assert_eq!(status, "True", "{message}");
    let seed = run.scenario.core_path("clusters/test", "configmaps", "seed");
    run.scenario
        .wait_branch("the seed on the Flux target's branch", "flux", |v| v.files.contains_key(&seed))
        .await;
    wait_for("an Event from the operator about the GitTarget", WAIT, || async {
        run.events()
            .into_iter()
            .find(|e| e["reportingController"] == "gitops-reverser" && e["regarding"]["name"] == "audit")
    })
    .await;
    let statuses = run.statuses().await;
    for object in ["GitTarget", "GitProvider", "WatchRule"] {
        assert!(statuses.iter().any(|s| s.starts_with(object)), "no {object} has a status: {statuses:?}");
    }
    assert!(!run.held_leases().await.is_empty(), "the operator holds no Lease");
    assert!(run.metric("gitops_reverser_shards_owned").is_some_and(|n| n > 0.0), "it owns no shard");
    let logs = run.operator.logs();
    assert!(!logs.contains("forbidden"), "the operator was refused something:\n{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_reading_our_kinds_nothing_is_configured() {
    let run = start("rbac-kinds", Some("gitproviders")).await;
    let needles = forbidden("list", "gitproviders");
    let refused = [needles[0].as_str(), &needles[1]];
    // Alive otherwise: it holds its shards, so only the configuration is missing.
    wait_for("the operator to hold its shard Leases", WAIT, || async {
        (!run.held_leases().await.is_empty()).then_some(())
    })
    .await;
    // A retried list refused again, or anything done with the configuration.
    wait_for("the configuration lists refused twice, or the operator acting", WAIT, || async {
        let acted = !run.statuses().await.is_empty() || run.scenario.branch("main").is_some();
        (acted || run.log_lines(&refused) >= 2).then_some(())
    })
    .await;
    let statuses = run.statuses().await;
    assert!(statuses.is_empty(), "status written without reading the configuration: {statuses:?}");
    assert_eq!(run.files("main"), Vec::<String>::new(), "the branch was written");
    assert_eq!(run.scenario.pushes(), vec![], "something was pushed");
    assert!(run.log_lines(&refused) >= 2, "nothing was configured, yet the lists were not refused twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_status_patches_no_status_is_written() {
    let run = start("rbac-status", Some("gittargets/status")).await;
    // The write path needs no status; by the time it has pushed, every
    // pass since the first tried to write the status of all three objects.
    run.write_path_works().await;
    let statuses = run.statuses().await;
    assert!(statuses.is_empty(), "status was written: {statuses:?}");
    let needles = forbidden("patch", "gittargets/status");
    assert!(run.log_lines(&["cannot write GitTarget status", &needles[0], &needles[1]]) > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_events_no_event_is_published() {
    let run = start("rbac-events", Some("events")).await;
    run.write_path_works().await;
    // Status is written: Ready went from False to True, and each earlier
    // transition's Event was tried before the pass that wrote True.
    run.scenario.wait_condition("audit", "Ready", |c| c.0 == "True").await;
    let events = run.our_events();
    assert!(events.is_empty(), "Events were published: {events:?}");
    let needles = forbidden("create", "events");
    assert!(run.log_lines(&["cannot publish an event", &needles[0], &needles[1]]) > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_secrets_no_credentials_are_read() {
    let run = start("rbac-secrets", Some("secrets")).await;
    let (status, _, message) =
        run.scenario.wait_condition("audit", "Ready", |c| c.0 == "True" || c.2.contains("Secret")).await;
    assert_eq!(status, "False", "{message}");
    assert!(message.contains("cannot read Secret") && message.contains("forbidden"), "{message}");
    // Without credentials no branch worker starts, so nothing can reach the server.
    assert_eq!(run.log_lines(&["branch worker started"]), 0, "a branch worker started");
    assert_eq!(run.files("main"), Vec::<String>::new(), "the branch was written");
    assert_eq!(run.scenario.pushes(), vec![], "something was pushed");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_digest_key_encrypted_secrets_are_withheld() {
    let run = start("rbac-digest", Some(DIGEST_KEY)).await;
    let sealed = run.sealed_target().await;
    let (status, reason, message) =
        run.scenario.wait_condition("sealed", "Ready", |c| c.0 == "True" || c.2.contains("digest key")).await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidConfiguration"), "{message}");
    assert!(message.contains("digest key") && message.contains("forbidden"), "{message}");
    // The other target writes, so the operator got past where it would have sealed.
    run.write_path_works().await;
    assert!(
        run.scenario.branch("sealed").is_none_or(|v| !v.files.contains_key(&sealed)),
        "the Secret was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_flux_repositories_flux_references_cannot_resolve() {
    let run = start("rbac-flux", Some("gitrepositories")).await;
    run.flux_target().await;
    // The GitProvider target works: the operator ran its passes and pushed.
    run.write_path_works().await;
    let (status, _, message) = run
        .scenario
        .wait_condition("via-flux", "Ready", |c| c.0 == "True" || c.2.contains("GitRepository"))
        .await;
    assert_eq!(status, "False", "{message}");
    assert!(message.contains("\"flux-repo\""), "the condition does not name the GitRepository: {message}");
    assert_eq!(run.files("flux"), Vec::<String>::new(), "the Flux target's branch was written");
    let needles = forbidden("list", "gitrepositories");
    assert!(run.log_lines(&[&needles[0], &needles[1]]) > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_watched_kinds_nothing_is_mirrored() {
    let run = start("rbac-watched", Some("configmaps")).await;
    let s = &run.scenario;
    // A kind of another rule of the chart (ConfigMaps share theirs with
    // the other core kinds), on the same target.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "seed-role", "namespace": s.namespace()}, "rules": []});
    fixtures::apply(&s.client, s.namespace(), role).await;
    s.rule("roles", "audit", json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"]}]))
        .await;
    let seed = s.core_path("clusters/test", "configmaps", "seed");
    // On this 1.35 server the initial list streams, so a watch is refused.
    let needles = forbidden("watch", "configmaps");
    let refused = ["watch error", needles[0].as_str(), &needles[1]];
    s.wait_branch("the Role's file", "main", |view| {
        view.files.keys().any(|f| f.ends_with("/roles/seed-role.yaml"))
    })
    .await;
    wait_for("the ConfigMap watch refused twice, or the seed mirrored", WAIT, || async {
        let mirrored = s.branch("main").is_some_and(|view| view.files.contains_key(&seed));
        (mirrored || run.log_lines(&refused) >= 2).then_some(())
    })
    .await;
    let configmaps: Vec<String> =
        run.files("main").into_iter().filter(|f| f.contains("/configmaps/")).collect();
    assert_eq!(configmaps, Vec::<String>::new(), "ConfigMaps were mirrored");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_leases_no_shard_is_owned() {
    let run = start("rbac-leases", Some("leases")).await;
    let needles = forbidden("list", "leases");
    let refused = ["watching the shard Leases failed", needles[0].as_str(), &needles[1]];
    wait_for("the Lease watch refused twice, or the operator holding a shard", WAIT, || async {
        let acted = !run.held_leases().await.is_empty() || run.scenario.branch("main").is_some();
        (acted || run.log_lines(&refused) >= 2).then_some(())
    })
    .await;
    let leases = run.held_leases().await;
    assert!(leases.is_empty(), "Leases are held: {leases:?}");
    assert_eq!(run.metric("gitops_reverser_shards_owned"), Some(0.0), "it counts shards as owned");
    // Status and pushes belong to the owner of a shard: there is none.
    let statuses = run.statuses().await;
    assert!(statuses.is_empty(), "status written without a shard: {statuses:?}");
    assert_eq!(run.files("main"), Vec::<String>::new(), "the branch was written");
    assert_eq!(run.scenario.pushes(), vec![], "something was pushed");
}

/// rbac.secretNamespaces: a Role per listed namespace instead of the
/// cluster-wide rule. Listing the target's namespace is all the operator
/// needs, and its ServiceAccount may get Secrets there and nowhere else.
#[tokio::test(flavor = "multi_thread")]
async fn with_secret_namespaces_secrets_are_read_only_there() {
    let client = support::env().client().await;
    let other = TestNamespace::create(&client, "rbac-unlisted").await;
    let run = start_with("rbac-secret-ns", None, |ns| {
        vec!["--set".into(), format!("rbac.secretNamespaces={{{ns}}}")]
    })
    .await;
    let ns = run.scenario.namespace();
    run.write_path_works().await;
    let (status, _, message) = run.scenario.wait_condition("audit", "Ready", |c| c.0 == "True").await;
    assert_eq!(status, "True", "{message}");
    assert!(run.may("get", Some(ns)), "no get on Secrets in the listed namespace");
    assert!(!run.may("get", Some(&other.name)), "get on Secrets in a namespace that is not listed");
    assert!(!run.may("get", None), "get on Secrets in every namespace");
    assert!(!run.may("list", Some(ns)), "list on Secrets in the listed namespace");
    let logs = run.operator.logs();
    assert!(!logs.contains("forbidden"), "the operator was refused something:\n{logs}");
}

/// A target in a namespace that rbac.secretNamespaces does not list cannot
/// read its Secret (the cluster-wide rule is gone), and says so.
#[tokio::test(flavor = "multi_thread")]
async fn with_secret_namespaces_a_target_elsewhere_cannot_read_its_secret() {
    let client = support::env().client().await;
    let listed = TestNamespace::create(&client, "rbac-listed").await;
    // CHART_RBAC_WIDEN=1 keeps the cluster-wide rule: the test must then fail.
    let widen = std::env::var_os("CHART_RBAC_WIDEN").is_some();
    let set = format!("rbac.secretNamespaces={{{}}}", listed.name);
    let values = |_: &str| if widen { vec![] } else { vec!["--set".into(), set] };
    let run = start_with("rbac-secret-elsewhere", None, values).await;
    assert!(run.may("get", Some(&listed.name)), "no get on Secrets in the listed namespace");
    assert!(!run.may("get", Some(run.scenario.namespace())), "get on Secrets in the target's namespace");
    let (status, _, message) =
        run.scenario.wait_condition("audit", "Ready", |c| c.0 == "True" || c.2.contains("Secret")).await;
    assert_eq!(status, "False", "{message}");
    assert!(message.contains("cannot read Secret") && message.contains("forbidden"), "{message}");
    assert_eq!(run.log_lines(&["branch worker started"]), 0, "a branch worker started");
    assert_eq!(run.files("main"), Vec::<String>::new(), "the branch was written");
    assert_eq!(run.scenario.pushes(), vec![], "something was pushed");
}

/// Without `create` on SubjectAccessReviews a rule that names a
/// ServiceAccount mirrors nothing (no answer counts as a denial), and says
/// why; rules that name none go on working.
#[tokio::test(flavor = "multi_thread")]
async fn without_access_reviews_a_rule_bound_to_a_service_account_mirrors_nothing() {
    let run = start("rbac-sar", Some("subjectaccessreviews")).await;
    let s = &run.scenario;
    let ns = s.namespace().to_owned();
    // The account may read ConfigMaps: only the missing review holds them back.
    fixtures::grant_list_watch(&s.client, &ns, "mirror", "mirror", "", &["configmaps"]).await;
    s.target("tenant", "git", "tenant", "tenant").await;
    fixtures::apply(
        &s.client,
        &ns,
        json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "WatchRule",
        "metadata": {"name": "tenant", "namespace": ns},
        "spec": {"sinkRef": {"name": "tenant"}, "serviceAccountName": "mirror",
                 "rules": [{"resources": ["configmaps"]}]}}),
    )
    .await;
    run.write_path_works().await;
    let api: Api<WatchRule> = Api::namespaced(s.client.clone(), &ns);
    let (status, reason, message) = wait_for("the tenant rule's Ready", WAIT, || async {
        let rule = api.get("tenant").await.ok()?;
        let c = rule.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        Some((c.status, c.reason, c.message)).filter(|c| c.0 == "True" || c.2.contains("review failed"))
    })
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "AccessDenied"), "{message}");
    assert!(message.contains("forbidden"), "{message}");
    // The tenant target synced its (empty) branch after the denial was known.
    s.wait_condition("tenant", "Synced", |c| c.0 == "True").await;
    let mirrored: Vec<String> =
        run.files("tenant").into_iter().filter(|f| f.contains("/configmaps/")).collect();
    assert_eq!(mirrored, Vec::<String>::new(), "mirrored without an access review");
}
