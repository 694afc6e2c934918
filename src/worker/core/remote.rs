//! The remote side of the core: when to push, what a push's answer means,
//! and how a fetched tip is reconciled with the pending commits.

use std::collections::{HashMap, HashSet, VecDeque};

use super::replay;
use super::{
    At, BranchCore, COMMITS_PER_MAINTENANCE, Command, Draft, FENCE_RETRY, FETCHES_PER_MAINTENANCE,
    FetchPurpose, Fetched, HistoryFrom, MAX_COMMITS_PER_PUSH, MAX_REPLAYS, Note, Phase, PushReply,
    QUARANTINE_AFTER, RemoteOp, Takeover,
};
use crate::api::Reason;
use crate::worker::files::BranchFiles;
use crate::worker::message;
use crate::worker::observe::Source;
use crate::worker::policy::{backoff, next_push_limit};

/// The least wait before fetching again a branch that was past a limit.
pub(super) const TOO_LARGE_RETRY: std::time::Duration = std::time::Duration::from_secs(120);
use crate::worker::queue::WorkItem;
use crate::worker::repo::LocalRepo;
use std::time::{Duration, Instant};

/// How much earlier than a standby the owner may receive a change (a
/// watch's delivery differs between replicas): a history starts at least
/// this long before the oldest pending change.
const RECEIVE_SKEW: Duration = Duration::from_secs(2);

/// How long a drain's push waits for the commits of what is queued.
pub(super) const DRAIN_GATHER: Duration = Duration::from_secs(1);

impl BranchCore {
    pub(super) fn fetch(&mut self, purpose: FetchPurpose, now: Instant, out: &mut Vec<Command>) {
        self.remote_op = RemoteOp::Fetching(purpose);
        if self.takeover == Takeover::Due {
            self.takeover = Takeover::Fetching;
        }
        // A takeover and a trim ask what the owner wrote while this worker stood by.
        let wants_history = self.takeover == Takeover::Fetching || purpose == FetchPurpose::Trim;
        let history = if wants_history { self.history_start(now) } else { None };
        // A push whose answer was lost may have carried any of them.
        let known = self.chain.iter().map(|c| c.id).collect();
        out.push(Command::Fetch { known, since: self.remote_tip, history });
    }

    /// Where the history of what the owner wrote starts: at the newest mark
    /// set before the oldest pending change arrived, less a margin for the
    /// owner receiving it first. Older marks are forgotten.
    fn history_start(&mut self, now: Instant) -> Option<HistoryFrom> {
        let oldest = [self.queue.oldest()]
            .into_iter()
            .chain(self.chain.iter().map(|c| Some(c.source.received_at)))
            .chain(self.drafts.iter().chain(&self.commit_in_flight).map(|d| Some(d.source.received_at)))
            .flatten()
            .min()
            .unwrap_or(now);
        let covered = oldest.checked_sub(RECEIVE_SKEW).unwrap_or(oldest);
        let usable = self.standby_marks.iter().rposition(|(_, at)| *at <= covered).unwrap_or(0);
        self.standby_marks.drain(..usable);
        self.standby_marks.front().map(|(from, _)| *from)
    }

    /// When the next push is due, if anything waits for one.
    pub(super) fn push_due(&self, now: Instant) -> Option<Instant> {
        if self.settings.standby {
            return None;
        }
        // Commits being written again on a fetched tip go out together.
        let rebuilding = self.drafts.iter().chain(&self.commit_in_flight).any(|d| d.rebuilt);
        if rebuilding && self.commit_retry_at.is_none() {
            return None;
        }
        let oldest = self.chain.front().map(|c| c.committed_at);
        let due = self.settings.push.due(self.chain.len(), oldest, now)?;
        let due = match self.draining_since {
            Some(since) if self.gathering_for_drain() => since + DRAIN_GATHER,
            Some(_) => now,
            None if self.push_now || self.round => now,
            None => due,
        };
        let due = self.retry_at.map_or(due, |retry| retry.max(due));
        match self.resync_until {
            Some(until) if !self.resyncing.is_empty() && !self.draining => Some(due.max(until)),
            _ => Some(due),
        }
    }

