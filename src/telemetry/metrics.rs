//! The process-wide metrics registry. Every name is prefixed
//! `gitops_reverser_` and exposed in OpenMetrics text format; latency
//! histograms carry the trace id of an observation as an exemplar.
//!
//! Labels stay bounded: resources, GitTargets, repositories and branches,
//! results and reasons; never object names.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::{Registry, Unit};

use super::branch_metrics::BranchFamilies;
pub use super::branch_metrics::BranchMetrics;

/// Metrics shared by the whole process.
pub struct Metrics {
    registry: Registry,
    /// 1 while the Kubernetes API server answered the last check.
    pub api_server_reachable: Gauge,
    pub shards: ShardMetrics,
    pub events: EventMetrics,
    /// Watch streams this replica has open.
    pub watches_open: Gauge,
    target_ready: Family<TargetLabels, Gauge>,
    ready_known: Mutex<BTreeSet<TargetLabels>>,
    branches: BranchFamilies,
}

/// The exemplar of a latency observation: the trace it belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabel {
    pub trace_id: String,
}

/// A latency histogram with trace-id exemplars.
pub type Latency = HistogramWithExemplars<TraceLabel>;
pub(super) type LatencyFamily<L> = Family<L, Latency, fn() -> Latency>;

/// One watched resource, as `group/plural` (`core/configmaps`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
}

/// One GitTarget.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct TargetLabels {
    pub namespace: String,
    pub name: String,
}

/// What the watches saw and did.
#[derive(Clone)]
pub struct EventMetrics {
    pub received: Family<ResourceLabels, Counter>,
    pub routed: Family<TargetLabels, Counter>,
    /// Changes that reached no worker (its queue had closed; its restart resyncs).
    pub dropped: Counter,
    pub resync_duration: LatencyFamily<ResourceLabels>,
    pub resync_objects: Family<ResourceLabels, Counter>,
    /// Objects that could not be sanitized, so their selecting targets keep
    /// the last version written.
    pub sanitize_failures: Family<SanitizeLabels, Counter>,
}

/// One resource, and why its object did not sanitize (`SanitizeError::category`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct SanitizeLabels {
    pub resource: String,
    pub category: &'static str,
}

fn resync_buckets() -> Latency {
    HistogramWithExemplars::new(exponential_buckets(0.01, 2.0, 16))
}

impl EventMetrics {
    fn new() -> Self {
        Self {
            received: Family::default(),
            routed: Family::default(),
            dropped: Counter::default(),
            resync_duration: Family::new_with_constructor(resync_buckets),
            resync_objects: Family::default(),
            sanitize_failures: Family::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "events_received",
            "Watch events received, including objects listed during a resync",
            self.received.clone(),
        );
        registry.register(
            "events_routed",
            "Changes handed to a GitTarget's branch worker",
            self.routed.clone(),
        );
        registry.register(
            "events_dropped",
            "Changes that reached no branch worker because it had stopped (its restart resyncs them)",
            self.dropped.clone(),
        );
        registry.register_with_unit(
            "resync_duration",
            "Time from the start of a list to its end, per watched resource",
            Unit::Seconds,
            self.resync_duration.clone(),
        );
        registry.register("resync_objects", "Objects listed by resyncs", self.resync_objects.clone());
        registry.register(
            "sanitize_failures",
            "Objects that could not be sanitized: their selecting GitTargets keep the last version written",
            self.sanitize_failures.clone(),
        );
    }

    /// `group/plural` of a resource, `core` for the core group.
    pub fn resource(group: &str, plural: &str) -> ResourceLabels {
        let group = if group.is_empty() { "core" } else { group };
        ResourceLabels { resource: format!("{group}/{plural}") }
    }
}

/// Shard ownership as this replica sees it.
#[derive(Clone, Default)]
pub struct ShardMetrics {
    /// Shard Leases this replica holds.
    pub owned: Gauge,
    /// Shards with no live holder.
    pub unowned: Gauge,
    /// Shards acquired, released after draining, or lost (renew deadline missed).
    pub handovers: Family<HandoverLabels, Counter>,
    /// Renewals that failed (API errors, not lost races).
    pub renew_failures: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoverLabels {
    pub direction: &'static str,
}

impl ShardMetrics {
    pub fn handover(&self, direction: &'static str) {
        self.handovers.get_or_create(&HandoverLabels { direction }).inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register("shards_owned", "Shard Leases held by this replica", self.owned.clone());
        registry.register(
            "unowned_shards",
            "Shards whose Lease has no live holder, as seen by this replica",
            self.unowned.clone(),
        );
        registry.register(
            "shard_handovers",
            "Shards acquired, released after draining, or lost by this replica",
            self.handovers.clone(),
        );
        registry.register(
            "lease_renew_failures",
            "Lease renewals that failed with an API error",
            self.renew_failures.clone(),
        );
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gitops_reverser");
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        build_info.get_or_create(&vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]).set(1);
        registry.register("build_info", "Build information of the running binary", build_info);
        let api_server_reachable = Gauge::default();
        registry.register(
            "api_server_reachable",
            "1 while the Kubernetes API server answered the last check, else 0",
            api_server_reachable.clone(),
        );
        let shards = ShardMetrics::default();
        shards.register(&mut registry);
        let events = EventMetrics::new();
        events.register(&mut registry);
        let watches_open = Gauge::default();
        registry.register("watches_open", "Watch streams open on the API server", watches_open.clone());
        let target_ready = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "target_ready",
            "1 while the GitTarget's Ready condition is True, else 0",
            target_ready.clone(),
        );
        let branches = BranchFamilies::new();
        branches.register(&mut registry);
        Self {
            registry,
            api_server_reachable,
            shards,
            events,
            watches_open,
            target_ready,
            ready_known: Mutex::new(BTreeSet::new()),
            branches,
        }
    }

    /// The handles of one branch worker, labelled with its repository and branch.
    pub fn branch(&self, repository: &str, branch: &str) -> BranchMetrics {
        self.branches.bind(repository, branch)
    }

    /// Sets `target_ready` for every GitTarget in `ready`; targets that
    /// are gone lose their series.
    pub fn set_targets_ready(&self, ready: impl IntoIterator<Item = (TargetLabels, bool)>) {
        let mut known = self.ready_known.lock().expect("no panics while holding it");
        let mut now = BTreeSet::new();
        for (labels, is_ready) in ready {
            self.target_ready.get_or_create(&labels).set(i64::from(is_ready));
            now.insert(labels);
        }
        for gone in known.difference(&now) {
            self.target_ready.remove(gone);
        }
        *known = now;
    }

    /// The registry in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// A gauge of seconds.
pub(super) type Seconds = Gauge<f64, AtomicU64>;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_prefixed_and_terminated() {
        let metrics = Metrics::new();
        metrics.api_server_reachable.set(1);
        metrics.shards.handover("acquired");
        let text = metrics.encode();
        assert!(text.contains("gitops_reverser_build_info{version=\""), "{text}");
        assert!(text.contains("gitops_reverser_api_server_reachable 1"), "{text}");
        assert!(text.contains("gitops_reverser_shard_handovers_total{direction=\"acquired\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
