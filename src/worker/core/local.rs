//! The local side of the core: queued items become drafts, drafts become
//! commits, and a failed commit keeps its place in line.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::{
    At, BranchCore, Change, Command, CommitFailure, Content, Draft, LocalCommit, MAX_RESYNC_BATCH, Note,
    RESYNC_HOLD,
};
use crate::api::Prune;
use crate::route::TargetKey;
use crate::worker::message::{self, Context, Message};
use crate::worker::observe::Source;
use crate::worker::policy::{backoff, resync_batch_hold};
use crate::worker::queue::{ChangeMeta, WorkItem};
use crate::worker::{author, kustomization};
use gix::ObjectId;

impl BranchCore {
    /// Until when listed objects at the head of the queue wait for more.
    pub(super) fn resync_hold(&self, now: Instant) -> Option<Instant> {
        if self.draining || !self.drafts.is_empty() {
            return None;
        }
        let (queued, list_ended) = (self.queue.len(), self.queue.has_barrier());
        match self.queue.front()? {
            WorkItem::Write { meta, .. } | WorkItem::Delete { meta, .. } if meta.resync => {
                resync_batch_hold(meta.received_at, queued, MAX_RESYNC_BATCH, list_ended, now)
            }
            _ => None,
        }
    }

    /// Writes the next draft, or the next change from the queue.
    pub(super) fn start_commit(&mut self, at: At, out: &mut Vec<Command>) {
        let now = at.now;
        if self.commit_retry_at.is_some_and(|at| at > now) {
            return;
        }
        loop {
            let draft = match self.drafts.pop_front() {
                Some(draft) => Some(draft),
                // Past the cap, changes wait (and coalesce) in the queue.
                None if self.chain.len() >= self.max_unpushed => None,
                None if self.resync_hold(now).is_some() => None,
                None => match self.queue.pop() {
                    Some(item) => self.draft_from(item, at),
                    None => {
                        // Nothing left to write (the failed draft turned out
                        // to change nothing): its retry delay goes with it,
                        // or the wake-up it asks for would find nothing to do.
                        self.commit_retry_at = None;
                        return;
                    }
                },
            };
            let Some(mut draft) = draft else { return };
            self.refresh_kustomizations(&mut draft.changes, &BTreeSet::new());
            let changes = self.effective(&draft.changes);
            if changes.is_empty() && !draft.marker {
                continue;
            }
            out.push(Command::Commit {
                parent: self.local_tip,
                changes,
                message: draft.message.clone(),
                source: draft.source.clone(),
                author: draft.author.clone(),
                allow_empty: draft.marker,
            });
            self.commit_in_flight = Some(draft);
            return;
        }
    }

    /// Puts in `changes` the kustomization.yaml of every `layout: kustomize`
    /// target whose set of files they alter, or that is in `check` or had
    /// one in them, computed against the tip it is about to be committed on
    /// (a replayed draft's copy may be stale).
    pub(super) fn refresh_kustomizations(&self, changes: &mut Vec<Change>, check: &BTreeSet<TargetKey>) {
        if self.settings.kustomize.is_empty() {
            return;
        }
        let mut check = check.clone();
        for (target, folder) in &self.settings.folders {
            let path = kustomization::path(folder);
            if changes.iter().any(|c| c.path == path) {
                check.insert(target.clone());
            }
        }
        let paths: BTreeSet<String> =
            self.settings.folders.iter().map(|(_, f)| kustomization::path(f)).collect();
        changes.retain(|c| !paths.contains(&c.path));
        let transitions: Vec<(&str, bool)> =
            changes.iter().map(|c| (c.path.as_str(), !matches!(c.content, Content::Gone))).collect();
        let updates = self.files.kustomizations(&transitions, &check);
        changes.extend(
            updates
                .into_iter()
                .map(|(path, content)| Change { path, content: Content::Bytes(content.into()) }),
        );
    }

    /// The changes that alter the local tip: per file the last (the only
    /// one a commit writes), where it differs from the view.
    pub(super) fn effective(&self, changes: &[Change]) -> Vec<Change> {
        last_per_path(changes.to_vec())
            .into_iter()
            .filter(|c| self.files.get(&c.path).copied() != c.content.blob_id())
            .collect()
    }

