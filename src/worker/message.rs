//! Commit messages (pure): the subject names the operation and the object,
//! the body says which GitTarget wrote it and why.

use crate::api::Operation;
use crate::sanitize::DecodedPath;
use crate::worker::queue::ChangeMeta;

fn object_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

fn operation(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::All => "SYNC",
    }
}

/// `UPDATE ConfigMap team-a/settings` plus a body naming the target.
pub fn for_change(meta: &ChangeMeta) -> String {
    format!(
        "{} {} {}\n\nGitTarget: {}\nAPI version: {}\n",
        operation(meta.operation),
        meta.kind,
        object_name(meta.namespace.as_deref(), &meta.name),
        meta.target,
        meta.api_version,
    )
}

/// A delete found by a resync: the object no longer exists.
pub fn for_sweep(object: &DecodedPath, target: &crate::route::TargetKey) -> String {
    format!(
        "DELETE {} {}\n\nGitTarget: {target}\nThe object no longer exists; found while resyncing.\n",
        object.plural,
        object_name(object.namespace.as_deref(), &object.name),
    )
}

/// A delete because no rule selects the resource any more.
pub fn for_retain(object: &DecodedPath, target: &crate::route::TargetKey) -> String {
    format!(
        "DELETE {} {}\n\nGitTarget: {target}\nNo rule of this GitTarget selects {} any more.\n",
        object.plural,
        object_name(object.namespace.as_deref(), &object.name),
        object.plural,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::TargetKey;

    #[test]
    fn subject_names_operation_kind_and_object() {
        let meta = ChangeMeta {
            target: TargetKey::new("audit", "prod"),
            operation: Operation::Update,
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("team-a".into()),
            name: "settings".into(),
            received_at: std::time::Instant::now(),
        };
        let message = for_change(&meta);
        assert!(
            message.starts_with("UPDATE ConfigMap team-a/settings\n\nGitTarget: audit/prod\n"),
            "{message}"
        );
    }
}
