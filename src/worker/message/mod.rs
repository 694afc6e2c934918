//! Commit messages (pure). A subject short enough for `git log --oneline`
//! (`update configmaps/shop/web-config`: operation, resource, namespace,
//! name), a body a person reads, and git trailers a machine parses
//! (`GitTarget:`, `Manager:`, `Resource-Version:`, `Replica:`,
//! `Trace-Id:`, `Deleted-At:`), always as the last paragraph so
//! `git interpret-trailers --parse` finds them. A GitTarget's (or its
//! GitProvider's) `commit.messageTemplate` replaces the subject and body of
//! a one-object commit; the trailers stay.

pub mod template;

use std::fmt::Write as _;

use crate::api::Operation;
use crate::route::TargetKey;
use crate::sanitize::DecodedPath;
use crate::worker::queue::ChangeMeta;
use template::{Field, Template};

/// A commit message: subject and body, then trailers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The subject line, then (after a blank line) the body.
    head: String,
    trailers: Vec<(&'static str, String)>,
}

impl Message {
    pub fn new(head: impl Into<String>) -> Self {
        Self { head: head.into(), trailers: Vec::new() }
    }

    /// Adds `key: value`; the value is made one line, and an empty one is left out.
    pub fn trailer(mut self, key: &'static str, value: impl AsRef<str>) -> Self {
        let value = template::one_line(value.as_ref());
        let value = value.trim();
        if !value.is_empty() {
            self.trailers.push((key, value.to_owned()));
        }
        self
    }

    /// What git stores: the head, a blank line, one trailer per line.
    pub fn text(&self) -> String {
        let mut text = self.head.trim_end().to_owned();
        if !self.trailers.is_empty() {
            text.push('\n');
        }
        for (key, value) in &self.trailers {
            let _ = write!(text, "\n{key}: {value}");
        }
        text.push('\n');
        text
    }
}

/// `configmaps/shop/web-config`, or `clusterroles/admin` without a namespace.
fn object_ref(plural: &str, namespace: Option<&str>, name: &str) -> String {
    let name = template::one_line(name);
    match namespace {
        Some(ns) => format!("{plural}/{}/{name}", template::one_line(ns)),
        None => format!("{plural}/{name}"),
    }
}

/// `ConfigMap shop/web-config`.
fn kind_and_name(meta: &ChangeMeta) -> String {
    let name = template::one_line(&meta.name);
    match &meta.namespace {
        Some(ns) => format!("{} {}/{name}", meta.kind, template::one_line(ns)),
        None => format!("{} {name}", meta.kind),
    }
}

fn operation(op: Operation) -> &'static str {
    match op {
        Operation::Create => "create",
        Operation::Update => "update",
        Operation::Delete => "delete",
        Operation::All => "sync",
    }
}

/// What a template and the trailers can say about a commit beyond its change.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    pub replica: &'a str,
    pub trace_id: Option<&'a str>,
    pub template: Option<&'a Template>,
}

/// One object's change: the template's subject and body, or
/// `update configmaps/shop/web-config` and a sentence; its target,
/// manager and resourceVersion as trailers.
pub fn for_change(meta: &ChangeMeta, context: Context) -> Message {
    let rendered = context
        .template
        .map(|t| t.render(|field| value(meta, &context, field)))
        .filter(|text| !template::subject_of(text).is_empty());
    let head = rendered.unwrap_or_else(|| default_head(meta));
    Message::new(head)
        .trailer("GitTarget", meta.target.to_string())
        .trailer("Manager", meta.manager.as_deref().unwrap_or_default())
        .trailer("Resource-Version", meta.resource_version.as_deref().unwrap_or_default())
}

fn default_head(meta: &ChangeMeta) -> String {
    let subject = format!(
        "{} {}",
        operation(meta.operation),
        object_ref(&meta.plural, meta.namespace.as_deref(), &meta.name)
    );
    let what = format!("{} ({})", kind_and_name(meta), meta.api_version);
    let by = meta.manager.as_deref().map(|m| format!(" by {}", template::one_line(m))).unwrap_or_default();
    let body = match meta.operation {
        _ if meta.resync => format!("{what} is written as it is live, found while resyncing."),
        Operation::Create => format!("{what} was created{by}."),
        Operation::Delete => format!("{what} was deleted."),
        _ => format!("{what} was changed{by}."),
    };
    format!("{subject}\n\n{body}")
}