    /// Turns a queued item into a draft (None: it changes nothing).
    pub(super) fn draft_from(&mut self, item: WorkItem, at: At) -> Option<Draft> {
        let now = at.now;
        let resync =
            matches!(&item, WorkItem::Write { meta, .. } | WorkItem::Delete { meta, .. } if meta.resync);
        if resync {
            return self.resync_draft(item, now);
        }
        let (changes, message, source) = match item {
            WorkItem::Write { path, content, mut meta } => {
                let source = Source::of(&mut meta);
                let content = self.files.settle(&path, content);
                let change = Change { path, content };
                return Some(self.change_draft(change, &meta, source));
            }
            WorkItem::Delete { path, mut meta } if self.prune(&meta.target) == Prune::Never => {
                let source = Source::of(&mut meta);
                let message = message::for_kept(&meta, &timestamp(at.wall));
                // Nothing to mark when the branch never had the file: an
                // empty draft, which `start_commit` passes over.
                let marker = self.files.get(&path).is_some();
                return Some(Draft { marker, ..self.draft(Vec::new(), message, source) });
            }
            WorkItem::Delete { path, mut meta } => {
                let source = Source::of(&mut meta);
                let change = Change { path, content: Content::Gone };
                return Some(self.change_draft(change, &meta, source));
            }
            WorkItem::Sweep { scope, live } => {
                self.resyncing.remove(&(scope.target.clone(), scope.group.clone(), scope.plural.clone()));
                let doomed = self.prunable(&scope.target, || self.files.sweep(&scope, &live));
                if self.first_resync && self.resyncing.is_empty() {
                    // A new owner publishes its reconciled branch at once.
                    self.first_resync = false;
                    self.push_now = !self.chain.is_empty() || !doomed.is_empty();
                }
                let (paths, objects): (Vec<String>, Vec<_>) = doomed.into_iter().unzip();
                (gone(paths), message::for_sweep(&objects, &scope.target), Source::internal_at(now))
            }
            WorkItem::Retain { target, owned } => {
                // A Retain starts a resync of these resources; their sweeps end it.
                self.resyncing.extend(owned.iter().map(|(g, p)| (target.clone(), g.clone(), p.clone())));
                self.resync_until = Some(now + RESYNC_HOLD);
                let doomed = self.prunable(&target, || self.files.retain(&target, &owned));
                let (paths, objects): (Vec<String>, Vec<_>) = doomed.into_iter().unzip();
                (gone(paths), message::for_retain(&objects, &target), Source::internal_at(now))
            }
        };
        Some(self.draft(changes, message, source))
    }

    /// The prune policy of `target`.
    fn prune(&self, target: &TargetKey) -> Prune {
        self.settings.policies.get(target).map(|p| p.prune).unwrap_or_default()
    }

    /// What `doomed` lists, unless `target` keeps deleted objects' files.
    fn prunable<T>(&self, target: &TargetKey, doomed: impl FnOnce() -> Vec<T>) -> Vec<T> {
        if self.prune(target) == Prune::Never { Vec::new() } else { doomed() }
    }

    /// One object's change: its target's template, if any, shapes the
    /// message; its field manager, if known, is the author (a change found
    /// while resyncing is the operator's: nobody is known to have made it now).
    fn change_draft(&self, change: Change, meta: &ChangeMeta, source: Source) -> Draft {
        let message = self.change_message(meta, &source);
        let author = meta.manager.as_deref().filter(|_| !meta.resync).and_then(author::of_manager);
        Draft { author, ..self.draft(vec![change], message, source) }
    }

    fn change_message(&self, meta: &ChangeMeta, source: &Source) -> Message {
        let trace_id = source.trace_id();
        let template = self.settings.policies.get(&meta.target).and_then(|p| p.template.as_deref());
        let context = Context { replica: &self.settings.replica, trace_id: trace_id.as_deref(), template };
        message::for_change(meta, context)
    }

    /// `first` and the resync items queued right behind it, with the sweeps
    /// that end their lists, as one commit: listing objects is
    /// reconciliation, not a change anyone made, so a resync (a start, a
    /// resume, a relist) shows as one SYNC commit, deletions included.
    pub(super) fn resync_draft(&mut self, first: WorkItem, now: Instant) -> Option<Draft> {
        let is_resync = |item: &WorkItem| matches!(item, WorkItem::Write { meta, .. } | WorkItem::Delete { meta, .. } if meta.resync);
        let is_sweep = |item: &WorkItem| matches!(item, WorkItem::Sweep { .. });
        let mut items = vec![first];
        let mut sweeps = Vec::new();
        while items.len() < MAX_RESYNC_BATCH {
            if let Some(item) = self.queue.pop_if(is_resync) {
                items.push(item);
            } else if let Some(WorkItem::Sweep { scope, live }) = self.queue.pop_if(is_sweep) {
                sweeps.push((scope, live));
            } else {
                break;
            }
        }
        // Per file the last listed value: two lists queued before a commit
        // (a standby keeps them apart) must not make one commit write a
        // file twice, where only the last would be written.
        let listed: Vec<(&String, Content, &ChangeMeta)> = items
            .iter()
            .filter_map(|item| match item {
                WorkItem::Write { path, content, meta } => {
                    Some((path, self.files.settle(path, content.clone()), meta))
                }
                // A relist found it gone: a `prune: Never` target keeps the file.
                WorkItem::Delete { meta, .. } if self.prune(&meta.target) == Prune::Never => None,
                WorkItem::Delete { path, meta } => Some((path, Content::Gone, meta)),
                _ => None,
            })
            .collect();
        let latest = last_per_key(listed, |(path, _, _)| path.as_str());
        let mut changes = Vec::with_capacity(latest.len());
        let mut metas = Vec::with_capacity(latest.len());
        // Only what differs from the branch counts, so the message is true.
        for (path, content, meta) in latest {
            if self.files.get(path).copied() != content.blob_id() {
                changes.push(Change { path: path.clone(), content });
                metas.push(meta);
            }
        }
        let mut swept = Vec::new();
        for (scope, live) in &sweeps {
            self.resyncing.remove(&(scope.target.clone(), scope.group.clone(), scope.plural.clone()));
            for (path, object) in self.prunable(&scope.target, || self.files.sweep(scope, live)) {
                changes.push(Change { path, content: Content::Gone });
                swept.push((object, scope.target.clone()));
            }
        }
        // A resync ends with the folder's kustomization.yaml right (a new
        // layout, a hand edit), even when no object file changed.
        let swept_targets: BTreeSet<TargetKey> =
            sweeps.iter().map(|(scope, _)| scope.target.clone()).collect();
        self.refresh_kustomizations(&mut changes, &swept_targets);
        changes = self.effective(&changes);
        if !sweeps.is_empty() && self.first_resync && self.resyncing.is_empty() {
            // A new owner publishes its reconciled branch at once.
            self.first_resync = false;
            self.push_now = !self.chain.is_empty() || !changes.is_empty();
        }
        if changes.is_empty() {
            return None;
        }
        let (message, source) = match (metas.as_slice(), swept.as_slice()) {
            ([], []) => (message::for_layout(), Source::internal_at(now)),
            ([single], []) => {
                let source = Source::of_all(&metas);
                (self.change_message(single, &source), source)
            }
            ([], [(_, target), ..]) if swept.iter().all(|(_, t)| t == target) => {
                let objects: Vec<_> = swept.iter().map(|(o, _)| o.clone()).collect();
                (message::for_sweep(&objects, target), Source::internal_at(now))
            }
            ([], _) => (message::for_resync(&[], &swept), Source::internal_at(now)),
            _ => (message::for_resync(&metas, &swept), Source::of_all(&metas)),
        };
        Some(self.draft(changes, message, source))
    }

