//! Placement that keeps shards where they are.
//!
//! In: the shard count S, the live members, and who holds each shard (its
//! holder and when it acquired it, by the holder's own clock). Out: the
//! desired shards of every member.
//!
//! Every member gets a quota of ⌊S/n⌋ or ⌈S/n⌉; the extra shards go to the
//! members that hold most (ties to the smaller name), so a balanced
//! installation stays as it is. A member keeps the shards it holds up to
//! its quota, the **newest** first: a shard that just came to it (because
//! its owner stopped) stays, and older ones go to a member that joins. So a
//! rolling restart moves each shard once per restarted replica, not away
//! and back. The rest (free shards, shards of members that left, a
//! member's overflow) go by rendezvous weight ([`super::hash`]) among the
//! members below their quota, in ascending shard order.
//!
//! The moves of a membership change are the ideal: S/n' shards to a new
//! member, a leaving member's shards to the others. Replicas that see the
//! same Leases compute the same placement; acquire times are only compared
//! among one holder's own shards, so clock skew between replicas does not
//! matter.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;

use super::hash::weight;

/// Who holds a shard, as the Leases say.
/// Borrowed from the Lease records: a placement at 1,000 shards built
/// 1,000 names for each call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding<'a> {
    /// The Lease's holder.
    pub holder: &'a str,
    /// The holder's `acquireTime`.
    pub since: Timestamp,
    /// A member that announced a standby for it: the shard is on its way
    /// there, and counts as that member's newest (it stays with it). The
    /// quotas still count it for its holder until the Lease moves, so an
    /// announcement cannot change the quotas that called for it.
    pub bound_for: Option<&'a str>,
}

/// Each member's rendezvous weight for every shard, kept while it stays a
/// member: at 1,000 shards and 100 members the weights were most of a
/// placement's cost, and holdings change far more often than members.
#[derive(Clone, Debug)]
pub struct Rankings {
    shards: u32,
    columns: BTreeMap<String, Vec<u64>>,
}

impl Rankings {
    pub fn new(shards: u32) -> Self {
        Self { shards, columns: BTreeMap::new() }
    }

    /// The weight columns of `names`, in their order; computes the missing
    /// ones, and forgets most that are not asked for (a member that comes
    /// and goes keeps its column).
    fn columns(&mut self, names: &[&str]) -> Vec<&[u64]> {
        if self.columns.len() > 2 * names.len() + 8 {
            self.columns.retain(|name, _| names.binary_search(&name.as_str()).is_ok());
        }
        for name in names {
            if !self.columns.contains_key(*name) {
                let column = (0..self.shards).map(|shard| weight(shard, name)).collect();
                self.columns.insert((*name).to_owned(), column);
            }
        }
        names.iter().map(|name| self.columns[*name].as_slice()).collect()
    }
}

/// The desired shards of every member (each appears, maybe with none).
pub fn placement(
    shards: u32,
    members: &[String],
    holdings: &BTreeMap<u32, Holding<'_>>,
) -> BTreeMap<String, BTreeSet<u32>> {
    ranked_placement(&mut Rankings::new(shards), members, holdings)
}

/// A held shard for [`place`], its members by index in the sorted names.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// The holder, if it is a member.
    pub holder: Option<usize>,
    /// The holder's `acquireTime`.
    pub since: Timestamp,
    /// The member it is bound for (see [`Holding::bound_for`]).
    pub bound_for: Option<usize>,
}

/// [`placement`] with the weights kept in `rankings`.
pub fn ranked_placement(
    rankings: &mut Rankings,
    members: &[String],
    holdings: &BTreeMap<u32, Holding<'_>>,
) -> BTreeMap<String, BTreeSet<u32>> {
    let mut names: Vec<&str> = members.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let index = |name: &str| names.binary_search(&name).ok();
    let slots = holdings.iter().map(|(shard, holding)| {
        let slot = Slot {
            holder: index(holding.holder),
            since: holding.since,
            bound_for: holding.bound_for.and_then(index),
        };
        (*shard, slot)
    });
    let placed = place(rankings, &names, slots);
    names.iter().map(|name| (*name).to_owned()).zip(placed).collect()
}

