//! The HTTP endpoint for probes and scraping: `/healthz` (the process is
//! alive), `/readyz` (the operator can reach the API server) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::telemetry::{Format, Metrics, negotiate, to_text};

/// What the endpoints report on.
#[derive(Clone)]
pub struct Probes {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

/// The router with the three endpoints.
pub fn router(probes: Probes) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes)
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
