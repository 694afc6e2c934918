//! Reads from commits: one file's bytes, a folder's listing, and the path
//! lookups that `commit` uses to tell no-ops and conflicts apart.
//!
//! In: a commit id and a repository-relative path. Out: bytes, `(path, blob
//! id)` pairs, or a [`Lookup`]. Only the trees on the path (or below the
//! listed folder) are read; blobs are read only by `read_file`.
//!
//! The branch comes from a server a tenant chose: every walk is bounded by
//! the repository's [`Limits`] (entries walked, path length, object size),
//! so a tree bomb (a few trees that name one another many times over, with
//! exponentially many paths) stops early, in bounded time and memory.

use gix::ObjectId;
use gix::objs::tree::EntryMode;

use super::error::Context;
use super::{LocalRepo, RepoError, path};
use crate::worker::limits::{Limit, Limits};

/// What a path names in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Nothing at the path, and every existing folder on the way is a folder.
    Missing,
    /// An entry exists at the path.
    Found { mode: EntryMode, id: ObjectId },
    /// The first `depth` components name a non-folder, so the path cannot exist.
    Blocked { depth: usize },
}

/// The entries one walk (a listing, a history) may still read.
pub(super) struct Budget {
    limits: Limits,
    walked: u64,
    /// Objects whose size was checked: a header lookup costs about 10 µs,
    /// and a bomb names the same few objects millions of times.
    sized: std::collections::HashSet<ObjectId>,
}

impl Budget {
    pub(super) fn new(limits: Limits) -> Self {
        Self { limits, walked: 0, sized: Default::default() }
    }

    /// Counts the `entries` of one more tree, read at `dir`.
    fn tree(&mut self, entries: usize, dir: &str) -> Result<(), RepoError> {
        self.walked = self.walked.saturating_add(entries as u64);
        Ok(self.limits.check_at(Limit::TreeEntries, self.walked, dir)?)
    }

    /// Checks one entry's full path.
    pub(super) fn path(&self, path: &str) -> Result<(), RepoError> {
        Ok(self.limits.check_at(Limit::PathLength, path.len() as u64, path)?)
    }
}

impl LocalRepo {
    /// The bytes of the file at `path` in `commit`; `None` if there is no
    /// file there (missing, or a folder).
    pub fn read_file(&self, commit: ObjectId, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let components = path::split(path, false)?;
        let tree = self.commit_tree(commit)?;
        match self.lookup(tree, &components)? {
            Lookup::Found { mode, id } if mode.is_blob_or_symlink() => {
                self.check_size(id, path)?;
                let mut blob =
                    self.repo.find_blob(id).context(|| format!("read blob {id} at {path:?} in {commit}"))?;
                Ok(Some(blob.take_data()))
            }
            _ => Ok(None),
        }
    }

    /// Every file below the folder `prefix` (`""` = whole tree) in `commit`,
    /// as (full path, blob id), in `git ls-tree -r` order. A missing prefix,
    /// or one naming a file, gives an empty list. Submodule entries are skipped.
    /// Past a limit (entries, a path's length, a file's size): `TooLarge`.
    pub fn list_files(&self, commit: ObjectId, prefix: &str) -> Result<Vec<(String, ObjectId)>, RepoError> {
        self.list_files_within(commit, prefix, &mut Budget::new(self.limits))
    }

