//! Logging, traces (OTLP) and the metrics registry.

mod branch_metrics;
mod exposition;
mod logging;
mod metrics;
pub mod trace;

pub use exposition::{Format, negotiate, to_text};
pub use logging::init;
pub use metrics::{
    BranchMetrics, EventMetrics, Metrics, ResourceLabels, SanitizeLabels, ShardMetrics, TargetLabels,
    TraceLabel,
};