/// The placement by member index: `names` sorted and distinct, `slots`
/// the shards whose Lease names a holder. The core keeps its holders
/// resolved to indexes: looking up 1,000 names per placement was most of
/// its cost at 100 replicas.
pub fn place(
    rankings: &mut Rankings,
    names: &[&str],
    slots: impl Iterator<Item = (u32, Slot)>,
) -> Vec<BTreeSet<u32>> {
    let shards = rankings.shards;
    let mut placed: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); names.len()];
    if names.is_empty() {
        return placed;
    }
    let columns = rankings.columns(names);
    // Each member's Lease count, and what it may keep, newest first.
    let mut counts = vec![0usize; names.len()];
    let mut held: Vec<Vec<(Timestamp, u32)>> = vec![Vec::new(); names.len()];
    for (shard, slot) in slots.filter(|(shard, _)| *shard < shards) {
        if let Some(i) = slot.holder {
            counts[i] += 1;
        }
        match slot.bound_for {
            Some(i) => held[i].push((Timestamp::MAX, shard)),
            None => slot.holder.into_iter().for_each(|i| held[i].push((slot.since, shard))),
        }
    }
    for list in &mut held {
        list.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    }
    let quotas = quotas(shards, &counts);
    let mut loads = vec![0usize; names.len()];
    let mut kept = vec![false; shards as usize];
    for (i, list) in held.iter().enumerate() {
        for (_, shard) in list.iter().take(quotas[i]) {
            kept[*shard as usize] = true;
            loads[i] += 1;
            placed[i].insert(*shard);
        }
    }
    for shard in (0..shards).filter(|s| !kept[*s as usize]) {
        let i = heaviest(&columns, shard, |i| loads[i] < quotas[i]).expect("the quotas add up to the shards");
        loads[i] += 1;
        placed[i].insert(shard);
    }
    placed
}

/// The shards `names[me]` is next in line for: those the placement would
/// give it if their owner left now, every other member keeping what it is
/// placed. So this member keeps a warm standby of them: what a crashed
/// owner had not pushed, it has. The quotas count: the highest-ranked
/// survivor may be full, and then the next one below its quota is in line
/// (the first ranking alone missed 1 in 10 shards at 3 members).
pub fn successors(
    rankings: &mut Rankings,
    names: &[&str],
    placed: &[BTreeSet<u32>],
    me: usize,
) -> BTreeSet<u32> {
    let n = names.len();
    let mut mine = BTreeSet::new();
    if n < 2 {
        return mine;
    }
    let shards = rankings.shards as usize;
    let counts: Vec<usize> = placed.iter().map(BTreeSet::len).collect();
    // The extra shards go by count, ties in name order (as `quotas`): a
    // member's rank among the survivors is its rank less one when the
    // one that left ranked before it.
    let mut rank = vec![0; n];
    for (r, i) in by_count(&counts).into_iter().enumerate() {
        rank[i] = r;
    }
    let (base, extra) = (shards / (n - 1), shards % (n - 1));
    let quota_without =
        |i: usize, gone: usize| base + usize::from(rank[i] - usize::from(rank[gone] < rank[i]) < extra);
    let columns = rankings.columns(names);
    for gone in (0..n).filter(|o| *o != me && !placed[*o].is_empty()) {
        if counts[me] >= quota_without(me, gone) {
            continue;
        }
        let mut loads = counts.clone();
        for shard in &placed[gone] {
            let open = |i: usize| i != gone && loads[i] < quota_without(i, gone);
            let Some(to) = heaviest(&columns, *shard, open) else { break };
            loads[to] += 1;
            if to == me {
                mine.insert(*shard);
                if loads[me] >= quota_without(me, gone) {
                    break;
                }
            }
        }
    }
    mine
}

/// ⌊S/n⌋ for every member, plus one for the S mod n members whose Leases
/// hold most (ties to the smaller name: `counts` is in name order).
fn quotas(shards: u32, counts: &[usize]) -> Vec<usize> {
    let n = counts.len();
    let base = shards as usize / n;
    let extra = shards as usize % n;
    let mut quotas = vec![base; n];
    for i in by_count(counts).into_iter().take(extra) {
        quotas[i] += 1;
    }
    quotas
}

/// Member indexes by Lease count, most first; ties in name order (`counts`
/// is in name order, and the sort is stable).
fn by_count(counts: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|a, b| counts[*b].cmp(&counts[*a]));
    order
}

