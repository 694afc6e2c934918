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

/// The `Trace-Id` trailer line of a change that has one trace, else nothing.
pub fn trace_trailer(trace_id: Option<String>) -> String {
    trace_id.map(|id| format!("Trace-Id: {id}\n")).unwrap_or_default()
}

/// Objects written while listing, and those the list found gone: the
/// branch catches up with the cluster in one commit.
pub fn for_resync(metas: &[&ChangeMeta], swept: &[(DecodedPath, crate::route::TargetKey)]) -> String {
    let mut targets: Vec<String> =
        metas.iter().map(|m| m.target.to_string()).chain(swept.iter().map(|(_, t)| t.to_string())).collect();
    targets.sort();
    targets.dedup();
    let mut lines: Vec<String> = metas
        .iter()
        .map(|m| {
            format!("{} {} {}", operation(m.operation), m.kind, object_name(m.namespace.as_deref(), &m.name))
        })
        .chain(
            swept.iter().map(|(o, _)| {
                format!("DELETE {} {}", o.plural, object_name(o.namespace.as_deref(), &o.name))
            }),
        )
        .collect();
    lines.sort();
    format!(
        "SYNC {} objects\n\nGitTarget: {}\nWritten as they are live, or deleted as gone, while resyncing (start, takeover, resume or relist):\n{}\n",
        lines.len(),
        targets.join(", "),
        lines.join("\n")
    )
}

/// Only a folder's kustomization.yaml was out of date (a new layout).
pub fn for_layout() -> String {
    "SYNC kustomization.yaml\n\nThe folder's kustomization.yaml lists its object files again (layout: kustomize).\n"
        .to_owned()
}

/// Deletes found by a resync: the objects no longer exist.
pub fn for_sweep(objects: &[DecodedPath], target: &crate::route::TargetKey) -> String {
    deletes(objects, target, "These objects no longer exist; found while resyncing.")
}

/// Deletes because no rule selects the resource any more.
pub fn for_retain(objects: &[DecodedPath], target: &crate::route::TargetKey) -> String {
    deletes(objects, target, "No rule of this GitTarget selects their resource any more.")
}

/// Files on the remote differed from the cluster (a hand edit, a lost
/// change) and were put back.
pub fn for_repair(files: usize) -> String {
    format!(
        "SYNC {files} files\n\nThe remote branch differed from the cluster in these files; they were put back to the live state.\n"
    )
}

fn deletes(objects: &[DecodedPath], target: &crate::route::TargetKey, why: &str) -> String {
    let names: Vec<String> = objects
        .iter()
        .map(|o| format!("{} {}", o.plural, object_name(o.namespace.as_deref(), &o.name)))
        .collect();
    let subject = match names.as_slice() {
        [one] => format!("DELETE {one}"),
        _ => format!("DELETE {} objects", names.len()),
    };
    format!("{subject}\n\nGitTarget: {target}\n{why}\n{}\n", names.join("\n"))
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
            resync: false,
            trace: Default::default(),
        };
        let message = for_change(&meta);
        assert_eq!(trace_trailer(None), "");
        assert_eq!(
            trace_trailer(Some("0af7651916cd43dd8448eb211c80319c".into())),
            "Trace-Id: 0af7651916cd43dd8448eb211c80319c\n"
        );
        assert!(
            message.starts_with("UPDATE ConfigMap team-a/settings\n\nGitTarget: audit/prod\n"),
            "{message}"
        );
    }
}
