//! Synthetic ConfigMaps, shaped like the objects the API server sends in a
//! watch event (uid, resourceVersion, managedFields, labels), so the
//! sanitizer does the work it does for real ones.

use kube::api::DynamicObject;
use serde_json::{Value, json};

use crate::cluster::{object_name, value_of};

/// The namespace of every synthetic object (and of the GitTargets).
pub const NAMESPACE: &str = "lt";

/// The target (and branch `b<i>`) object `o-<j>` belongs to.
pub fn target_of(j: usize, branches: usize) -> usize {
    j % branches.max(1)
}

/// Object `o-<j>` holding the value of `seq`, as the JSON text of a watch
/// event's object.
pub fn event_text(j: usize, seq: u64, branches: usize) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": object_name(j),
            "namespace": NAMESPACE,
            "uid": format!("00000000-0000-4000-8000-{j:012}"),
            "resourceVersion": (1000 + seq).to_string(),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"lt-target": format!("t{}", target_of(j, branches))},
            "managedFields": [{
                "manager": "loadtest", "operation": "Apply", "apiVersion": "v1",
                "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:value": {}}, "f:metadata": {"f:labels": {"f:lt-target": {}}}}
            }]
        },
        "data": {"value": value_of(seq)}
    })
    .to_string()
}

/// What the watch task hands to dispatch: the event's bytes decoded as a
/// DynamicObject, then encoded as a JSON value (both steps cost CPU there too).
pub fn decode(text: &str) -> Result<Value, String> {
    let object: DynamicObject =
        serde_json::from_str(text).map_err(|e| format!("decoding a synthetic ConfigMap: {e}"))?;
    serde_json::to_value(&object).map_err(|e| format!("encoding a synthetic ConfigMap: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips_with_its_value_and_label() {
        let value = decode(&event_text(7, 42, 3)).unwrap();
        assert_eq!(value["metadata"]["name"], "o-7");
        assert_eq!(value["metadata"]["labels"]["lt-target"], "t1");
        assert_eq!(value["data"]["value"], "v42");
    }
}
