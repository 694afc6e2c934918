//! The global subscriber: structured logs to stderr (human-readable or
//! JSON) and, when an OTLP endpoint is configured, the pipeline's spans.

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::trace::{self, Exporter};
use crate::cli::LogFormat;

/// Installs the global subscriber. Fails if the filter does not parse or
/// the OTLP settings are invalid. Must run inside the Tokio runtime.
pub fn init(format: LogFormat, filter: &str, replica: &str) -> Result<Option<Exporter>, String> {
    // Pipeline spans are for traces only, never log lines.
    let filter = EnvFilter::try_new(format!("{filter},{}=off", trace::TARGET))
        .map_err(|e| format!("invalid --log-level {filter:?}: {e}"))?;
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Human => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).boxed(),
    };
    let (exporter, spans) = match trace::tracer(replica)? {
        Some((exporter, tracer)) => {
            // The pipeline's spans, and warnings raised inside them as span events.
            let wanted = Targets::new().with_target(trace::TARGET, Level::TRACE).with_default(Level::WARN);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_threads(false)
                .with_location(false)
                .with_filter(wanted);
            (Some(exporter), Some(layer))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(exporter)
}
