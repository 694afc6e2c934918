//! Deny-list sanitizing of one object (pure).
//!
//! In: a live object as JSON, as the API server returns it. Out: the same
//! object without what the server or its controllers wrote, so that the file
//! in git holds user intent and a no-op update gives the same bytes.
//!
//! A deny-list, not an allow-list: anything not named here is kept, so
//! StorageClass `provisioner`, ConfigMap `data`, Role `rules`, webhook
//! configurations' `webhooks`, RoleBinding `roleRef` and every CRD field
//! survive without this module knowing about them.
//!
//! Empty maps: `metadata.annotations` and `metadata.labels` are removed when
//! empty (the API server treats `{}` and absent alike there). Any other map
//! is removed only when this module emptied it (a Service `spec` that held
//! only a `clusterIP`). Empty maps the user wrote stay, e.g. a ConfigMap
//! `data: {}` or a volume's `emptyDir: {}`, which means something; the
//! server's own encoding of them is stable, so this costs no determinism.

use serde_json::{Map, Value};

/// Metadata the server writes on every object; never user intent.
const METADATA_ALWAYS: [&str; 9] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
];

/// Metadata that controllers maintain: owners are recreated by the owner,
/// finalizers are added by controllers and would block deletes on restore.
const METADATA_USUALLY: [&str; 2] = ["ownerReferences", "finalizers"];

/// Annotations that tools and controllers write, each changing on its own
/// schedule, so keeping them would turn git history into controller noise.
const ANNOTATIONS: [&str; 9] = [
    // kubectl's copy of the whole object: huge, and a second copy of the file.
    "kubectl.kubernetes.io/last-applied-configuration",
    // Deployment controller: rollout counter on Deployments and ReplicaSets,
    // and the replica bounds it stamps on ReplicaSets at every scale.
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    // DaemonSet controller: mirrors metadata.generation.
    "deprecated.daemonset.template.generation",
    // Endpoints controller: a timestamp rewritten on every pod change.
    "endpoints.kubernetes.io/last-change-trigger-time",
    // Annotation-based leader election: renewed every few seconds.
    "control-plane.alpha.kubernetes.io/leader",
    // PersistentVolume controller: binding bookkeeping.
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
];

/// Removes the deny-listed fields from an object; see the module docs.
/// A value that is not a JSON object is returned unchanged.
pub fn sanitize_value(mut object: Value) -> Value {
    let Value::Object(map) = &mut object else {
        return object;
    };
    map.remove("status");
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        for key in METADATA_ALWAYS.iter().chain(&METADATA_USUALLY) {
            meta.remove(*key);
        }
        if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
            for key in ANNOTATIONS {
                annotations.remove(key);
            }
        }
        for key in ["annotations", "labels"] {
            if meta.get(key).is_some_and(is_empty_map) {
                meta.remove(key);
            }
        }
    }
    if is_core(map, "Service") {
        drop_service_cluster_ips(map);
    }
    if is_core(map, "Pod") {
        // The scheduler's choice, not the user's.
        remove_pruning(map, &["spec", "nodeName"]);
    }
    drop_null_template_timestamps(map);
    object
}

fn is_empty_map(value: &Value) -> bool {
    value.as_object().is_some_and(Map::is_empty)
}

/// Whether the object is the core/v1 kind `kind`.
fn is_core(map: &Map<String, Value>, kind: &str) -> bool {
    map.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && map.get("kind").and_then(Value::as_str) == Some(kind)
}

/// `clusterIP(s)` are allocated by the API server, except `None`, which is
/// how a user asks for a headless Service and must survive.
fn drop_service_cluster_ips(map: &mut Map<String, Value>) {
    let Some(Value::Object(spec)) = map.get("spec") else {
        return;
    };
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None")
        || spec.get("clusterIPs").and_then(|ips| ips.get(0)).and_then(Value::as_str) == Some("None");
    if !headless {
        remove_pruning(map, &["spec", "clusterIP"]);
        remove_pruning(map, &["spec", "clusterIPs"]);
    }
}

/// Pod templates carry `metadata.creationTimestamp: null` (an artifact of
/// Go's encoding of an empty time), which says nothing.
fn drop_null_template_timestamps(map: &mut Map<String, Value>) {
    const TEMPLATE_METADATA: [&[&str]; 3] = [
        &["spec", "template", "metadata", "creationTimestamp"],
        &["spec", "jobTemplate", "metadata", "creationTimestamp"],
        &["spec", "jobTemplate", "spec", "template", "metadata", "creationTimestamp"],
    ];
    for path in TEMPLATE_METADATA {
        if lookup(map, path).is_some_and(Value::is_null) {
            remove_pruning(map, path);
        }
    }
    // StatefulSet volumeClaimTemplates are a list of PVC objects.
    if let Some(Value::Object(spec)) = map.get_mut("spec")
        && let Some(Value::Array(claims)) = spec.get_mut("volumeClaimTemplates")
    {
        for claim in claims.iter_mut().filter_map(Value::as_object_mut) {
            let path = ["metadata", "creationTimestamp"];
            if lookup(claim, &path).is_some_and(Value::is_null) {
                remove_pruning(claim, &path);
            }
        }
    }
}

fn lookup<'a>(map: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(map.get(*first)?, |value, key| value.get(key))
}

/// Removes the value at `path`, then removes each parent map that this
/// removal left empty (but never `map` itself).
fn remove_pruning(map: &mut Map<String, Value>, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        map.remove(*first);
        return;
    }
    let Some(Value::Object(child)) = map.get_mut(*first) else {
        return;
    };
    let was_empty = child.is_empty();
    remove_pruning(child, rest);
    if child.is_empty() && !was_empty {
        map.remove(*first);
    }
}

#[cfg(test)]
#[path = "denylist_tests.rs"]
mod tests;
