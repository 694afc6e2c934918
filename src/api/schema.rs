//! Schema fragments shared by several kinds.

use schemars::Schema;
use serde_json::json;

/// A Go duration made of whole or decimal units (`500ms`, `5s`, `1m30s`).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A DNS-1123 label, which is what a namespace name must be.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain (ServiceAccount and most object names).
pub const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Declares a `namespace` property that a CEL rule then forbids, so that a
/// WatchRule naming a namespace is rejected with a clear message instead of
/// having the field silently pruned.
pub fn declare_forbidden_namespace(schema: &mut Schema) {
    if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        props.insert(
            "namespace".into(),
            json!({
                "type": "string",
                "description": "Not allowed: a WatchRule may only target a GitTarget in its own namespace."
            }),
        );
    }
}
