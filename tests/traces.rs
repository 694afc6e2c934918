//! Traces against a real Jaeger v2: a ConfigMap change is one trace from
//! the watch event to its commit, the push span links to it, and the
//! commit's `Trace-Id` trailer names it.

mod support;

use serde_json::json;
use support::http::get_accepting;
use support::jaeger::{Jaeger, Span};
use support::operator::Operator;
use support::scenario::{Scenario, WAIT};
use support::wait_for;

#[tokio::test(flavor = "multi_thread")]
async fn a_change_is_one_trace_over_otlp_http() {
    change_is_traced("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_is_one_trace_over_otlp_grpc() {
    change_is_traced("grpc").await;
}

async fn change_is_traced(protocol: &str) {
    let jaeger = Jaeger::start().await;
    let s = Scenario::new("otel").await;
    s.ssh_provider("git", json!({"interval": "1s"})).await;
    s.target("audit", "git", "main", "clusters").await;
    s.rule("cms", "audit", json!([{"resources": ["configmaps"]}])).await;
    let service = format!("gitops-reverser-{}", s.namespace());
    let endpoint = match protocol {
        "grpc" => format!("http://{}", jaeger.otlp_grpc),
        _ => format!("http://{}", jaeger.otlp_http),
    };
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_SERVICE_NAME", service.as_str()),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let operator = Operator::start_with_env(s.env, s.namespace(), &[], &vars);
    operator.wait_log("initial list complete").await;

    s.configmap("traced", json!({"greeting": "hello"})).await;
    let subject = format!("create configmaps/{}/traced", s.namespace());
    s.wait_branch("the ConfigMap's commit", "main", |v| v.subjects.contains(&subject)).await;
    let (sha, message) = commit_messages(&s).into_iter().find(|(_, m)| m.starts_with(&subject)).unwrap();
    let trace_id = message
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("Trace-Id: "))
        .unwrap_or_else(|| panic!("no Trace-Id trailer in {message:?}"))
        .to_owned();
    assert!(trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()), "{trace_id}");

    // The event's trace: a root and its route, sanitize, queue wait and commit.
    let wanted = ["watch.event", "route", "sanitize", "queue.wait", "commit"];
    let spans = wait_for("the change's trace in Jaeger", WAIT, || async {
        let spans = jaeger.trace(&trace_id);
        wanted.iter().all(|name| spans.iter().any(|s| s.name == *name)).then_some(spans)
    })
    .await;
    let root = one(&spans, "watch.event");
    assert!(root.parent_span_id.is_empty(), "the event span is the root: {root:?}");
    assert_eq!(root.attribute("name"), Some("traced"));
    assert_eq!(root.attribute("namespace"), Some(s.namespace()));
    assert_eq!(root.attribute("resource"), Some("core/configmaps"));
    assert_eq!(root.attribute("event"), Some("apply"));
    assert!(root.attribute("replica").is_some_and(|r| !r.is_empty()), "{root:?}");
    for name in ["route", "sanitize", "queue.wait", "commit"] {
        let span = one(&spans, name);
        assert_eq!(span.parent_span_id, root.span_id, "{name} is a child of the event: {span:?}");
        assert_eq!(span.trace_id, trace_id);
    }
    let commit = one(&spans, "commit");
    assert_eq!(commit.attribute("sha"), Some(sha.as_str()), "{commit:?}");
    assert_eq!(commit.attribute("branch"), Some("main"));
    assert_eq!(commit.attribute("git_target"), Some(format!("{}/audit", s.namespace()).as_str()));
    assert!(commit.attribute("repository").is_some_and(|r| r.ends_with(&format!("{}.git", s.repo_name()))));

    // The push that carried it links to the event, and the server saw it.
    let push = wait_for("a push span linked to the event", WAIT, || async {
        jaeger
            .find(&service, "push")
            .into_iter()
            .find(|p| p.links.contains(&(trace_id.clone(), root.span_id.clone())))
    })
    .await;
    assert!(push.parent_span_id.is_empty(), "a push is a root: {push:?}");
    assert_eq!(push.attribute("result"), Some("pushed"), "{push:?}");
    assert_eq!(push.attribute("branch"), Some("main"));
    let pushed = push.attribute("sha").unwrap_or_default().to_owned();
    assert!(
        s.pushes().iter().any(|(_, _, _, new)| *new == pushed),
        "the git server logged no push of {pushed}: {:?}",
        s.pushes()
    );

    // The lag histogram's exemplar points at the trace.
    let (_, metrics) =
        get_accepting(operator.addr, "/metrics", "application/openmetrics-text; version=1.0.0").unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("gitops_reverser_event_to_push_lag_seconds_bucket")
            && l.contains(&format!("trace_id=\"{trace_id}\""))),
        "no exemplar with trace {trace_id}:\n{metrics}"
    );

    // No credentials in anything exported.
    let exported = [
        jaeger.get_json(&format!("/api/v3/traces/{trace_id}")).unwrap().to_string(),
        jaeger.get_json(&format!("/api/v3/traces/{}", push.trace_id)).unwrap().to_string(),
    ];
    let key = std::fs::read_to_string(s.env.var("GITENV_SSH_KEY_RW")).unwrap();
    let key_body = key.lines().nth(1).unwrap();
    for text in &exported {
        assert!(!text.contains("PRIVATE KEY") && !text.contains(key_body), "credentials exported: {text}");
        assert!(text.contains("deployment.environment.name"), "OTEL_RESOURCE_ATTRIBUTES are applied: {text}");
    }
    drop(operator);
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span expected: {spans:#?}");
    found[0]
}

/// (sha, full message) of every commit on main, newest first.
fn commit_messages(s: &Scenario) -> Vec<(String, String)> {
    let scratch = s.git.workdir("messages");
    let dir = scratch.join(support::unique_name("log"));
    s.git.ok(&scratch, &["clone", "--quiet", "--branch", "main", &s.repo.ssh_url, dir.to_str().unwrap()]);
    let log = s.git.ok(&dir, &["log", "--format=%H%x00%B%x01"]);
    let _ = std::fs::remove_dir_all(&dir);
    log.split('\u{1}')
        .filter_map(|entry| {
            let (sha, message) = entry.trim_start().split_once('\0')?;
            Some((sha.to_owned(), message.trim_end().to_owned()))
        })
        .collect()
}
