//! Commit messages, authors and the prune policy against the real API
//! server and git server: a change is authored by its field manager and
//! committed by the operator, its trailers are what `git interpret-trailers`
//! reads, a GitProvider's template shapes the subject, and a `prune: Never`
//! target keeps a deleted object's file and says so in a commit.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::fixtures::{self, Access};
use support::git::{Auth, GitClient};
use support::operator::Operator;
use support::{TestNamespace, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// One commit of the branch as git reads it.
#[derive(Debug)]
struct Commit {
    author: String,
    committer: String,
    subject: String,
    trailers: Vec<(String, String)>,
}

/// The newest `count` commits of `branch` (newest first), and whether `path` exists at its tip.
fn newest(git: &GitClient, url: &str, branch: &str, path: &str) -> Option<(Vec<Commit>, bool)> {
    let scratch = git.workdir("messages");
    let dir = scratch.join(format!("clone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cloned = git.run(&scratch, &["clone", "--quiet", "--branch", branch, url, dir.to_str().unwrap()]);
    if !cloned.status.success() {
        return None;
    }
    let ids = git.ok(&dir, &["log", "--format=%H"]);
    let commits = ids
        .lines()
        .map(|id| {
            let header = git.ok(&dir, &["log", "-1", "--format=%an <%ae>%n%cn%n%s", id]);
            let mut lines = header.lines().map(str::to_owned);
            let (author, committer, subject) =
                (lines.next().unwrap(), lines.next().unwrap(), lines.next().unwrap_or_default());
            let message = git.ok(&dir, &["log", "-1", "--format=%B", id]);
            let parsed = git.run_input(&dir, &["interpret-trailers", "--parse"], message.as_bytes());
            let trailers = String::from_utf8_lossy(&parsed.stdout)
                .lines()
                .filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect();
            Commit { author, committer, subject, trailers }
        })
        .collect();
    let exists = dir.join(path).exists();
    let _ = std::fs::remove_dir_all(&dir);
    Some((commits, exists))
}

fn trailers(commit: &Commit) -> BTreeMap<&str, &str> {
    commit.trailers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_field_manager_authors_the_template_shapes_and_never_pruning_keeps_the_file() {
    let env = support::env();
    let client = env.client().await;
    fixtures::install_crds(&client).await;
    let ns = TestNamespace::create(&client, "wm-author").await;
    let repo = env.new_repo("wm-author");
    let url = repo.ssh_url.clone();
    fixtures::git_secret(&client, env, &ns.name, "git", &Access::Ssh { read_only: false }).await;
    fixtures::apply(
        &client,
        &ns.name,
        json!({
            "apiVersion": "configbutler.ai/v1alpha1", "kind": "GitProvider",
            "metadata": {"name": "git", "namespace": ns.name},
            "spec": {"url": url, "secretRef": {"name": "git"}, "push": {"interval": "1s"},
                     "commit": {"messageTemplate": "{{ .Operation }} {{ .Kind }} {{ .Name }} ({{ .Manager }})"}},
        }),
    )
    .await;
    fixtures::apply(
        &client,
        &ns.name,
        json!({
            "apiVersion": "configbutler.ai/v1alpha1", "kind": "GitTarget",
            "metadata": {"name": "audit", "namespace": ns.name},
            "spec": {"providerRef": {"name": "git"}, "baseFolder": "clusters/test", "prune": "Never"},
        }),
    )
    .await;
    fixtures::watch_rule(&client, &ns.name, "cms", "audit", json!([{"resources": ["configmaps"]}])).await;
    let operator = Operator::start(env, &ns.name);
    operator.wait_log("initial list complete").await;
    let git = GitClient::new(Auth::ssh_rw(env));
    let path = format!("clusters/test/{}/core/configmaps/app.yaml", ns.name);

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "app", "namespace": ns.name}, "data": {"a": "1"}});
    cms.patch("app", &PatchParams::apply("demo-editor"), &Patch::Apply(&cm)).await.unwrap();
    let (commits, _) = wait_for("the create commit", WAIT, || async {
        newest(&git, &url, "main", &path).filter(|(c, exists)| *exists && c[0].subject.starts_with("create "))
    })
    .await;
    let created = &commits[0];
    assert_eq!(created.subject, "create ConfigMap app (demo-editor)", "the provider's template");
    assert_eq!(created.author, "demo-editor <demo-editor@gitops-reverser>");
    assert_eq!(created.committer, "gitops-reverser", "the operator commits");
    let read = trailers(created);
    assert_eq!(read.get("GitTarget"), Some(&format!("{}/audit", ns.name).as_str()), "{read:?}");
    assert_eq!(read.get("Manager"), Some(&"demo-editor"));
    let live = cms.get("app").await.unwrap();
    assert_eq!(read.get("Resource-Version").copied(), live.metadata.resource_version.as_deref());
    assert!(read.contains_key("Replica"), "{read:?}");

    cms.delete("app", &DeleteParams::default()).await.unwrap();
    let (commits, exists) = wait_for("the delete marker", WAIT, || async {
        newest(&git, &url, "main", &path).filter(|(c, _)| c[0].subject.ends_with("(file kept)"))
    })
    .await;
    assert!(exists, "prune: Never keeps the file");
    let marker = &commits[0];
    assert_eq!(marker.subject, format!("delete configmaps/{}/app (file kept)", ns.name));
    assert!(marker.author.starts_with("gitops-reverser <"), "nobody is known to have deleted it: {marker:?}");
    assert!(trailers(marker).get("Deleted-At").is_some_and(|at| at.ends_with('Z')), "{marker:?}");
    drop(operator);
}