    /// A draining worker commits what it holds before it pushes: one push
    /// of everything beats several racing the shutdown deadline (a slow git
    /// server fits one push in the budget, not three). Commits take
    /// milliseconds, so this waits at most [`DRAIN_GATHER`] from the start
    /// of the drain (a handover keeps routing changes to it); a full push
    /// batch, the unpushed cap or a failing commit goes at once.
    fn gathering_for_drain(&self) -> bool {
        let holding = !self.queue.is_empty() || !self.drafts.is_empty() || self.commit_in_flight.is_some();
        holding && self.commit_retry_at.is_none() && self.chain.len() < self.push_limit.min(self.max_unpushed)
    }

    pub(super) fn push(&mut self, out: &mut Vec<Command>) {
        let commits = self.push_limit.min(self.chain.len());
        let Some(last) = commits.checked_sub(1) else { return };
        let local = self.chain[last].id;
        let sources = self.chain.iter().take(commits).map(|c| c.source.clone()).collect();
        // What waited to go out at once is in this push.
        self.push_now = false;
        self.remote_op = RemoteOp::Pushing { commits, left_behind: self.chain.len() > commits };
        out.push(Command::Push { local, expected: self.remote_tip, commits, sources });
    }

    pub(super) fn on_pushed(&mut self, reply: PushReply, at: At, out: &mut Vec<Command>) {
        let RemoteOp::Pushing { commits, left_behind } = self.remote_op else { return };
        self.remote_op = RemoteOp::Idle;
        match reply {
            PushReply::Pushed => {
                let tip = self.chain[commits - 1].id;
                self.acknowledge(commits, out);
                self.remote_tip = Some(tip);
                self.push_limit = next_push_limit(self.push_limit, commits, true, MAX_COMMITS_PER_PUSH);
                // The rest of a capped backlog goes out at once; what was
                // committed while the push ran waits for its interval (or
                // for the next push of the repository).
                self.push_now = (self.push_now || left_behind) && !self.chain.is_empty();
                self.remote_ok(at);
                self.replays = 0;
                self.rejection = None;
                if self.phase == Phase::Quarantined {
                    self.phase = Phase::Running;
                }
                self.state.last_push = Some(at.wall);
                self.state.last_push_failed = false;
                self.state.branch_exists = true;
                self.state.remote_tip = Some(tip.to_string());
                out.push(Command::KeepTip(tip));
                self.commits_since_maintenance += commits;
                if self.commits_since_maintenance >= COMMITS_PER_MAINTENANCE {
                    self.commits_since_maintenance = 0;
                    out.push(Command::Maintain);
                }
            }
            PushReply::Stale => {
                self.replays += 1;
                self.rebase_needed = true;
                if self.replays > MAX_REPLAYS {
                    self.replays = 0;
                    let message = format!(
                        "branch {:?} kept moving: {MAX_REPLAYS} replays on new tips were all overtaken by other pushes",
                        self.branch_label()
                    );
                    self.remote_failed(Reason::GitOperationFailed, message, commits, at);
                }
            }
            PushReply::Rejected(message) => {
                let count = match &self.rejection {
                    Some((last, count)) if *last == message => count + 1,
                    _ => 1,
                };
                self.rejection = Some((message.clone(), count));
                if count >= QUARANTINE_AFTER && self.phase == Phase::Running {
                    self.phase = Phase::Quarantined;
                }
                // The ref did not move, so nothing was applied: no rebase.
                self.remote_failed(Reason::GitOperationFailed, message, commits, at);
            }
            PushReply::Failed { reason, message } => {
                // It may have been applied: the next push or fetch finds out,
                // and recognises our own commits on the remote.
                self.remote_failed(reason, message, commits, at);
            }
            PushReply::Fenced => {
                self.retry_at = Some(at.now + FENCE_RETRY);
            }
        }
    }

