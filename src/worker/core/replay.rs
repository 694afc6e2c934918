//! What a fetched tip means for the pending commits (pure).
//!
//! The commits the tip contains were acknowledged before this runs; the
//! rest are certainly not on the remote, so each is written again, in
//! order, on the tip. Then whatever still differs from what the worker
//! knows the cluster holds (a hand edit, a lost change, a bug) is repaired
//! in one more commit. Only files some target owns are compared: a README
//! or another tool's folder is never touched.

use std::collections::{BTreeMap, HashMap, HashSet};

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

/// After a takeover from standby: which of the standby's pending changes
/// (`pending`: its commits, then its queue, oldest first; a standby's
/// queue keeps every change apart) the previous owner already wrote.
///
/// Both replicas received the same changes until the previous owner
/// stopped, and it pushed all it had received before it released. So its
/// tip is the state after one cut of the standby's sequence, the same for
/// every file: the latest cut where the fewest files differ from the tip.
/// A file counts from its first change on (the standby's own list gives
/// most objects one, its value when the standby started), and only if the
/// tip holds one of its values or what the standby fetched (`base`): else
/// someone else wrote it (a hand edit) and it tells nothing. Changes before the
/// cut are dropped, so nothing is written twice and no file goes back,
/// except the newest change of a file that still differs from the tip
/// after all of them: the branch must end equal to the cluster.
///
/// Returns, per pending change, whether to drop it, and the cut.
pub(super) fn takeover_drops(
    pending: &[(&str, Option<ObjectId>)],
    fetched: &[(String, ObjectId)],
    base: &HashMap<String, ObjectId>,
) -> (Vec<bool>, usize) {
    let tip: HashMap<&str, ObjectId> = fetched.iter().map(|(path, id)| (path.as_str(), *id)).collect();
    let differs = |path: &str, value: Option<ObjectId>| value != tip.get(path).copied();
    let mut known: HashSet<&str> = pending
        .iter()
        .map(|(path, _)| *path)
        .filter(|path| !differs(path, base.get(*path).copied()))
        .collect();
    known.extend(pending.iter().filter(|(path, value)| !differs(path, *value)).map(|(path, _)| *path));
    let mut state: HashMap<&str, Option<ObjectId>> = HashMap::new();
    let mut newest: HashMap<&str, usize> = HashMap::new();
    let (mut mismatches, mut fewest, mut cut) = (0usize, 0usize, 0);
    for (index, (path, value)) in pending.iter().enumerate() {
        let before = state.insert(path, *value).is_some_and(|before| differs(path, before));
        if known.contains(path) {
            mismatches = mismatches + usize::from(differs(path, *value)) - usize::from(before);
        }
        if mismatches <= fewest {
            (fewest, cut) = (mismatches, index + 1);
        }
        newest.insert(path, index);
    }
    let drops = pending
        .iter()
        .enumerate()
        .map(|(index, (path, _))| {
            let still_needed = newest[path] == index && differs(path, state[path]);
            index < cut && !still_needed
        })
        .collect();
    (drops, cut)
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
    const C: &str = "f/ns/core/configmaps/c.yaml";

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

    fn drops(pending: &[(&str, Option<ObjectId>)], tip_files: &[(&str, &str)]) -> Vec<bool> {
        takeover_drops(pending, &tip(tip_files), &HashMap::new()).0
    }

    #[test]
    fn a_takeover_drops_what_came_before_the_previous_owner_stopped() {
        // The previous owner stopped after C was deleted; C was made again
        // afterwards: C=0 → A=1 → A=2 → B=1 → C gone → | A=3, C=2.
        let pending = [
            (C, Some(id("0"))),
            (A, Some(id("1"))),
            (A, Some(id("2"))),
            (B, Some(id("1"))),
            (C, None),
            (A, Some(id("3"))),
            (C, Some(id("2"))),
        ];
        assert_eq!(drops(&pending, &[(A, "2"), (B, "1")]), [true, true, true, true, true, false, false]);
        assert_eq!(
            drops(&pending, &[(C, "0")]),
            [true, false, false, false, false, false, false],
            "it stopped right after C=0"
        );
    }

    #[test]
    fn a_relist_after_the_stop_does_not_move_the_cut() {
        // The previous owner stopped after A=1. Then A=2 and B=1 came, and a
        // relist restated C (unchanged, as on the tip) and A.
        let pending = [
            (A, Some(id("1"))),
            (A, Some(id("2"))),
            (C, Some(id("0"))),
            (B, Some(id("1"))),
            (A, Some(id("2"))),
        ];
        let (drops, cut) = takeover_drops(&pending, &tip(&[(A, "1"), (C, "0")]), &HashMap::new());
        assert_eq!((drops, cut), (vec![true, false, false, false, false], 1));
    }

    #[test]
    fn an_object_made_and_deleted_after_the_stop_does_not_move_the_cut() {
        // Stopped after the list (A=1, B absent); then A=2, B made and deleted.
        let pending = [(A, Some(id("1"))), (A, Some(id("2"))), (B, Some(id("1"))), (B, None)];
        assert_eq!(drops(&pending, &[(A, "1")]), [true, false, false, false]);
    }

    #[test]
    fn a_file_that_differs_after_every_change_gets_its_newest() {
        // B was edited by hand on the remote: it differs at every cut, and
        // its newest value is written even though the cut lies after it.
        let pending = [(B, Some(id("0"))), (B, Some(id("1"))), (A, Some(id("1"))), (B, Some(id("2")))];
        assert_eq!(drops(&pending, &[(A, "1"), (B, "hand edit")]), [true, true, true, false]);
        let base = HashMap::from([(B.to_string(), id("hand edit"))]);
        let (drops, _) = takeover_drops(&pending, &tip(&[(A, "1"), (B, "hand edit")]), &base);
        assert_eq!(
            drops, [false; 4],
            "edited before the standby fetched: it looks like a change it never saw"
        );
    }

    #[test]
    fn changes_the_previous_owner_never_saw_are_all_kept() {
        let pending = [(A, Some(id("1"))), (A, Some(id("2"))), (B, None)];
        assert_eq!(drops(&pending, &[(A, "1"), (B, "0")]), [true, false, false]);
    }

    #[test]
    fn nothing_is_compared_at_start() {
        let plan = plan(&view(&[]), std::iter::empty(), &tip(&[(A, "1")]), true);
        assert!(plan.repair.is_empty());
    }
}