    /// [`Self::list_files`] counting against `budget`.
    pub(super) fn list_files_within(
        &self,
        commit: ObjectId,
        prefix: &str,
        budget: &mut Budget,
    ) -> Result<Vec<(String, ObjectId)>, RepoError> {
        let components = path::split(prefix, true)?;
        let root = self.commit_tree(commit)?;
        let start = match self.lookup(root, &components)? {
            Lookup::Found { mode, id } if mode.is_tree() => id,
            _ => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        let mut dir = prefix.to_owned();
        // Pre-order depth-first like `git ls-tree -r`; an explicit stack of
        // (remaining entries, length of `dir` for that folder) instead of
        // recursion, so a hostile deep tree cannot overflow the stack.
        let mut stack = vec![(self.tree_entries(start, &dir, budget)?.into_iter(), dir.len())];
        while let Some((entries, dir_len)) = stack.last_mut() {
            let Some((name, mode, id)) = entries.next() else {
                stack.pop();
                continue;
            };
            dir.truncate(*dir_len);
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(&name);
            budget.path(&dir)?;
            if mode.is_tree() {
                let entries = self.tree_entries(id, &dir, budget)?;
                stack.push((entries.into_iter(), dir.len()));
            } else if !mode.is_commit() {
                if budget.sized.insert(id) {
                    self.check_size(id, &dir)?;
                }
                out.push((dir.clone(), id));
            }
        }
        Ok(out)
    }

    /// The entries of one tree, owned, for a walk; they count against
    /// `budget` before they are copied, and the tree's size is checked
    /// before it is read.
    pub(super) fn tree_entries(
        &self,
        id: ObjectId,
        dir: &str,
        budget: &mut Budget,
    ) -> Result<Vec<(String, EntryMode, ObjectId)>, RepoError> {
        if budget.sized.insert(id) {
            self.check_size(id, dir)?;
        }
        let tree = self.find_tree(id)?;
        let decoded = tree.decode().context(|| format!("decode tree {id} at {dir:?}"))?;
        budget.tree(decoded.entries.len(), dir)?;
        Ok(decoded.entries.iter().map(|e| (e.filename.to_string(), e.mode, e.oid.to_owned())).collect())
    }

    /// Refuses an object past the file size limit, from its header alone
    /// (a missing object is left to the read that follows).
    pub(super) fn check_size(&self, id: ObjectId, path: &str) -> Result<(), RepoError> {
        let header =
            self.repo.try_find_header(id).context(|| format!("read the header of {id} at {path:?}"))?;
        match header {
            Some(header) => Ok(self.limits.check_at(Limit::FileSize, header.size(), path)?),
            None => Ok(()),
        }
    }

    /// The newest of `known` (oldest first) that `tip` is or descends from.
    ///
    /// Walks parents from `tip` through the commits present locally, not
    /// past `stop` (the remote tip the known commits were built on) and not
    /// past `limit` commits. After a fetch that was not shallow, every commit
    /// between the tip and what we had is present, so the answer is exact.
    pub fn newest_contained(
        &self,
        tip: ObjectId,
        known: &[ObjectId],
        stop: Option<ObjectId>,
        limit: usize,
    ) -> Result<Option<ObjectId>, RepoError> {
        let position: std::collections::HashMap<ObjectId, usize> =
            known.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut newest: Option<usize> = None;
        let mut seen = std::collections::HashSet::new();
        let mut todo = vec![tip];
        while let Some(id) = todo.pop() {
            if seen.len() >= limit || !seen.insert(id) {
                continue;
            }
            if let Some(&i) = position.get(&id) {
                newest = newest.max(Some(i));
                // Its ancestors among `known` are older.
                continue;
            }
            if Some(id) == stop {
                continue;
            }
            let Some(object) = self.repo.try_find_object(id).context(|| format!("read commit {id}"))? else {
                continue;
            };
            if object.kind != gix::objs::Kind::Commit {
                continue;
            }
            let commit = object.into_commit();
            let decoded = commit.decode().context(|| format!("decode commit {id}"))?;
            todo.extend(decoded.parents());
        }
        Ok(newest.map(|i| known[i]))
    }

    /// The tree id of `commit`.
    pub(crate) fn commit_tree(&self, commit: ObjectId) -> Result<ObjectId, RepoError> {
        let object = self
            .repo
            .try_find_object(commit)
            .context(|| format!("read commit {commit}"))?
            .ok_or(RepoError::MissingObject { kind: "commit", id: commit })?;
        if object.kind != gix::objs::Kind::Commit {
            return Err(RepoError::WrongKind {
                id: commit,
                expected: "commit",
                actual: object.kind.to_string(),
            });
        }
        let tree = object.into_commit().tree_id().context(|| format!("decode commit {commit}"))?;
        Ok(tree.detach())
    }

    /// Follows `components` from the tree `root`.
    pub(crate) fn lookup(&self, root: ObjectId, components: &[&str]) -> Result<Lookup, RepoError> {
        let mut current = root;
        for (depth, name) in components.iter().enumerate() {
            let tree = self.find_tree(current)?;
            let Some(entry) = tree.find_entry(*name) else {
                return Ok(Lookup::Missing);
            };
            let (mode, id) = (entry.mode(), entry.object_id());
            if depth + 1 == components.len() {
                return Ok(Lookup::Found { mode, id });
            }
            if !mode.is_tree() {
                return Ok(Lookup::Blocked { depth: depth + 1 });
            }
            current = id;
        }
        Ok(Lookup::Found { mode: gix::objs::tree::EntryKind::Tree.into(), id: root })
    }

    /// A tree object, with "not there" and "not a tree" told apart.
    pub(crate) fn find_tree(&self, id: ObjectId) -> Result<gix::Tree<'_>, RepoError> {
        let object = self
            .repo
            .try_find_object(id)
            .context(|| format!("read tree {id}"))?
            .ok_or(RepoError::MissingObject { kind: "tree", id })?;
        if object.kind != gix::objs::Kind::Tree {
            return Err(RepoError::WrongKind { id, expected: "tree", actual: object.kind.to_string() });
        }
        Ok(object.into_tree())
    }
}