    /// A draft written by the operator (the shell's committer is its author).
    pub(super) fn draft(&self, changes: Vec<Change>, message: Message, source: Source) -> Draft {
        let message = message
            .trailer("Replica", &self.settings.replica)
            .trailer("Trace-Id", source.trace_id().unwrap_or_default())
            .text();
        Draft { changes, message, source, failures: 0, rebuilt: false, author: None, marker: false }
    }

    pub(super) fn on_committed(
        &mut self,
        result: Result<Option<ObjectId>, CommitFailure>,
        at: At,
        out: &mut Vec<Command>,
    ) {
        let Some(mut draft) = self.commit_in_flight.take() else { return };
        match result {
            Ok(id) => {
                self.commit_retry_at = None;
                self.state.local_error = None;
                let changes = self.effective(&draft.changes);
                for change in &changes {
                    self.files.record(&change.path, &change.content);
                }
                // The tree already held it: the view was behind, nothing to push.
                let Some(id) = id else { return };
                self.local_tip = Some(id);
                self.chain.push_back(LocalCommit {
                    id,
                    changes,
                    message: draft.message,
                    source: draft.source,
                    committed_at: at.now,
                    author: draft.author,
                    marker: draft.marker,
                });
            }
            Err(failure) if failure.conflict && draft.changes.len() > 1 => {
                // Find the one that cannot be written; the others must not wait for it.
                let second = draft.changes.split_off(draft.changes.len() / 2);
                let half = |changes| Draft { changes, failures: 0, ..draft.clone() };
                self.drafts.push_front(half(second));
                self.drafts.push_front(half(draft.changes.clone()));
            }
            Err(failure) if failure.conflict => {
                let path = draft.changes.first().map(|c| c.path.clone()).unwrap_or_default();
                self.state.local_error = Some(format!("cannot write {path}: {}", failure.message));
                out.push(Command::Note(Note::Unwritable { path, message: failure.message }));
            }
            Err(failure) => {
                // Disk full, I/O: keep it first in line and try again later.
                self.state.local_error = Some(failure.message);
                self.commit_retry_at = Some(at.now + backoff(draft.failures, self.settings.salt));
                draft.failures += 1;
                self.drafts.push_front(draft);
            }
        }
    }
}

/// One change per file, its last, in the order of the files' first changes.
pub(super) fn last_per_path(changes: Vec<Change>) -> Vec<Change> {
    last_per_key(changes, |change| change.path.as_str())
}

/// The last item per key, in the order of the keys' first items.
fn last_per_key<T>(items: Vec<T>, key: impl Fn(&T) -> &str) -> Vec<T> {
    let mut position: HashMap<String, usize> = HashMap::with_capacity(items.len());
    let mut unique: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        match position.get(key(&item)) {
            Some(&at) => unique[at] = item,
            None => {
                position.insert(key(&item).to_owned(), unique.len());
                unique.push(item);
            }
        }
    }
    unique
}

fn gone(paths: Vec<String>) -> Vec<Change> {
    paths.into_iter().map(|path| Change { path, content: Content::Gone }).collect()
}

/// `2026-12-05T12:00:00Z`: the wall clock to the second, for a trailer.
fn timestamp(wall: std::time::SystemTime) -> String {
    let seconds = wall.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    k8s_openapi::jiff::Timestamp::from_second(seconds as i64).map(|t| t.to_string()).unwrap_or_default()
}
