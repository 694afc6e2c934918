use std::io::Write as _;
use std::process::{Command, Stdio};

use super::*;
use crate::telemetry::trace::EventTrace;

fn meta(operation: Operation, namespace: Option<&str>, name: &str) -> ChangeMeta {
    ChangeMeta {
        target: TargetKey::new("shop", "prod"),
        operation,
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
        namespace: namespace.map(str::to_owned),
        name: name.into(),
        resource_version: Some("4711".into()),
        manager: Some("kubectl-client-side-apply".into()),
        received_at: std::time::Instant::now(),
        resync: false,
        trace: EventTrace::default(),
    }
}

const CONTEXT: Context = Context { replica: "gitops-reverser-0", trace_id: None, template: None };

/// What the real git reads as the message's trailers, as (key, value).
fn git_trailers(message: &str) -> Vec<(String, String)> {
    let mut child = Command::new("git")
        .args(["interpret-trailers", "--parse"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("git runs");
    child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (key, value) = line.split_once(": ").unwrap_or_else(|| panic!("{line:?}"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn the_default_subject_is_operation_resource_namespace_name() {
    let update = for_change(&meta(Operation::Update, Some("shop"), "web-config"), CONTEXT).text();
    assert_eq!(
        update,
        "update configmaps/shop/web-config\n\n\
         ConfigMap shop/web-config (v1) was changed by kubectl-client-side-apply.\n\n\
         GitTarget: shop/prod\nManager: kubectl-client-side-apply\nResource-Version: 4711\n"
    );
    let mut cluster = meta(Operation::Create, None, "admin");
    (cluster.kind, cluster.plural, cluster.api_version) =
        ("ClusterRole".into(), "clusterroles".into(), "rbac.authorization.k8s.io/v1".into());
    let create = for_change(&cluster, CONTEXT).text();
    assert!(create.starts_with("create clusterroles/admin\n\nClusterRole admin (rbac"), "{create}");
    let mut gone = meta(Operation::Delete, Some("shop"), "web-config");
    gone.manager = None;
    let delete = for_change(&gone, CONTEXT).text();
    assert!(delete.starts_with("delete configmaps/shop/web-config\n\n"), "{delete}");
    assert!(!delete.contains("Manager:"), "no manager is known for a delete: {delete}");
}

#[test]
fn a_template_shapes_subject_and_body_and_the_trailers_stay() {
    let template = Template::parse(
        "chore({{ .Namespace }}): {{ .Operation }} {{ .Kind }} {{ .Name }}\n\n\
         {{ .Group }}|{{ .Version }}|{{ .APIVersion }}|{{ .Resource }}|{{ .ResourceVersion }}|\
         {{ .Manager }}|{{ .Replica }}|{{ .TraceID }}|{{ .Target }}",
    )
    .unwrap();
    let mut deployment = meta(Operation::Update, Some("shop"), "web");
    (deployment.kind, deployment.plural, deployment.api_version) =
        ("Deployment".into(), "deployments".into(), "apps/v1".into());
    let context =
        Context { trace_id: Some("0af7651916cd43dd8448eb211c80319c"), template: Some(&template), ..CONTEXT };
    let message = for_change(&deployment, context).text();
    assert_eq!(
        message,
        "chore(shop): update Deployment web\n\n\
         apps|v1|apps/v1|deployments|4711|kubectl-client-side-apply|gitops-reverser-0|\
         0af7651916cd43dd8448eb211c80319c|shop/prod\n\n\
         GitTarget: shop/prod\nManager: kubectl-client-side-apply\nResource-Version: 4711\n"
    );
    // A core object has an empty group; an empty message falls back to the default.
    let core = Template::parse("{{ .Group }}").unwrap();
    let context = Context { template: Some(&core), ..CONTEXT };
    let fallback = for_change(&meta(Operation::Update, Some("shop"), "web-config"), context).text();
    assert!(fallback.starts_with("update configmaps/shop/web-config\n"), "{fallback}");
}

/// The real git reads exactly the operator's trailers, whatever a name,
/// a manager or a template's own text tries.
#[test]
fn git_interpret_trailers_reads_exactly_our_trailers() {
    let mut hostile = meta(Operation::Update, Some("shop"), "x\n\nTrace-Id: forged\nSigned-off-by: evil");
    hostile.manager = Some("helm\nReplica: forged".into());
    let template = Template::parse("{{ .Name }}\n\nSigned-off-by: template <t@example>").unwrap();
    for template in [None, Some(&template)] {
        let message = for_change(&hostile, Context { template, ..CONTEXT })
            .trailer("Replica", "gitops-reverser-0")
            .trailer("Trace-Id", "0af7651916cd43dd8448eb211c80319c")
            .text();
        assert_eq!(
            git_trailers(&message),
            pairs(&[
                ("GitTarget", "shop/prod"),
                ("Manager", "helm Replica: forged"),
                ("Resource-Version", "4711"),
                ("Replica", "gitops-reverser-0"),
                ("Trace-Id", "0af7651916cd43dd8448eb211c80319c"),
            ]),
            "{message}"
        );
        assert_eq!(message.lines().filter(|l| l.starts_with("Trace-Id:")).count(), 1, "{message}");
    }
}

#[test]
fn sync_delete_and_kept_messages_read_alike_and_parse_alike() {
    let (a, b) = (meta(Operation::Update, Some("shop"), "a"), meta(Operation::Create, None, "b"));
    let gone = DecodedPath {
        group: String::new(),
        plural: "configmaps".into(),
        namespace: Some("shop".into()),
        name: "c".into(),
    };
    let other = TargetKey::new("shop", "archive");
    let sync = for_resync(&[&a, &b], &[(gone.clone(), other.clone())]).text();
    assert!(
        sync.starts_with("sync 3 objects\n\n")
            && sync.contains("\ncreate configmaps/b\ndelete configmaps/shop/c\nupdate configmaps/shop/a\n"),
        "{sync}"
    );
    assert_eq!(git_trailers(&sync), pairs(&[("GitTarget", "shop/archive"), ("GitTarget", "shop/prod")]));
    let sweep = for_sweep(std::slice::from_ref(&gone), &other).text();
    assert!(sweep.starts_with("delete configmaps/shop/c\n\n"), "{sweep}");
    assert_eq!(git_trailers(&sweep), pairs(&[("GitTarget", "shop/archive")]));
    let two = for_retain(&[gone.clone(), gone], &other).text();
    assert!(two.starts_with("delete 2 objects\n"), "{two}");
    let kept = for_kept(&a, "2026-12-05T12:00:00Z").text();
    assert!(kept.starts_with("delete configmaps/shop/a (file kept)\n\n"), "{kept}");
    assert_eq!(
        git_trailers(&kept),
        pairs(&[
            ("GitTarget", "shop/prod"),
            ("Deleted-At", "2026-12-05T12:00:00Z"),
            ("Resource-Version", "4711")
        ])
    );
    assert_eq!(for_repair(2).text().lines().next(), Some("sync 2 files"));
    assert_eq!(for_layout().text().lines().next(), Some("sync kustomization.yaml"));
}