/// The value of `field` for one change.
fn value(meta: &ChangeMeta, context: &Context, field: Field) -> Option<String> {
    let (group, version) = match meta.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", meta.api_version.as_str()),
    };
    Some(match field {
        Field::Operation => operation(meta.operation).to_owned(),
        Field::Kind => meta.kind.clone(),
        Field::Group => group.to_owned(),
        Field::Version => version.to_owned(),
        Field::APIVersion => meta.api_version.clone(),
        Field::Resource => meta.plural.clone(),
        Field::Namespace => meta.namespace.clone()?,
        Field::Name => meta.name.clone(),
        Field::ResourceVersion => meta.resource_version.clone()?,
        Field::Manager => meta.manager.clone()?,
        Field::Replica => context.replica.to_owned(),
        Field::TraceID => context.trace_id?.to_owned(),
        Field::Target => meta.target.to_string(),
    })
}

/// An object deleted from the cluster whose file a `prune: Never` target
/// keeps: the commit changes no file, its trailers say what went when.
pub fn for_kept(meta: &ChangeMeta, deleted_at: &str) -> Message {
    let subject =
        format!("delete {} (file kept)", object_ref(&meta.plural, meta.namespace.as_deref(), &meta.name));
    let body = format!(
        "{} ({}) was deleted from the cluster; the GitTarget's prune: Never keeps its file.",
        kind_and_name(meta),
        meta.api_version
    );
    Message::new(format!("{subject}\n\n{body}"))
        .trailer("GitTarget", meta.target.to_string())
        .trailer("Deleted-At", deleted_at)
        .trailer("Resource-Version", meta.resource_version.as_deref().unwrap_or_default())
}

/// Objects written while listing, and those the list found gone: the
/// branch catches up with the cluster in one commit.
pub fn for_resync(metas: &[&ChangeMeta], swept: &[(DecodedPath, TargetKey)]) -> Message {
    let mut targets: Vec<String> =
        metas.iter().map(|m| m.target.to_string()).chain(swept.iter().map(|(_, t)| t.to_string())).collect();
    targets.sort();
    targets.dedup();
    let mut lines: Vec<String> = metas
        .iter()
        .map(|m| {
            format!("{} {}", operation(m.operation), object_ref(&m.plural, m.namespace.as_deref(), &m.name))
        })
        .chain(
            swept
                .iter()
                .map(|(o, _)| format!("delete {}", object_ref(&o.plural, o.namespace.as_deref(), &o.name))),
        )
        .collect();
    lines.sort();
    let head = format!(
        "sync {} objects\n\nWritten as they are live, or deleted as gone, while resyncing (start, takeover, resume or relist):\n{}",
        lines.len(),
        lines.join("\n")
    );
    targets.into_iter().fold(Message::new(head), |message, target| message.trailer("GitTarget", target))
}

/// Only a folder's kustomization.yaml was out of date (a new layout).
pub fn for_layout() -> Message {
    Message::new(
        "sync kustomization.yaml\n\nThe folder's kustomization.yaml lists its object files again (layout: kustomize).",
    )
}

/// Deletes found by a resync: the objects no longer exist.
pub fn for_sweep(objects: &[DecodedPath], target: &TargetKey) -> Message {
    deletes(objects, target, "These objects no longer exist; found while resyncing.")
}

/// Deletes because no rule selects the resource any more.
pub fn for_retain(objects: &[DecodedPath], target: &TargetKey) -> Message {
    deletes(objects, target, "No rule of this GitTarget selects their resource any more.")
}

/// Files on the remote differed from the cluster (a hand edit, a lost
/// change) and were put back.
pub fn for_repair(files: usize) -> Message {
    Message::new(format!(
        "sync {files} files\n\nThe remote branch differed from the cluster in these files; they were put back to the live state."
    ))
}

fn deletes(objects: &[DecodedPath], target: &TargetKey, why: &str) -> Message {
    let names: Vec<String> =
        objects.iter().map(|o| object_ref(&o.plural, o.namespace.as_deref(), &o.name)).collect();
    let subject = match names.as_slice() {
        [one] => format!("delete {one}"),
        _ => format!("delete {} objects", names.len()),
    };
    Message::new(format!("{subject}\n\n{why}\n{}", names.join("\n"))).trailer("GitTarget", target.to_string())
}

#[cfg(test)]
mod tests;
