//! A real Jaeger v2 (in-memory storage) on free loopback ports, started
//! through `tests/env/jaeger`, and a client for its query API.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::http::{free_local_addr, get};

pub struct Jaeger {
    child: Child,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub query: SocketAddr,
}

impl Jaeger {
    /// Starts Jaeger and waits until its query API answers. The ports were free
    /// a moment before Jaeger binds them, so another process may take one in
    /// between; Jaeger then exits at once and is started again on fresh ports.
    pub async fn start() -> Self {
        const ATTEMPTS: usize = 3;
        let mut exits = Vec::new();
        for _ in 0..ATTEMPTS {
            let mut jaeger = Self::spawn();
            match jaeger.wait_until_ready(Duration::from_secs(60)).await {
                Ok(()) => return jaeger,
                Err(exit) => exits.push(exit),
            }
        }
        panic!("Jaeger did not start in {ATTEMPTS} attempts: {exits:?} (its stderr is above)");
    }

    fn spawn() -> Self {
        let (otlp_grpc, otlp_http, query, query_grpc) =
            (free_local_addr(), free_local_addr(), free_local_addr(), free_local_addr());
        let child = Command::new(super::repo_root().join("tests/env/jaeger"))
            .args([otlp_grpc, otlp_http, query, query_grpc].map(|a| a.port().to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/env/jaeger");
        Self { child, otlp_grpc, otlp_http, query }
    }

    /// Ok once the query API answers; Err with the exit status if Jaeger
    /// stopped first. Panics at the deadline: a live Jaeger that never answers
    /// is not a port race.
    async fn wait_until_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let (query, child) = (self.query, &mut self.child);
        super::wait_for("Jaeger's query API", timeout, || {
            let answered = get(query, "/api/services").is_some_and(|(code, _)| code == 200);
            let exited = child.try_wait().ok().flatten();
            async move {
                match answered {
                    true => Some(Ok(())),
                    false => exited.map(|status| Err(format!("exited with {status}"))),
                }
            }
        })
        .await
    }

    /// `GET path` on the query API, as JSON.
    pub fn get_json(&self, path: &str) -> Option<Value> {
        let (code, body) = get(self.query, path)?;
        (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    /// The spans of one trace (OTLP JSON, `/api/v3`), flattened.
    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.get_json(&format!("/api/v3/traces/{trace_id}")).map(|v| spans(&v)).unwrap_or_default()
    }

    /// Every span of `service` named `operation`.
    pub fn find(&self, service: &str, operation: &str) -> Vec<Span> {
        // Each Jaeger lives for one test: any window that holds today will do.
        let path = format!(
            "/api/v3/traces?query.service_name={service}&query.operation_name={operation}\
             &query.start_time_min=2000-01-01T00:00:00Z&query.start_time_max=2200-01-01T00:00:00Z\
             &query.num_traces=1000"
        );
        let found = self.get_json(&path).map(|v| spans(&v)).unwrap_or_default();
        found.into_iter().filter(|s| s.name == operation).collect()
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// One span as Jaeger stored it.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
    pub attributes: Vec<(String, String)>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn spans(answer: &Value) -> Vec<Span> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_lowercase();
    let list = |v: &Value, key: &str| v.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for resource in list(&answer["result"], "resourceSpans") {
        for scope in list(&resource, "scopeSpans") {
            for span in list(&scope, "spans") {
                let attributes = list(&span, "attributes")
                    .iter()
                    .map(|a| {
                        let value = a["value"].as_object().and_then(|v| v.values().next()).cloned();
                        let value = match value {
                            Some(Value::String(s)) => s,
                            Some(other) => other.to_string(),
                            None => String::new(),
                        };
                        (text(a, "key"), value)
                    })
                    .collect();
                out.push(Span {
                    trace_id: text(&span, "traceId"),
                    span_id: text(&span, "spanId"),
                    parent_span_id: text(&span, "parentSpanId"),
                    name: span["name"].as_str().unwrap_or_default().to_owned(),
                    links: list(&span, "links")
                        .iter()
                        .map(|l| (text(l, "traceId"), text(l, "spanId")))
                        .collect(),
                    attributes,
                });
            }
        }
    }
    out
}