    pub(super) fn branch_label(&self) -> String {
        self.settings.folders.first().map(|(t, _)| t.to_string()).unwrap_or_default()
    }

    /// Drops the first `count` commits: a push carrying them was acknowledged.
    pub(super) fn acknowledge(&mut self, count: usize, out: &mut Vec<Command>) {
        let sources = self.chain.drain(..count).map(|c| c.source).collect();
        out.push(Command::Note(Note::Acked { sources }));
    }

    pub(super) fn remote_ok(&mut self, at: At) {
        self.failures = 0;
        self.retry_at = None;
        self.state.error = None;
        self.state.last_checked = Some(at.wall);
    }

    pub(super) fn remote_failed(&mut self, reason: Reason, message: String, attempted: usize, at: At) {
        self.push_limit = next_push_limit(self.push_limit, attempted.max(1), false, MAX_COMMITS_PER_PUSH);
        self.retry_at = Some(at.now + backoff(self.failures, self.settings.salt));
        self.failures += 1;
        self.state.last_push_failed = true;
        self.state.error = Some((reason, message));
        self.state.last_checked = Some(at.wall);
    }

    pub(super) fn on_fetched(
        &mut self,
        result: Result<Fetched, (Reason, String)>,
        at: At,
        out: &mut Vec<Command>,
    ) {
        let RemoteOp::Fetching(purpose) = self.remote_op else { return };
        self.remote_op = RemoteOp::Idle;
        let fetched = match result {
            Ok(fetched) => fetched,
            Err((reason, message)) => {
                if self.takeover == Takeover::Fetching {
                    self.takeover = Takeover::Due;
                }
                #[cfg(test)]
                if self.sabotage == super::sim::Sabotage::DropPendingOnFetchError
                    && purpose == FetchPurpose::Rebase
                {
                    self.chain.clear();
                }
                // Nothing pending is touched: the chain stays as it was.
                let mut wait = backoff(self.failures, self.settings.salt);
                if reason == Reason::RemoteTooLarge {
                    // Each try may receive the whole limit again; the tenant
                    // has to change the branch, which takes longer than a blip.
                    wait = wait.max(TOO_LARGE_RETRY);
                }
                self.retry_at = Some(at.now + wait);
                self.failures += 1;
                self.state.error = Some((reason, message));
                self.state.last_checked = Some(at.wall);
                return;
            }
        };
        // Each fetch keeps its own pack; maintenance consolidates them.
        self.fetches_since_maintenance += 1;
        if self.fetches_since_maintenance >= FETCHES_PER_MAINTENANCE {
            self.fetches_since_maintenance = 0;
            out.push(Command::Maintain);
        }
        if purpose == FetchPurpose::Start {
            self.phase = Phase::Running;
            self.state.active = true;
        }
        #[cfg(test)]
        let fetched = match self.sabotage {
            super::sim::Sabotage::IgnoreContained => Fetched { contains: None, ..fetched },
            _ => fetched,
        };
        if let Some(contained) = fetched.contains
            && let Some(index) = self.chain.iter().position(|c| c.id == contained)
        {
            self.acknowledge(index + 1, out);
        }
        if purpose == FetchPurpose::Trim {
            self.trim(&fetched, at, out);
            return;
        }
        let takeover = self.takeover == Takeover::Fetching;
        // Read before the takeover drops what the previous owner wrote.
        let lagging = if takeover { self.lagging_view() } else { None };
        if takeover {
            self.takeover = Takeover::No;
            #[cfg(test)]
            let sabotaged = self.sabotage == super::sim::Sabotage::ReplayWholeStandby;
            #[cfg(not(test))]
            let sabotaged = false;
            if !sabotaged {
                let (dropped, pending) =
                    self.drop_written_by_previous_owner(&fetched.files, fetched.history.as_deref());
                let by_history = fetched.history.is_some();
                out.push(Command::Note(Note::TakenOver { dropped, pending, by_history }));
            }
        }
        // At a takeover the standby's view is the cluster as it received it,
        // and what the tip holds beyond it (a hand edit made just before,
        // which the view would otherwise adopt for good) is repaired; but not
        // while the view is unsettled, nor where it lags (see `lagging_view`).
        let start = purpose == FetchPurpose::Start || (takeover && lagging.is_none());
        replay::settle_sealed(
            &mut self.files,
            self.chain
                .iter_mut()
                .map(|c| &mut c.changes)
                .chain(self.drafts.iter_mut().map(|d| &mut d.changes)),
            &fetched.files,
            &fetched.sealed,
        );
        let mut plan =
            replay::plan(&self.files, self.chain.iter().map(|c| c.changes.as_slice()), &fetched.files, start);
        if let Some(lagging) = &lagging {
            plan.repair.retain(|c| !lagging.contains(&c.path));
            plan.drift = plan.repair.len();
        }
        if plan.drift > 0 {
            out.push(Command::Note(Note::Drift { paths: plan.drift }));
        }
        // The chain's commits are not on the remote: write them again on its tip.
        let rebuilt: Vec<Draft> = plan
            .commits
            .into_iter()
            .zip(self.chain.drain(..))
            .filter(|(changes, c)| !changes.is_empty() || c.marker)
            .map(|(changes, c)| Draft {
                changes,
                message: c.message,
                source: c.source,
                failures: 0,
                rebuilt: true,
                author: c.author,
                marker: c.marker,
            })
            .collect();
        let mut drafts: VecDeque<Draft> = rebuilt.into();
        if !plan.repair.is_empty() {
            let message = message::for_repair(plan.repair.len());
            let repair = self.draft(plan.repair, message, Source::internal_at(at.now));
            drafts.push_back(Draft { rebuilt: true, ..repair });
        }
        drafts.extend(self.drafts.drain(..));
        self.drafts = drafts;
        if self.settings.standby {
            // What the standby fetched: the takeover tells hand edits by it.
            self.standby_base = fetched.files.iter().cloned().collect();
        }
        self.files = BranchFiles::with_kustomize(
            fetched.files,
            self.settings.folders.clone(),
            self.settings.kustomize.clone(),
        )
        .with_sealed(fetched.sealed);
        self.local_tip = fetched.tip;
        self.remote_tip = fetched.tip;
        // A fetch that started before a takeover cannot show the old owner's last push.
        self.rebase_needed = self.takeover == Takeover::Due;
        self.remote_ok(at);
        self.state.branch_exists = fetched.tip.is_some();
        self.state.sops_config = fetched.sops_config.map(Into::into);
        self.state.remote_tip = fetched.tip.map(|t| t.to_string());
        if !self.drafts.is_empty() && purpose == FetchPurpose::Rebase {
            self.push_now = true;
        }
    }

