//! Acceptance 5: every resource tells the truth about its state.

mod support;

use gitops_reverser::api::GitTarget;
use kube::api::Api;
use serde_json::json;
use support::fixtures::{self, Access};
use support::scenario::Scenario;

#[tokio::test(flavor = "multi_thread")]
async fn conditions_say_what_is_wrong_and_how_to_fix_it() {
    let s = Scenario::new("st").await;
    let ns = s.namespace().to_owned();
    // All good.
    s.ssh_provider("good", json!({"interval": "1s"})).await;
    s.target("ok", "good", "main", "ok").await;
    // A read-only deploy key.
    s.provider("readonly", &s.repo.ssh_url.clone(), &Access::Ssh { read_only: true }, json!({})).await;
    s.target("ro", "readonly", "ro-branch", "ro").await;
    // A repository that does not exist.
    let missing = s.repo.ssh_url.replace(&s.repo_name(), "no-such-repository");
    s.provider("missing", &missing, &Access::Ssh { read_only: false }, json!({})).await;
    s.target("nf", "missing", "main", "nf").await;
    // A Secret that does not exist.
    fixtures::provider(&s.client, &ns, "nosecret", &s.repo.ssh_url, "absent-secret", json!({})).await;
    s.target("ns", "nosecret", "main", "ns").await;
    // A Secret without the identity key.
    fixtures::apply(
        &s.client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nokey", "namespace": ns},
               "stringData": {"known_hosts": std::fs::read_to_string(s.env.var("GITENV_KNOWN_HOSTS")).unwrap()}}),
    )
    .await;
    fixtures::provider(&s.client, &ns, "nokey", &s.repo.ssh_url, "nokey", json!({})).await;
    s.target("nk", "nokey", "main", "nk").await;
    // A branch outside allowedBranches.
    fixtures::apply(
        &s.client,
        &ns,
        json!({"apiVersion": "configbutler.ai/v1alpha1", "kind": "GitProvider", "metadata": {"name": "strict", "namespace": ns},
               "spec": {"url": s.repo.ssh_url, "secretRef": {"name": "good"}, "allowedBranches": ["main", "audit/*"]}}),
    )
    .await;
    s.target("br", "strict", "dev", "br").await;
    s.rule("r", "ok", json!([{"resources": ["configmaps"]}])).await;
    let _operator = s.operator();

    let ready = s.wait_condition("ok", "Ready", |c| c.0 == "True").await;
    assert_eq!(ready.1, "Ready");
    // "nothing to push yet" is Synced too, before the first list arrives: wait for the push.
    s.wait_condition("ok", "Synced", |c| c.0 == "True" && c.2.contains(" is at ")).await;
    let ok = Api::<GitTarget>::namespaced(s.client.clone(), &ns).get("ok").await.unwrap();
    let status = ok.status.unwrap();
    let git = status.git_status.expect("gitStatus is filled when Available");
    assert!(git.branch_exists && git.last_commit_sha.as_ref().is_some_and(|sha| sha.len() == 40), "{git:?}");
    let worker = status.worker_status.expect("workerStatus is filled");
    assert!(worker.active && worker.last_push_time.is_some(), "{worker:?}");
    assert_eq!(status.observed_generation, ok.metadata.generation);

    let ro = s.wait_condition("ro", "Available", |c| c.0 == "False").await;
    assert_eq!(ro.1, "AuthenticationFailed");
    assert!(ro.2.contains("write access"), "{}", ro.2);
    assert_eq!(s.wait_condition("ro", "Ready", |c| c.0 == "False").await.1, "AuthenticationFailed");

    let nf = s.wait_condition("nf", "Available", |c| c.0 == "False").await;
    assert_eq!(nf.1, "RepositoryNotFound", "{}", nf.2);

    let no_secret = s.wait_condition("ns", "Ready", |c| c.0 == "False").await;
    assert_eq!(no_secret.1, "InvalidConfiguration");
    assert!(no_secret.2.contains("absent-secret"), "{}", no_secret.2);

    let no_key = s.wait_condition("nk", "Ready", |c| c.0 == "False").await;
    assert_eq!(no_key.1, "InvalidConfiguration");
    assert!(no_key.2.contains("nokey") && no_key.2.contains("identity"), "{}", no_key.2);

    let branch = s.wait_condition("br", "Ready", |c| c.0 == "False").await;
    assert_eq!(branch.1, "BranchNotAllowed");
    assert!(branch.2.contains("\"dev\""), "{}", branch.2);

    // The read-only target never got anything written through the shared worker.
    if let Some(view) = s.branch("ro-branch") {
        panic!("the read-only target's branch exists: {:?}", view.subjects);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_whose_sink_does_not_exist_is_not_ready_and_says_why() {
    let s = Scenario::new("st-rule").await;
    s.rule("orphan", "no-such-target", json!([{"resources": ["configmaps"]}])).await;
    let _operator = s.operator();
    let api: Api<gitops_reverser::api::WatchRule> = Api::namespaced(s.client.clone(), s.namespace());
    let message = support::wait_for("the rule's Ready condition", support::scenario::WAIT, || async {
        let rule = api.get("orphan").await.ok()?;
        let ready = rule.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "False").then_some(ready.message)
    })
    .await;
    assert!(message.contains("no-such-target"), "{message}");
}