/// The member with the highest weight for `shard` among those `open`
/// admits; equal weights to the smaller name (`names` is sorted, so the
/// first seen).
fn heaviest(columns: &[&[u64]], shard: u32, open: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (i, column) in columns.iter().enumerate() {
        let w = column[shard as usize];
        if open(i) && best.is_none_or(|(bw, _)| w > bw) {
            best = Some((w, i));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("gitops-reverser-{i}")).collect()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    /// The Leases after every member took what it was given at `time`.
    fn held_as(placed: &BTreeMap<String, BTreeSet<u32>>, time: i64) -> BTreeMap<u32, Holding<'_>> {
        placed
            .iter()
            .flat_map(|(member, shards)| shards.iter().map(move |s| (*s, held_by(member, at(time)))))
            .collect()
    }

    fn held_by(member: &str, since: Timestamp) -> Holding<'_> {
        Holding { holder: member, since, bound_for: None }
    }

    fn owners(placed: &BTreeMap<String, BTreeSet<u32>>) -> BTreeMap<u32, String> {
        placed.iter().flat_map(|(m, shards)| shards.iter().map(move |s| (*s, m.clone()))).collect()
    }

    fn moved(before: &BTreeMap<String, BTreeSet<u32>>, after: &BTreeMap<String, BTreeSet<u32>>) -> usize {
        let (before, after) = (owners(before), owners(after));
        after.iter().filter(|(s, m)| before.get(s) != Some(m)).count()
    }

    #[test]
    fn every_shard_is_placed_within_the_quotas() {
        for n in [1, 2, 3, 7, 20, 100] {
            for shards in [1, 32, 1000] {
                let placed = placement(shards, &members(n), &BTreeMap::new());
                let loads: Vec<usize> = placed.values().map(BTreeSet::len).collect();
                assert_eq!(loads.iter().sum::<usize>(), shards as usize, "{n} members, {shards} shards");
                let floor = shards as usize / n;
                assert!(loads.iter().all(|l| *l == floor || *l == floor + 1), "{n}, {shards}: {loads:?}");
            }
        }
    }

    /// For every member that dies, every shard it held goes to the one
    /// member lined up for it, in a fresh installation and in one that a
    /// join and a leave left uneven.
    #[test]
    fn each_shard_has_one_successor_and_it_takes_the_shard_when_its_owner_dies() {
        for (n, shards) in [(2, 64), (3, 32), (3, 64), (5, 256), (20, 1000)] {
            let fleet = members(n + 1);
            let fresh = placement(shards, &fleet[..n], &BTreeMap::new());
            // A member joins, and another one leaves.
            let joined = placement(shards, &fleet, &held_as(&fresh, 10));
            let mut held = held_as(&joined, 20);
            held.retain(|_, h| h.holder != fleet[1]);
            let mut survivors = fleet.clone();
            survivors.remove(1);
            let uneven = placement(shards, &survivors, &held);
            for placed in [fresh, uneven] {
                let alive: Vec<String> = placed.keys().cloned().collect();
                let names: Vec<&str> = alive.iter().map(String::as_str).collect();
                let by_index: Vec<BTreeSet<u32>> = placed.values().cloned().collect();
                let mut rankings = Rankings::new(shards);
                let next: Vec<BTreeSet<u32>> =
                    (0..n).map(|me| successors(&mut rankings, &names, &by_index, me)).collect();
                for shard in 0..shards {
                    let lined_up: Vec<usize> = (0..n).filter(|m| next[*m].contains(&shard)).collect();
                    assert_eq!(lined_up.len(), 1, "{n} members: shard {shard}");
                    assert!(!by_index[lined_up[0]].contains(&shard), "the owner is not its own successor");
                }
                for dead in 0..n {
                    let mut held = held_as(&placed, 30);
                    held.retain(|_, h| h.holder != alive[dead]);
                    let mut rest = alive.clone();
                    rest.remove(dead);
                    let after = placement(shards, &rest, &held);
                    for shard in &by_index[dead] {
                        let heir = after.iter().find(|(_, s)| s.contains(shard)).map(|(m, _)| m);
                        let lined_up = (0..n).find(|m| next[*m].contains(shard)).map(|m| &alive[m]);
                        assert_eq!(heir, lined_up, "{n} members, {} died: shard {shard}", alive[dead]);
                    }
                }
            }
        }
    }

    #[test]
    fn a_balanced_installation_stays_as_it_is() {
        let fleet = members(3);
        let first = placement(32, &fleet, &BTreeMap::new());
        let again = placement(32, &fleet, &held_as(&first, 10));
        assert_eq!(again, first);
        let mut reversed = fleet.clone();
        reversed.reverse();
        assert_eq!(placement(32, &reversed, &held_as(&first, 10)), first, "in any order");
    }

    #[test]
    fn a_join_or_a_leave_moves_the_ideal() {
        let fleet = members(3);
        let three = placement(1000, &fleet, &BTreeMap::new());
        let four = placement(1000, &members(4), &held_as(&three, 10));
        // The new member gets its quota, all from the others.
        assert_eq!(moved(&three, &four), 250);
        assert_eq!(four["gitops-reverser-3"].len(), 250);
        let back = placement(1000, &fleet, &held_as(&four, 20));
        assert_eq!(moved(&four, &back), 250, "the leaving member's shards only");
    }

    #[test]
    fn a_restart_moves_each_shard_once() {
        // gitops-reverser-1 stops: its shards go to the others, at time 20.
        let fleet = members(3);
        let before = placement(32, &fleet, &held_as(&placement(32, &fleet, &BTreeMap::new()), 10));
        let survivors = vec![fleet[0].clone(), fleet[2].clone()];
        let mut holdings = held_as(&before, 10);
        holdings.retain(|_, h| h.holder != fleet[1]);
        let during = placement(32, &survivors, &holdings);
        for (owner, shards) in &during {
            for shard in shards.intersection(&before[&fleet[1]]) {
                holdings.insert(*shard, held_by(owner, at(20)));
            }
        }
        // It comes back: it gets older shards, never the ones that just moved.
        let after = placement(32, &fleet, &holdings);
        let moved_twice: Vec<u32> =
            after[&fleet[1]].iter().copied().filter(|s| before[&fleet[1]].contains(s)).collect();
        assert!(moved_twice.is_empty(), "moved away and back: {moved_twice:?}");
        assert!(after[&fleet[1]].len() >= 10);
        assert_eq!(moved(&during, &after), after[&fleet[1]].len());
    }

    #[test]
    fn a_shard_on_its_way_stays_with_the_standby() {
        let fleet = members(2);
        let mut holdings: BTreeMap<u32, Holding> =
            (0..4).map(|s| (s, held_by(&fleet[0], at(10 + i64::from(s))))).collect();
        // Shard 3 is the newest of its holder, but on its way.
        holdings.get_mut(&3).unwrap().bound_for = Some(&fleet[1]);
        let placed = placement(4, &fleet, &holdings);
        assert!(placed[&fleet[1]].contains(&3));
        assert_eq!(placed[&fleet[1]].len(), 2);
        // The other goes from the oldest of the rest: shard 0.
        assert!(placed[&fleet[1]].contains(&0), "{placed:?}");
        // Until the Lease moves, the quotas count it for its holder.
        let mut five = holdings.clone();
        five.insert(4, held_by(&fleet[1], at(1)));
        let placed = placement(5, &fleet, &five);
        assert_eq!(placed[&fleet[0]].len(), 3, "the extra shard stays with the holder of most: {placed:?}");
        assert!(placed[&fleet[1]].contains(&3));
    }

    #[test]
    fn kept_weights_place_as_fresh_ones_do() {
        let fleet = members(7);
        let mut rankings = Rankings::new(100);
        let mut holdings = BTreeMap::new();
        for round in 0..4 {
            // A member goes and comes back.
            let mut present = fleet.clone();
            if round % 2 == 1 {
                present.remove(2);
            }
            let placed = placement(100, &present, &holdings);
            assert_eq!(ranked_placement(&mut rankings, &present, &holdings), placed, "round {round}");
            // Held as placed, but every third shard is free.
            holdings = placed
                .iter()
                .flat_map(|(member, shards)| {
                    let member = fleet.iter().find(|f| *f == member).expect("a member");
                    shards.iter().map(move |s| (*s, held_by(member, at(round))))
                })
                .filter(|(shard, _)| shard % 3 != round as u32)
                .collect();
        }
    }

    #[test]
    fn holders_that_are_not_members_count_as_free() {
        let fleet = members(2);
        let holdings: BTreeMap<u32, Holding> = (0..8).map(|s| (s, held_by("gone", at(1)))).collect();
        assert_eq!(placement(8, &fleet, &holdings), placement(8, &fleet, &BTreeMap::new()));
    }
}
