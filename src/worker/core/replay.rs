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

/// After a takeover, knowing what the previous owner wrote: `history` is
/// the files of the standby's first fetch, then what each commit since
/// changed (see [`Fetched::history`](super::Fetched)), so no cut is
/// guessed from the tip alone (which cannot tell an object made and
/// deleted after the stop from one the previous owner made and deleted).
///
/// Per file, the previous owner received a prefix of the standby's changes
/// of it and wrote the last value of that prefix (it merges queued values
/// of a file into the newest). The prefix ends at the file's newest written
/// value, found by matching the history's values in order among the pending
/// ones, each at its first match after the one before (a value the standby
/// never had, from before its list or a hand edit, matches nothing), and
/// past repeats of that same value. Deletions tell nothing by themselves (a
/// file has many); but when the history's last word on a file is a
/// deletion, the prefix runs on through the pending deletions right after it.
///
/// Every change in a prefix is dropped, except the newest change of a file
/// when it still differs from the tip: the branch must end equal to the
/// cluster. The returned cut (just after the latest dropped change) says
/// which queued sweeps the previous owner ran. Where it is unsure (a value
/// that recurs, a deletion it merged with a creation), it writes again
/// rather than drop: a value written twice is noise, a lost one is a bug.
pub(super) fn takeover_drops_by_history(
    pending: &[(&str, Option<ObjectId>)],
    fetched: &[(String, ObjectId)],
    history: &[(String, Option<ObjectId>)],
) -> (Vec<bool>, usize) {
    let tip: HashMap<&str, ObjectId> = fetched.iter().map(|(path, id)| (path.as_str(), *id)).collect();
    let mut written: HashMap<&str, Vec<Option<ObjectId>>> = HashMap::new();
    for (path, value) in history {
        written.entry(path.as_str()).or_default().push(*value);
    }
    let mut changes: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, (path, _)) in pending.iter().enumerate() {
        changes.entry(path).or_default().push(index);
    }
    let mut drops = vec![false; pending.len()];
    let mut cut = 0;
    for (path, indices) in &changes {
        let values: Vec<Option<ObjectId>> = indices.iter().map(|&i| pending[i].1).collect();
        let received = received_prefix(&values, written.get(path).map_or(&[][..], Vec::as_slice));
        let newest = *indices.last().expect("one at least");
        let still_needed = pending[newest].1 != tip.get(path).copied();
        for &index in &indices[..received] {
            drops[index] = !(index == newest && still_needed);
        }
        if received > 0 {
            cut = cut.max(indices[received - 1] + 1);
        }
    }
    (drops, cut)
}

/// How many of one file's pending `values` the previous owner had received,
/// given the values it `wrote` (oldest first); see [`takeover_drops_by_history`].
fn received_prefix(values: &[Option<ObjectId>], wrote: &[Option<ObjectId>]) -> usize {
    let mut next = 0;
    let mut anchor: Option<usize> = None;
    for value in wrote.iter().filter(|v| v.is_some()) {
        let Some(offset) = values[next..].iter().position(|v| v == value) else { continue };
        let mut at = next + offset;
        while values.get(at + 1) == Some(value) {
            at += 1;
        }
        anchor = Some(at);
        next = at + 1;
    }
    let after = anchor.map_or(0, |at| at + 1);
    // Only a deletion right after the match: past a value the owner never
    // wrote, its deletion may as well predate that value (it was made
    // before this worker received it) as have absorbed it; then the value
    // and the deletion are written again rather than lost.
    if wrote.last().is_some_and(Option::is_none) && values.get(after) == Some(&None) {
        let mut at = after;
        while values.get(at + 1) == Some(&None) {
            at += 1;
        }
        return at + 1;
    }
    after
}