/// Issue 16: a shared folder went to the name that sorted first, checked
/// before any write access, and the refusal named the other target. Now a
/// target that cannot push claims nothing, the oldest writer keeps its
/// folder, and the newcomer is told without learning who holds it.
#[tokio::test(flavor = "multi_thread")]
async fn a_newer_or_powerless_target_cannot_take_a_folder_in_use() {
    let s = Scenario::new("sq").await;
    s.ssh_provider("good", json!({"interval": "1s"})).await;
    s.provider("readonly", &s.repo.ssh_url.clone(), &Access::Ssh { read_only: true }, json!({})).await;
    s.target("zz-victim", "good", "shared", "apps").await;
    s.rule("r", "zz-victim", json!([{"resources": ["configmaps"]}])).await;
    s.configmap("before", json!({"k": "1"})).await;
    let _operator = s.operator();
    s.wait_condition("zz-victim", "Synced", |c| c.0 == "True").await;

    // Both sort before the victim, and may have been created in the same
    // (whole) second as the victim: it holds the folder, so it keeps it.
    s.target("aa-squat", "readonly", "shared", "apps").await;
    s.target("ab-copy", "good", "shared", "apps").await;
    // Both first say "Validating" while their access is checked.
    let squat = s.wait_condition("aa-squat", "Available", |c| c.0 == "False" && c.1 != "Validating").await;
    assert_eq!(squat.1, "AuthenticationFailed", "{}", squat.2);
    let copy = s.wait_condition("ab-copy", "Ready", |c| c.0 == "False" && c.1 != "Validating").await;
    assert_eq!(copy.1, "InvalidConfiguration", "{}", copy.2);
    assert!(copy.2.contains("another GitTarget already writes folder \"apps\""), "{}", copy.2);
    assert!(!copy.2.contains("zz-victim") && !copy.2.contains(s.namespace()), "{}", copy.2);

    // The victim still writes its folder.
    s.configmap("after", json!({"k": "2"})).await;
    let path = s.core_path("apps", "configmaps", "after");
    s.wait_branch("the victim's next change", "shared", |view| view.files.contains_key(&path)).await;
    let victim = s.wait_condition("zz-victim", "Ready", |_| true).await;
    assert_eq!(victim.0, "True", "{victim:?}");
}

/// Issue 16: credentials go only where they belong. With
/// `--allowed-git-hosts`, a provider on another host is refused; a Flux
/// GitRepository on http:// with a password is refused (it has no switch
/// to accept clear text); the allowed target keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_go_only_to_allowed_hosts_and_never_over_plain_http() {
    let s = Scenario::new("st-hosts").await;
    let ns = s.namespace().to_owned();
    s.ssh_provider("good", json!({"interval": "1s"})).await;
    s.target("ok", "good", "main", "ok").await;
    let elsewhere = s.repo.ssh_url.replace("127.0.0.1", "git.elsewhere.example");
    assert_ne!(elsewhere, s.repo.ssh_url, "the test repository is served on 127.0.0.1");
    fixtures::provider(&s.client, &ns, "elsewhere", &elsewhere, "good", json!({})).await;
    s.target("away", "elsewhere", "main", "away").await;
    fixtures::apply(
        &s.client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "basic", "namespace": ns},
               "stringData": {"username": "bot", "password": "pw-do-not-leak"}}),
    )
    .await;
    fixtures::apply(
        &s.client,
        &ns,
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "plain", "namespace": ns},
            "spec": {"url": "http://127.0.0.1:9/repo.git", "interval": "1m", "secretRef": {"name": "basic"}},
        }),
    )
    .await;
    fixtures::target(
        &s.client,
        &ns,
        "plain",
        json!({"kind": "GitRepository", "name": "plain"}),
        "main",
        "plain",
    )
    .await;
    s.rule("r", "ok", json!([{"resources": ["configmaps"]}])).await;
    let _operator = s.operator_with(&["--allowed-git-hosts", "127.0.0.1,*.trusted.example"]);

    // A Flux object may be reported as not found until the operator's cache of them fills.
    let away = s.wait_condition("away", "Ready", |c| c.0 == "False" && c.2.contains("host")).await;
    assert_eq!(away.1, "InvalidConfiguration");
    assert!(
        away.2.contains("\"git.elsewhere.example\"") && away.2.contains("--allowed-git-hosts"),
        "{}",
        away.2
    );
    let plain = s.wait_condition("plain", "Ready", |c| c.0 == "False" && !c.2.contains("not found")).await;
    assert_eq!(plain.1, "InvalidConfiguration");
    assert!(plain.2.contains("in clear over http://") && !plain.2.contains("pw-do-not-leak"), "{}", plain.2);
    s.wait_condition("ok", "Synced", |c| c.0 == "True").await;
}