    /// On standby: drops what the owner pushed meanwhile. Only the pending
    /// changes shrink: the view stays this worker's own (the owner's tip
    /// may be mid-way through a replay), and so do its commits, which the
    /// takeover writes again on the tip anyway. A trim that returns after
    /// the standby ended changes nothing: the takeover fetch decides.
    fn trim(&mut self, fetched: &Fetched, at: At, out: &mut Vec<Command>) {
        self.remote_ok(at);
        if !self.settings.standby || self.takeover != Takeover::No {
            return;
        }
        // Only what is committed: those changes are in the view already,
        // while a queued one dropped would leave the view behind the owner.
        // The commits are a prefix of what it received, so a prefix of
        // each file's changes, as the takeover's matching expects. Without
        // the history nothing is dropped: guessing a cut may lose a value.
        let pending: Vec<(&str, Option<gix::ObjectId>)> = self
            .chain
            .iter()
            .flat_map(|c| &c.changes)
            .map(|c| (c.path.as_str(), c.content.blob_id()))
            .collect();
        let Some(history) = fetched.history.as_deref() else { return };
        let (mut drops, _) = replay::takeover_drops_by_history(&pending, &fetched.files, history);
        // A file's written prefix that ends in a deletion keeps it: a later
        // match against the same history would take the next pending
        // deletion for the one the owner wrote, and drop what lies between.
        let mut last_dropped: HashMap<&str, usize> = HashMap::new();
        for (index, (path, _)) in pending.iter().enumerate().filter(|(i, _)| drops[*i]) {
            last_dropped.insert(path, index);
        }
        for index in last_dropped.into_values().filter(|i| pending[*i].1.is_none()) {
            drops[index] = false;
        }
        let (dropped, pending) = (drops.iter().filter(|d| **d).count(), drops.len());
        let mut drops = drops.into_iter();
        for commit in &mut self.chain {
            commit.changes.retain(|_| !drops.next().unwrap_or(false));
        }
        self.chain.retain(|c| !c.changes.is_empty() || c.marker);
        out.push(Command::Note(Note::Trimmed { dropped, pending }));
        // Whatever the owner receives from now on, it writes after this tip.
        if let Some(tip) = fetched.tip {
            self.standby_marks.push_back((HistoryFrom::Commit(tip), at.now));
        }
    }

