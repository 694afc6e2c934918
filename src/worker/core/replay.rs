//! What a fetched tip means for the pending commits (pure).
//!
//! The commits the tip contains were acknowledged before this runs; the
//! rest are certainly not on the remote, so each is written again, in
//! order, on the tip. Then whatever still differs from what the worker
//! knows the cluster holds (a hand edit, a lost change, a bug) is repaired
//! in one more commit. Only files some target owns are compared: a README
//! or another tool's folder is never touched.

use std::collections::{BTreeMap, HashMap};

use gix::ObjectId;

use super::{Change, Content};
use crate::worker::files::BranchFiles;

/// The commits to write on the fetched tip.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// One entry per pending commit, in order.
    pub commits: Vec<Vec<Change>>,
    /// Makes the owned files equal to the worker's view; empty when they are.
    pub repair: Vec<Change>,
    /// Files the repair restores, deletes or rewrites.
    pub drift: usize,
}

/// After a takeover from standby: the previous owner wrote the same
/// changes as this replica's standby did. A pending change to a path whose
/// content the fetched tip holds, and every earlier one to that path, is
/// already on the branch; writing them again would put the file back to an
/// older version. Returns how many changes were dropped.
pub(super) fn drop_written<'a>(
    pending: impl Iterator<Item = &'a mut Vec<Change>>,
    fetched: &[(String, ObjectId)],
) -> usize {
    let tip: HashMap<&str, ObjectId> = fetched.iter().map(|(path, id)| (path.as_str(), *id)).collect();
    let mut commits: Vec<&mut Vec<Change>> = pending.collect();
    let mut last_written: HashMap<String, usize> = HashMap::new();
    for (index, changes) in commits.iter().enumerate() {
        for change in changes.iter() {
            if change.content.blob_id() == tip.get(change.path.as_str()).copied() {
                last_written.insert(change.path.clone(), index);
            }
        }
    }
    let mut dropped = 0;
    for (index, changes) in commits.iter_mut().enumerate() {
        let before = changes.len();
        changes.retain(|c| last_written.get(&c.path).is_none_or(|last| index > *last));
        dropped += before - changes.len();
    }
    dropped
}

/// `known` is the worker's view before the fetch (the remote as last seen
/// plus every pending commit): the cluster's state as far as it knows. At
/// start there is no view yet, and the resync reconciles instead.
pub(super) fn plan<'a>(
    known: &BranchFiles,
    pending: impl Iterator<Item = &'a [Change]>,
    fetched: &[(String, ObjectId)],
    start: bool,
) -> Plan {
    let commits: Vec<Vec<Change>> = pending.map(<[Change]>::to_vec).collect();
    if start {
        return Plan { commits, ..Plan::default() };
    }
    let mut projected: HashMap<&str, Option<ObjectId>> =
        fetched.iter().map(|(path, id)| (path.as_str(), Some(*id))).collect();
    for change in commits.iter().flatten() {
        projected.insert(&change.path, change.content.blob_id());
    }
    // Sorted, so the repair commit is the same on every replica and run.
    let mut differing: BTreeMap<&str, Option<ObjectId>> = BTreeMap::new();
    for (path, id) in known.iter() {
        if known.is_owned(path) && projected.get(path).copied().flatten() != Some(*id) {
            differing.insert(path, Some(*id));
        }
    }
    for (path, id) in &projected {
        if id.is_some() && known.get(path).is_none() && known.is_owned(path) {
            differing.insert(path, None);
        }
    }
    let repair: Vec<Change> = differing
        .into_iter()
        .map(|(path, id)| Change { path: path.to_owned(), content: id.map_or(Content::Gone, Content::Blob) })
        .collect();
    Plan { commits, drift: repair.len(), repair }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::TargetKey;
    use crate::worker::repo::LocalRepo;

    const A: &str = "f/ns/core/configmaps/a.yaml";
    const B: &str = "f/ns/core/configmaps/b.yaml";

    fn id(text: &str) -> ObjectId {
        LocalRepo::blob_id(text.as_bytes())
    }

    fn view(files: &[(&str, &str)]) -> BranchFiles {
        BranchFiles::new(
            files.iter().map(|(p, c)| (p.to_string(), id(c))),
            vec![(TargetKey::new("ns", "t"), "f".into())],
        )
    }

    fn tip(files: &[(&str, &str)]) -> Vec<(String, ObjectId)> {
        files.iter().map(|(p, c)| (p.to_string(), id(c))).collect()
    }

    fn write(path: &str, text: &str) -> Change {
        Change { path: path.into(), content: Content::Bytes(text.as_bytes().into()) }
    }

    #[test]
    fn a_tip_that_equals_the_view_needs_no_repair() {
        let plan = plan(&view(&[(A, "1")]), std::iter::empty(), &tip(&[(A, "1"), ("README.md", "x")]), false);
        assert!(plan.repair.is_empty() && plan.drift == 0);
    }

    #[test]
    fn pending_commits_are_written_again_and_cover_their_files() {
        let pending = [write(A, "2")];
        let plan = plan(&view(&[(A, "2")]), [&pending[..]].into_iter(), &tip(&[(A, "1")]), false);
        assert_eq!(plan.commits, vec![vec![write(A, "2")]]);
        assert!(plan.repair.is_empty(), "the replayed commit already restores the file");
    }

    #[test]
    fn hand_edits_deletions_and_additions_in_owned_folders_are_repaired() {
        let known = view(&[(A, "1"), (B, "1")]);
        let fetched = tip(&[(A, "edited"), ("f/ns/core/configmaps/extra.yaml", "x"), ("other/file", "y")]);
        let plan = plan(&known, std::iter::empty(), &fetched, false);
        assert_eq!(
            plan.repair,
            vec![
                Change { path: A.into(), content: Content::Blob(id("1")) },
                Change { path: B.into(), content: Content::Blob(id("1")) },
                Change { path: "f/ns/core/configmaps/extra.yaml".into(), content: Content::Gone },
            ]
        );
        assert_eq!(plan.drift, 3);
    }

    #[test]
    fn a_takeover_drops_what_the_tip_holds_and_everything_before_it() {
        let mut pending = vec![
            vec![write(A, "1"), write(B, "1")],
            vec![write(A, "2")],
            vec![write(A, "3")],
            vec![Change { path: B.into(), content: Content::Gone }],
        ];
        let dropped = drop_written(pending.iter_mut(), &tip(&[(A, "2"), (B, "0")]));
        assert_eq!(dropped, 2, "A=1 and A=2 are on the tip already");
        assert_eq!(
            pending,
            vec![
                vec![write(B, "1")],
                vec![],
                vec![write(A, "3")],
                vec![Change { path: B.into(), content: Content::Gone }],
            ]
        );
        let mut deleted = [vec![write(B, "1")], vec![Change { path: B.into(), content: Content::Gone }]];
        assert_eq!(drop_written(deleted.iter_mut(), &tip(&[])), 2, "an absent file matches its deletion");
    }

    #[test]
    fn nothing_is_compared_at_start() {
        let plan = plan(&view(&[]), std::iter::empty(), &tip(&[(A, "1")]), true);
        assert!(plan.repair.is_empty());
    }
}
