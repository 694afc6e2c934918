//! The process-wide metrics registry. Every name is prefixed
//! `gitops_reverser_` and exposed in OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Metrics shared by the whole process.
pub struct Metrics {
    registry: Registry,
    /// 1 while the Kubernetes API server answered the last check.
    pub api_server_reachable: Gauge,
    pub shards: ShardMetrics,
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
        Self { registry, api_server_reachable, shards }
    }

    /// The registry in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

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
