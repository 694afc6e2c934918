//! What the commits between two points of a branch changed, file by file.
//!
//! In: a tip and a time. Out: the files of the newest first-parent
//! ancestor made before that time, then per later commit, oldest first,
//! each changed path with its new blob id, or `None` where the file went. Trees whose ids agree are
//! skipped whole, so the cost follows the changes, not the tree's size.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use gix::ObjectId;
use gix::objs::tree::EntryMode;

use super::error::Context;
use super::read::Budget;
use super::{LocalRepo, RepoError};

/// Where a history starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryFrom {
    /// The newest first-parent commit made before this time.
    Time(SystemTime),
    /// This commit (a tip fetched before), if the first parents reach it.
    Commit(ObjectId),
}

/// One changed path: its new blob, or `None` when it was deleted.
pub type PathChange = (String, Option<ObjectId>);

/// What a walk back from a tip found.
#[derive(Debug)]
pub struct History {
    /// The files of the commit it started from, then each later commit's changes.
    pub changes: Vec<PathChange>,
    /// It started from the commit asked for (or the root); false when it stopped at a commit whose parent is not here
    /// (a shallow boundary) and started from that one instead.
    pub complete: bool,
}

impl LocalRepo {
    /// Every file of the first-parent ancestor of `tip` that `from` names
    /// (the newest made before a committer time, or a commit), then the
    /// changes of each commit after it,
    /// oldest first. Stops early at a missing parent (see [`History`]);
    /// `None` past `limit` commits.
    pub fn changes_after(
        &self,
        tip: ObjectId,
        from: HistoryFrom,
        limit: usize,
    ) -> Result<Option<History>, RepoError> {
        let (after, from_commit) = match from {
            HistoryFrom::Time(after) => (
                after
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                None,
            ),
            // Committer times never stop this walk: it ends at the commit.
            HistoryFrom::Commit(id) => (i64::MIN, Some(id)),
        };
        let mut line = Vec::new();
        let mut next = Some(tip);
        let mut start = None;
        let mut complete = true;
        while let Some(id) = next {
            if line.len() == limit {
                return Ok(None);
            }
            if from_commit == Some(id) {
                start = Some(id);
                break;
            }
            let Some(object) = self.repo.try_find_object(id).context(|| format!("read commit {id}"))? else {
                // The boundary's parent: start from the boundary itself.
                complete = false;
                start = line.pop();
                break;
            };
            if object.kind != gix::objs::Kind::Commit {
                return Err(RepoError::WrongKind { id, expected: "commit", actual: object.kind.to_string() });
            }
            let commit = object.into_commit();
            let decoded = commit.decode().context(|| format!("decode commit {id}"))?;
            // An unreadable time counts as recent: the walk goes on past it.
            if decoded.time().map_or(i64::MAX, |t| t.seconds) < after {
                start = Some(id);
                break;
            }
            next = decoded.parents().next();
            line.push(id);
        }
        // One budget for the listing and every diff: each commit could
        // bring a tree bomb of its own.
        let mut budget = Budget::new(self.limits);
        let mut changes: Vec<PathChange> = match start {
            Some(start) => self
                .list_files_within(start, "", &mut budget)?
                .into_iter()
                .map(|(path, id)| (path, Some(id)))
                .collect(),
            None => Vec::new(),
        };
        let mut before = start.map(|s| self.commit_tree(s)).transpose()?;
        for commit in line.into_iter().rev() {
            let after = self.commit_tree(commit)?;
            self.diff_trees(before, after, &mut changes, &mut budget)?;
            before = Some(after);
        }
        Ok(Some(History { changes, complete }))
    }

    /// Appends what differs between two root trees, without recursion (a
    /// hostile deep tree cannot overflow the stack), within `budget`.
    fn diff_trees(
        &self,
        before: Option<ObjectId>,
        after: ObjectId,
        out: &mut Vec<PathChange>,
        budget: &mut Budget,
    ) -> Result<(), RepoError> {
        let mut todo = vec![(String::new(), before, Some(after))];
        while let Some((dir, before, after)) = todo.pop() {
            let old = self.named_entries(before, &dir, budget)?;
            let new = self.named_entries(after, &dir, budget)?;
            let join = |name: &str| if dir.is_empty() { name.to_owned() } else { format!("{dir}/{name}") };
            for (name, &(mode, id)) in &new {
                let previous = old.get(name).copied();
                if previous == Some((mode, id)) || mode.is_commit() {
                    continue;
                }
                let path = join(name);
                budget.path(&path)?;
                let old_tree = previous.filter(|(m, _)| m.is_tree()).map(|(_, id)| id);
                if mode.is_tree() {
                    if previous.is_some_and(|(m, _)| !m.is_tree() && !m.is_commit()) {
                        out.push((path.clone(), None));
                    }
                    todo.push((path, old_tree, Some(id)));
                } else {
                    if old_tree.is_some() {
                        todo.push((path.clone(), old_tree, None));
                    }
                    out.push((path, Some(id)));
                }
            }
            for (name, &(mode, id)) in &old {
                if new.contains_key(name) || mode.is_commit() {
                    continue;
                }
                if mode.is_tree() {
                    todo.push((join(name), Some(id), None));
                } else {
                    out.push((join(name), None));
                }
            }
        }
        Ok(())
    }

    /// A tree's entries by name; none for an absent tree.
    fn named_entries(
        &self,
        tree: Option<ObjectId>,
        dir: &str,
        budget: &mut Budget,
    ) -> Result<BTreeMap<String, (EntryMode, ObjectId)>, RepoError> {
        let Some(id) = tree else { return Ok(BTreeMap::new()) };
        Ok(self
            .tree_entries(id, dir, budget)?
            .into_iter()
            .map(|(name, mode, id)| (name, (mode, id)))
            .collect())
    }
}
