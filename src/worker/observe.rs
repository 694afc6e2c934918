//! What a branch worker reports of its work, as spans (no decisions here).
//!
//! In: the changes' trace contexts and the branch. Out: `commit` spans
//! (children of the event that caused the change) and `push` spans (roots,
//! linked to every event whose commit they carry), and the trace id a
//! commit's `Trace-Id` trailer names.

use std::time::Instant;

use opentelemetry::trace::SpanContext;
use tracing::field::Empty;

use super::queue::ChangeMeta;
use crate::route::{BranchKey, TargetKey};
use crate::telemetry::trace::{self, TARGET};

/// Most links kept per span (the SDK's default limit).
const MAX_LINKS: usize = 128;

/// Where a commit came from: when its oldest event arrived, and the traces
/// of the events (or the list) it carries.
#[derive(Clone, Debug)]
pub struct Source {
    pub received_at: Instant,
    pub traces: Vec<SpanContext>,
    pub target: Option<TargetKey>,
}

impl Source {
    /// One change; its `queue.wait` span ends here.
    pub fn of(meta: &mut ChangeMeta) -> Self {
        meta.trace.taken();
        let traces = Some(meta.trace.context.clone()).filter(SpanContext::is_valid).into_iter().collect();
        Self { received_at: meta.received_at, traces, target: Some(meta.target.clone()) }
    }

    /// Changes committed together (a resync batch).
    pub fn of_all(metas: &[&ChangeMeta]) -> Self {
        let mut traces: Vec<SpanContext> = Vec::new();
        for meta in metas {
            let context = &meta.trace.context;
            if context.is_valid()
                && traces.len() < MAX_LINKS
                && !traces.iter().any(|t| t.span_id() == context.span_id())
            {
                traces.push(context.clone());
            }
        }
        let received_at = metas.iter().map(|m| m.received_at).min().unwrap_or_else(Instant::now);
        let mut targets = metas.iter().map(|m| &m.target);
        let first = targets.next().cloned();
        let target = first.filter(|first| targets.all(|t| t == first));
        Self { received_at, traces, target }
    }

    /// Work no event asked for (a sweep, a retain or a repair), decided at `at`.
    pub fn internal_at(at: Instant) -> Self {
        Self { received_at: at, traces: Vec::new(), target: None }
    }

    /// The trace id, when the commit belongs to exactly one trace.
    pub fn trace_id(&self) -> Option<String> {
        let first = self.traces.first()?;
        self.traces.iter().all(|t| t.trace_id() == first.trace_id()).then(|| first.trace_id().to_string())
    }
}

/// A `commit` span: a child of the first event, linked to the others.
pub fn commit_span(
    key: &BranchKey,
    repository: &str,
    shard: u32,
    source: &Source,
    files: usize,
) -> tracing::Span {
    let target = source.target.as_ref().map(ToString::to_string).unwrap_or_default();
    let span = tracing::info_span!(target: TARGET, parent: None, "commit",
        git_target = target, repository, branch = %key.branch, shard, files, sha = Empty);
    if let Some((first, rest)) = source.traces.split_first() {
        trace::set_parent(&span, first);
        trace::add_links(&span, rest);
    }
    span
}

/// A `push` span: a root linked to every event whose commit it carries.
pub fn push_span<'a>(
    key: &BranchKey,
    repository: &str,
    shard: u32,
    commits: usize,
    sources: impl Iterator<Item = &'a Source>,
) -> tracing::Span {
    let span = tracing::info_span!(target: TARGET, parent: None, "push",
        repository, branch = %key.branch, shard, commits, replica = trace::replica(),
        sha = Empty, result = Empty, reason = Empty, replays = Empty);
    if trace::enabled() {
        let mut linked = 0;
        for source in sources {
            for context in &source.traces {
                if linked < MAX_LINKS {
                    trace::add_links(&span, [context]);
                    linked += 1;
                }
            }
        }
    }
    span
}
