//! Traces of the write path, exported over OTLP.
//!
//! In: the standard `OTEL_*` variables. Out: a tracer for the
//! `tracing-opentelemetry` layer, or nothing when no endpoint is set (then
//! the pipeline's spans are disabled at their call sites and cost a load of
//! a cached interest each).
//!
//! One watch event is one trace: `watch.event` (root) with `route`,
//! `sanitize`, `queue.wait` and `commit` below it. A list (start, resync,
//! relist) is one `watch.resync` trace. Each push is a `push` root span
//! with a link to every event whose commit it carries.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of every pipeline span; only the OTLP layer sees it.
pub const TARGET: &str = "gitops_reverser::trace";

static ENABLED: AtomicBool = AtomicBool::new(false);
static REPLICA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// This replica's name, for the root spans' `replica` attribute.
pub fn replica() -> &'static str {
    REPLICA.get().map_or("", String::as_str)
}

/// Whether spans are exported; when false, nothing here does any work.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporter pipeline; flushed and stopped by [`Exporter::shutdown`].
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Exports what is buffered and stops. Blocks: call off the async threads.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("gitops-reverser: cannot flush traces: {error}");
        }
        ENABLED.store(false, Ordering::Relaxed);
    }
}

/// What the environment asks for.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Off,
    Otlp(Protocol),
}

fn wanted(var: impl Fn(&str) -> Option<String>) -> Result<Wanted, String> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        || (set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none())
    {
        return Ok(Wanted::Off);
    }
    let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
    match protocol.as_deref().map(str::trim) {
        None | Some("http/protobuf") => Ok(Wanted::Otlp(Protocol::HttpBinary)),
        Some("grpc") => Ok(Wanted::Otlp(Protocol::Grpc)),
        Some(other) => Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported; use \"grpc\" or \"http/protobuf\""
        )),
    }
}

/// Builds the tracer when an OTLP endpoint is configured. Must run inside
/// the Tokio runtime (the gRPC channel lives there).
pub fn tracer(replica: &str) -> Result<Option<(Exporter, Tracer)>, String> {
    let Wanted::Otlp(protocol) = wanted(|name| std::env::var(name).ok())? else { return Ok(None) };
    let _ = REPLICA.set(replica.to_owned());
    let exporter = match protocol {
        Protocol::Grpc => SpanExporter::builder().with_tonic().build(),
        _ => SpanExporter::builder().with_http().with_protocol(protocol).build(),
    }
    .map_err(|e| format!("cannot set up the OTLP trace exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(replica, |name| std::env::var(name).ok()))
        .build();
    // The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG.
    let tracer = provider.tracer("gitops-reverser");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((Exporter { provider }, tracer)))
}

/// The process's resource: what `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES` say, else `gitops-reverser` and the replica name.
fn resource(replica: &str, var: impl Fn(&str) -> Option<String>) -> Resource {
    let attributes = var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let given = |key: &str| attributes.split(',').any(|kv| kv.trim().starts_with(&format!("{key}=")));
    let mut builder = Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none_or(|v| v.is_empty()) && !given("service.name") {
        builder = builder.with_service_name("gitops-reverser");
    }
    if !given("service.instance.id") {
        builder = builder.with_attribute(KeyValue::new("service.instance.id", replica.to_owned()));
    }
    builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build()
}

/// The OpenTelemetry identity of `span` (invalid when tracing is off).
pub fn context_of(span: &tracing::Span) -> SpanContext {
    if !enabled() || span.is_disabled() {
        return SpanContext::NONE;
    }
    span.context().span().span_context().clone()
}

/// Makes `span` a child of the span `parent` names (no-op when invalid).
pub fn set_parent(span: &tracing::Span, parent: &SpanContext) {
    if parent.is_valid() {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent.clone()));
    }
}

/// Links `span` to each valid context (the SDK keeps the first 128).
pub fn add_links<'a>(span: &tracing::Span, contexts: impl IntoIterator<Item = &'a SpanContext>) {
    if !enabled() || span.is_disabled() {
        return;
    }
    for context in contexts {
        span.add_link(context.clone());
    }
}

/// The trace id as 32 lowercase hex digits, if `context` is valid.
pub fn trace_id(context: &SpanContext) -> Option<String> {
    context.is_valid().then(|| context.trace_id().to_string())
}

/// What a queued change carries of its trace: the event span's identity
/// and, while it waits, the open `queue.wait` span.
#[derive(Clone, Debug)]
pub struct EventTrace {
    pub context: SpanContext,
    waiting: Option<tracing::Span>,
}

impl EventTrace {
    /// The trace of the current span; `wait` opens a `queue.wait` child.
    pub fn current(target: &dyn std::fmt::Display, wait: bool) -> Self {
        if !enabled() {
            return Self::default();
        }
        let current = tracing::Span::current();
        let context = context_of(&current);
        let waiting = (wait && context.is_valid())
            .then(|| {
            tracing::info_span!(target: TARGET, "queue.wait", git_target = %target, coalesced = tracing::field::Empty)
        });
        Self { context, waiting }
    }

    /// Ends the `queue.wait` span: the worker took the change.
    pub fn taken(&mut self) {
        self.waiting = None;
    }

    /// Ends the `queue.wait` span because a newer change replaced this one.
    pub fn coalesced(&mut self) {
        if let Some(span) = self.waiting.take() {
            span.record("coalesced", true);
        }
    }
}

impl Default for EventTrace {
    fn default() -> Self {
        Self { context: SpanContext::NONE, waiting: None }
    }
}

/// Tracing data never makes two changes different.
impl PartialEq for EventTrace {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EventTrace {}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(wanted(env(&[])), Ok(Wanted::Off));
        assert_eq!(wanted(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])), Ok(Wanted::Off));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(wanted(env(&[endpoint, ("OTEL_SDK_DISABLED", "true")])), Ok(Wanted::Off));
        assert_eq!(wanted(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])), Ok(Wanted::Off));
    }

    #[test]
    fn protocol_follows_the_standard_variables() {
        let endpoint = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces");
        assert_eq!(wanted(env(&[endpoint])), Ok(Wanted::Otlp(Protocol::HttpBinary)));
        assert_eq!(
            wanted(env(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])),
            Ok(Wanted::Otlp(Protocol::Grpc))
        );
        assert_eq!(
            wanted(env(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
            ])),
            Ok(Wanted::Otlp(Protocol::HttpBinary))
        );
        assert!(wanted(env(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])).is_err());
    }

    #[test]
    fn nothing_is_traced_while_off() {
        let trace = EventTrace::current(&"ns/t", true);
        assert!(!trace.context.is_valid() && trace.waiting.is_none());
        assert_eq!(trace_id(&SpanContext::NONE), None);
    }
}