    /// The files where the view lags the cluster: those with changes not
    /// committed yet (queued, drafted, in flight; the takeover may drop
    /// them as written, yet the view lacks them). `None` while the view is
    /// unsettled: its list is not through (a sweep still queued), so it may
    /// hold files the cluster no longer has.
    fn lagging_view(&self) -> Option<HashSet<String>> {
        let settled = self.listing.is_empty() && self.resyncing.is_empty() && !self.queue.has_barrier();
        settled.then(|| {
            let queued = self.queue.changes().map(|(path, _)| path.to_owned());
            let drafted = self.drafts.iter().chain(&self.commit_in_flight).flat_map(|d| &d.changes);
            queued.chain(drafted.map(|c| c.path.clone())).collect()
        })
    }

    /// After a takeover from standby: drops from the commits and the queue
    /// what the previous owner wrote (see `replay::takeover_drops`), and
    /// the queued sweeps before it (they would delete what it wrote after
    /// the list they end). Returns (dropped, pending) changes.
    fn drop_written_by_previous_owner(
        &mut self,
        tip: &[(String, gix::ObjectId)],
        history: Option<&[(String, Option<gix::ObjectId>)]>,
    ) -> (usize, usize) {
        let committed =
            self.chain.iter().map(|c| &c.changes).chain(self.drafts.iter().map(|d| &d.changes)).flatten();
        let mut pending: Vec<(&str, Option<gix::ObjectId>)> =
            committed.map(|c| (c.path.as_str(), c.content.blob_id())).collect();
        let in_commits = pending.len();
        pending.extend(self.queue.changes().map(|(path, content)| (path, content.map(LocalRepo::blob_id))));
        let base = std::mem::take(&mut self.standby_base);
        self.standby_marks.clear();
        let (drops, cut) = match history {
            Some(history) => replay::takeover_drops_by_history(&pending, tip, history),
            None => replay::takeover_drops(&pending, tip, &base),
        };
        let counts = (drops.iter().filter(|d| **d).count(), drops.len());
        let mut drops = drops.into_iter();
        let changes = self
            .chain
            .iter_mut()
            .map(|c| &mut c.changes)
            .chain(self.drafts.iter_mut().map(|d| &mut d.changes));
        for changes in changes {
            changes.retain(|_| !drops.next().unwrap_or(false));
        }
        // Barriers first: they are placed by the changes before them.
        for barrier in self.queue.drop_barriers_before(cut.saturating_sub(in_commits)) {
            // Its resync ended on the previous owner: pushes wait for it no more.
            if let WorkItem::Sweep { scope, .. } = barrier {
                self.resyncing.remove(&(scope.target, scope.group, scope.plural));
            }
        }
        self.queue.drop_changes(|| drops.next().unwrap_or(false));
        self.drafts.retain(|d| !d.changes.is_empty());
        if self.drafts.is_empty() {
            // The retry delay belonged to a failed draft that is gone.
            self.commit_retry_at = None;
        }
        counts
    }
}
