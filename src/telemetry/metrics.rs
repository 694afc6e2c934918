//! The process-wide metrics registry. Every name is prefixed
//! `gitops_reverser_` and exposed in OpenMetrics text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Metrics shared by the whole process.
pub struct Metrics {
    registry: Registry,
    /// 1 while the Kubernetes API server answered the last check.
    pub api_server_reachable: Gauge,
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
        Self { registry, api_server_reachable }
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
        let text = metrics.encode();
        assert!(text.contains("gitops_reverser_build_info{version=\""), "{text}");
        assert!(text.contains("gitops_reverser_api_server_reachable 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