/// Sealed files that pending commits write afresh with what the fetched tip
/// already holds (the same digest, though other bytes: every sealing
/// encrypts anew) settle to the tip's blob, and so does the view where that
/// write is the file's last: replayed on another owner's tip, as after a
/// push lost to it, an unchanged Secret is not committed again. Runs before
/// [`plan`], in commit order: a file counts as held from the tip's state
/// and then each pending change's.
pub(super) fn settle_sealed<'a>(
    known: &mut BranchFiles,
    pending: impl Iterator<Item = &'a mut Vec<Change>>,
    fetched: &[(String, ObjectId)],
    sealed: &[(String, u64)],
) -> usize {
    let prints: HashMap<&str, u64> = sealed.iter().map(|(path, print)| (path.as_str(), *print)).collect();
    let mut held: HashMap<String, (ObjectId, Option<u64>)> =
        fetched.iter().map(|(path, id)| (path.clone(), (*id, prints.get(path.as_str()).copied()))).collect();
    let mut last_settled: HashMap<String, Option<ObjectId>> = HashMap::new();
    let mut settled = 0;
    for change in pending.flatten() {
        let print = match &change.content {
            Content::Bytes(bytes) => crate::worker::files::fingerprint(&change.path, bytes),
            _ => None,
        };
        match (held.get(&change.path), print) {
            (Some(&(id, Some(known_print))), Some(print)) if known_print == print => {
                change.content = Content::Blob(id);
                last_settled.insert(change.path.clone(), Some(id));
                settled += 1;
            }
            _ => {
                match change.content.blob_id() {
                    Some(id) => held.insert(change.path.clone(), (id, print)),
                    None => held.remove(&change.path),
                };
                last_settled.insert(change.path.clone(), None);
            }
        }
    }
    for (path, id) in last_settled {
        if let Some(id) = id {
            known.set(&path, Some(id));
        }
    }
    settled
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

    /// CI's ha_crash: a replica lost its push to the previous owner's, which
    /// had sealed the same unchanged Secret; replayed on that tip, its own
    /// sealing (other bytes, same digest) must commit nothing. A changed
    /// Secret still does.
    #[test]
    fn a_replayed_sealing_of_what_the_tip_holds_settles_to_the_tip() {
        let identity = age::x25519::Identity::generate();
        let recipients = crate::sops::Recipients::parse([identity.to_public().to_string()]).unwrap();
        let sealer = crate::sops::Sealer::new(recipients, crate::sops::DigestKey::new(vec![4; 32]).unwrap());
        let seal = |value: &str| -> std::sync::Arc<[u8]> {
            let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "db", "namespace": "ns"}, "data": {"password": value}});
            sealer.seal("f/ns/core/secrets/db.sops.yaml", &secret).unwrap().file.into()
        };
        let path = "f/ns/core/secrets/db.sops.yaml";
        let theirs = seal("aA==");
        let fetched = vec![(path.to_owned(), LocalRepo::blob_id(&theirs))];
        let sealed = vec![(path.to_owned(), crate::worker::files::fingerprint(path, &theirs).unwrap())];
        let ours = Change { path: path.into(), content: Content::Bytes(seal("aA==")) };

        // The view is the remote as last seen plus the pending commit.
        let mut known = view(&[(A, "2")]);
        known.set(path, ours.content.blob_id());
        let mut pending = [vec![ours.clone(), write(A, "2")]];
        let settled = settle_sealed(&mut known, pending.iter_mut(), &fetched, &sealed);
        assert_eq!(settled, 1);
        assert_eq!(pending[0][0].content, Content::Blob(fetched[0].1), "settled to the tip's blob");
        let plan = plan(&known, pending.iter().map(Vec::as_slice), &fetched, false);
        assert!(plan.repair.is_empty(), "no repair brings our bytes back: {:?}", plan.repair);

        let changed = Change { path: path.into(), content: Content::Bytes(seal("bg==")) };
        let mut pending = [vec![ours.clone()], vec![changed.clone()]];
        assert_eq!(settle_sealed(&mut view(&[]), pending.iter_mut(), &fetched, &sealed), 1);
        assert_eq!(pending[1][0], changed, "a changed Secret is written");
        // Unchanged again after a change: compared with the change, not the tip.
        let mut pending = [vec![changed.clone()], vec![ours]];
        assert_eq!(settle_sealed(&mut view(&[]), pending.iter_mut(), &fetched, &sealed), 0);
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

    fn by_history(
        pending: &[(&str, Option<ObjectId>)],
        tip_files: &[(&str, &str)],
        wrote: &[(&str, Option<&str>)],
    ) -> (Vec<bool>, usize) {
        let history: Vec<(String, Option<ObjectId>)> =
            wrote.iter().map(|(path, text)| (path.to_string(), text.map(id))).collect();
        takeover_drops_by_history(pending, &tip(tip_files), &history)
    }

    #[test]
    fn an_object_made_and_deleted_after_the_stop_is_written_again() {
        // Seed 2877's shape: the previous owner wrote A=1 and stopped; then
        // B was made and deleted, and A=2 came. The tip (A=1, no B) also fits
        // a cut after B's deletion: only the history tells them apart.
        let pending = [(A, Some(id("1"))), (B, Some(id("1"))), (B, None), (A, Some(id("2")))];
        let (drops, cut) = by_history(&pending, &[(A, "1")], &[(A, Some("0")), (A, Some("1"))]);
        assert_eq!((drops, cut), (vec![true, false, false, false], 1));
    }

    #[test]
    fn an_object_the_previous_owner_made_and_deleted_is_not_written_again() {
        // Seed 2376's shape: here the previous owner did write B's life.
        let pending = [(A, Some(id("1"))), (B, Some(id("1"))), (B, None), (A, Some(id("2")))];
        let wrote = [(A, Some("1")), (B, Some("1")), (B, None), (A, Some("2"))];
        assert_eq!(by_history(&pending, &[(A, "2")], &wrote), (vec![true; 4], 4));
    }

    #[test]
    fn values_the_previous_owner_merged_count_as_received() {
        // It merged A=1 into A=2.
        let pending = [(A, Some(id("1"))), (A, Some(id("2"))), (A, Some(id("3")))];
        let wrote = [(A, Some("2"))];
        let (drops, cut) = by_history(&pending, &[(A, "2")], &wrote);
        assert_eq!((drops, cut), (vec![true, true, false], 2));
    }

    #[test]
    fn a_deletion_past_a_value_it_never_wrote_is_written_again_with_it() {
        // Simulation seed 13618: the previous owner deleted C before this
        // worker received C=1 (or merged C=1 into that deletion: the
        // history cannot tell). Written again, C=1 reaches a commit; taken
        // for merged, a C=1 made after the deletion would be lost.
        let pending = [(A, Some(id("1"))), (C, Some(id("1"))), (C, None)];
        let wrote = [(C, Some("0")), (A, Some("1")), (C, None)];
        let (drops, cut) = by_history(&pending, &[(A, "1")], &wrote);
        assert_eq!((drops, cut), (vec![true, false, false], 1));
    }

    #[test]
    fn a_deletion_before_the_standby_listed_matches_its_list_not_a_later_one() {
        // Seed 1872's shape: B was deleted before the standby listed it as
        // absent; then B=2 was made and deleted again after the stop.
        let pending = [(B, None), (A, Some(id("1"))), (B, Some(id("2"))), (B, None)];
        let wrote = [(B, Some("0")), (B, None), (A, Some("1"))];
        let (drops, cut) = by_history(&pending, &[(A, "1")], &wrote);
        assert_eq!((drops, cut), (vec![true, true, false, false], 2));
    }

    #[test]
    fn a_value_that_recurs_counts_once_and_restatements_with_it() {
        // A: 1 → 1 (a relist restates it) → 2 → 1; only the first 1 was written.
        let pending = [(A, Some(id("1"))), (A, Some(id("1"))), (A, Some(id("2"))), (A, Some(id("1")))];
        let (drops, cut) = by_history(&pending, &[(A, "1")], &[(A, Some("1"))]);
        assert_eq!((drops, cut), (vec![true, true, false, false], 2));
    }

    #[test]
    fn a_hand_edit_matches_nothing_and_the_cluster_value_is_written_again() {
        let pending = [(B, Some(id("1"))), (A, Some(id("1")))];
        let wrote = [(B, Some("1")), (A, Some("1")), (B, Some("hand edit"))];
        let (drops, cut) = by_history(&pending, &[(A, "1"), (B, "hand edit")], &wrote);
        assert_eq!((drops, cut), (vec![false, true], 2));
    }

    #[test]
    fn a_standby_behind_the_previous_owner_writes_its_newest_values_again() {
        // The previous owner also wrote A=3 and deleted B, which the standby
        // has not received yet. Its newest A and B differ from the tip, as
        // after a hand edit, so they are written; A=3 and B's deletion follow
        // when they arrive. A blip in the history, nothing lost.
        let pending = [(A, Some(id("1"))), (A, Some(id("2"))), (B, Some(id("1")))];
        let wrote = [(A, Some("1")), (A, Some("2")), (B, Some("1")), (A, Some("3")), (B, None)];
        let (drops, cut) = by_history(&pending, &[(A, "3")], &wrote);
        assert_eq!((drops, cut), (vec![true, false, false], 3));
    }

    #[test]
    fn nothing_is_dropped_for_a_file_the_previous_owner_never_wrote() {
        let pending = [(A, Some(id("1"))), (B, None)];
        assert_eq!(by_history(&pending, &[], &[]), (vec![false, false], 0));
    }

    #[test]
    fn nothing_is_compared_at_start() {
        let plan = plan(&view(&[]), std::iter::empty(), &tip(&[(A, "1")]), true);
        assert!(plan.repair.is_empty());
    }
}
