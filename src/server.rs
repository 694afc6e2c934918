//! The HTTP endpoint for probes and scraping: `/healthz` (the vital loops
//! still turn), `/readyz` (the operator can reach the API server) and
//! `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tracing::warn;

use crate::health::Liveness;
use crate::telemetry::{Format, Metrics, negotiate, to_text};

/// What the endpoints report on.
#[derive(Clone)]
pub struct Probes {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub liveness: Arc<Liveness>,
}

/// The router with the three endpoints.
pub fn router(probes: Probes) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes)
}

async fn healthz(State(probes): State<Probes>) -> impl IntoResponse {
    match probes.liveness.check(Instant::now()) {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(stalled) => {
            warn!(%stalled, "failing /healthz: a vital loop has stalled");
            (StatusCode::SERVICE_UNAVAILABLE, format!("stalled: {stalled}\n"))
        }
    }
}

async fn readyz(State(probes): State<Probes>) -> impl IntoResponse {
    if probes.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the Kubernetes API server has not answered yet\n")
    }
}

/// OpenMetrics (with exemplars) for scrapers that ask for it, else the
/// Prometheus text format.
async fn metrics(State(probes): State<Probes>, headers: HeaderMap) -> impl IntoResponse {
    let format = negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = match format {
        Format::OpenMetrics => probes.metrics.encode(),
        Format::Text => to_text(&probes.metrics.encode()),
    };
    ([(header::CONTENT_TYPE, format.content_type())], body)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(liveness: Liveness, path: &str) -> String {
        let probes = Probes {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(true)),
            liveness: Arc::new(liveness),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router(probes)).await });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        server.abort();
        response
    }

    #[tokio::test]
    async fn healthz_is_ok_while_every_loop_turns() {
        let mut liveness = Liveness::new(Duration::from_secs(600));
        liveness.register("controller");
        let response = get(liveness, "/healthz").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    /// Issue 16: a hung controller left `/healthz` green for ever.
    #[tokio::test]
    async fn healthz_fails_and_names_a_stalled_loop() {
        let liveness =
            Liveness::stalled_since(Duration::from_secs(120), Duration::from_secs(60), "controller");
        let response = get(liveness, "/healthz").await;
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        assert!(
            response.contains("stalled: the controller has made no progress for 120 s (limit 60 s)"),
            "{response}"
        );
    }
}
