//! Placement: a branch key onto a shard, and a shard onto a replica.
//!
//! In: a [`BranchKey`] and the shard count S (fixed per installation), or a
//! shard id and the names of the live members. Out: the shard id, or the
//! desired owner of a shard.
//!
//! Both steps hash defined bytes with xxh3-64, never `std::hash::Hash`, whose
//! output may change between compiler versions: during a rolling upgrade two
//! builds must agree on every placement. The golden tests pin the values.
//!
//! The owner of a shard is chosen by rendezvous (highest-random-weight)
//! hashing: each member gets the weight xxh3-64(shard as u32 big-endian ++
//! 0x00 ++ member name), and the highest weight wins; equal weights go to the
//! lexicographically smallest name. The choice does not depend on the order
//! of `members`, and a membership change moves only the shards of a removed
//! member, or the shards a new member now wins (about 1/n).

use std::collections::BTreeMap;

use xxhash_rust::xxh3::xxh3_64;

use crate::route::BranchKey;

/// The shard of a branch key: xxh3-64 of [`BranchKey::stable_bytes`] modulo
/// `shards`.
///
/// # Panics
/// If `shards` is 0.
pub fn shard_of(key: &BranchKey, shards: u32) -> u32 {
    shard_of_bytes(&key.stable_bytes(), shards)
}

/// The shard of any stable byte string (used for objects that have no
/// branch, e.g. the status of a GitTarget whose provider is missing).
///
/// # Panics
/// If `shards` is 0.
pub fn shard_of_bytes(bytes: &[u8], shards: u32) -> u32 {
    assert!(shards > 0, "the shard count must be at least 1");
    (xxh3_64(bytes) % u64::from(shards)) as u32
}

#[cfg(test)]
fn key_hash(key: &BranchKey) -> u64 {
    xxh3_64(&key.stable_bytes())
}

/// The rendezvous weight of `member` for `shard`.
fn weight(shard: u32, member: &str) -> u64 {
    // On the stack for any name a Kubernetes pod can have (≤ 63 bytes).
    let mut buffer = [0u8; 80];
    let len = 5 + member.len();
    let mut heap;
    let bytes: &mut [u8] = if len <= buffer.len() {
        &mut buffer[..len]
    } else {
        heap = vec![0u8; len];
        &mut heap
    };
    bytes[..4].copy_from_slice(&shard.to_be_bytes());
    bytes[4] = 0;
    bytes[5..].copy_from_slice(member.as_bytes());
    xxh3_64(bytes)
}

/// The desired owner of `shard` among `members`: the highest rendezvous
/// weight, ties to the smallest name. `None` if there are no members.
pub fn owner_of(shard: u32, members: &[String]) -> Option<&str> {
    let mut best: Option<(u64, &str)> = None;
    for member in members {
        let w = weight(shard, member);
        best = match best {
            Some((bw, bm)) if bw > w || (bw == w && bm <= member.as_str()) => Some((bw, bm)),
            _ => Some((w, member.as_str())),
        };
    }
    best.map(|(_, member)| member)
}

/// Most shards one member may own: the smallest whole number at or above
/// the average, or up to 10% above it when that leaves more room to follow
/// the rendezvous preference (fewer moves on membership changes).
pub fn capacity(shards: u32, members: usize) -> usize {
    if members == 0 {
        return 0;
    }
    let average = f64::from(shards) / members as f64;
    (average.ceil() as usize).max((average * 1.10).floor() as usize)
}

/// The desired shards of every member, for shards `0..shards`: rendezvous
/// hashing with bounded loads. Shards are placed in ascending order, each on
/// its highest-weight member that is still below [`capacity`], so max/avg
/// stays ≤ 1.10 (or one shard above the average), and a membership change
/// still moves few shards. Every member appears, with an empty list if it
/// owns none; shard lists are ascending. All replicas that agree on the
/// member set compute the same assignment.
pub fn assignment(shards: u32, members: &[String]) -> BTreeMap<String, Vec<u32>> {
    let mut names: Vec<&String> = members.iter().collect();
    names.sort();
    names.dedup();
    // Replicas that share a process (the simulation runs a hundred) and see
    // the same members share the work: O(shards × members) hashes each.
    let key: Vec<String> = names.iter().map(|name| (*name).clone()).collect();
    if let Some(known) = RECENT.with_borrow(|recent| {
        recent.iter().find(|(s, m, _)| *s == shards && *m == key).map(|(_, _, owned)| owned.clone())
    }) {
        return known;
    }
    let owned = place(shards, &names);
    RECENT.with_borrow_mut(|recent| {
        if recent.len() == RECENT_KEPT {
            recent.remove(0);
        }
        recent.push((shards, key, owned.clone()));
    });
    owned
}

/// Assignments this thread computed last, newest at the end.
const RECENT_KEPT: usize = 8;

type Placed = (u32, Vec<String>, BTreeMap<String, Vec<u32>>);

thread_local! {
    static RECENT: std::cell::RefCell<Vec<Placed>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`assignment`] of sorted, distinct `names`.
fn place(shards: u32, names: &[&String]) -> BTreeMap<String, Vec<u32>> {
    let mut owned: BTreeMap<String, Vec<u32>> = names.iter().map(|m| ((*m).clone(), Vec::new())).collect();
    let cap = capacity(shards, names.len());
    let mut loads = vec![0usize; names.len()];
    for shard in 0..shards {
        // The highest weight among members below capacity; equal weights
        // to the smallest name (`names` is sorted, so the first seen).
        let mut best: Option<(u64, usize)> = None;
        for (index, name) in names.iter().enumerate() {
            if loads[index] >= cap {
                continue;
            }
            let w = weight(shard, name);
            if best.is_none_or(|(bw, _)| w > bw) {
                best = Some((w, index));
            }
        }
        if let Some((_, index)) = best {
            loads[index] += 1;
            owned.get_mut(names[index]).expect("the owner is a member").push(shard);
        }
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The placement as first written: every member ranked by weight for
    /// each shard, the first below capacity wins. `place` must agree with it
    /// everywhere, or two builds would disagree during a rolling upgrade.
    fn ranked_placement(shards: u32, members: &[String]) -> BTreeMap<String, Vec<u32>> {
        let mut names: Vec<&String> = members.iter().collect();
        names.sort();
        let mut owned: BTreeMap<String, Vec<u32>> =
            names.iter().map(|m| ((*m).clone(), Vec::new())).collect();
        let cap = capacity(shards, names.len());
        for shard in 0..shards {
            let mut ranked: Vec<(u64, &String)> = names.iter().map(|m| (weight(shard, m), *m)).collect();
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            if let Some((_, owner)) = ranked.iter().find(|(_, m)| owned[*m].len() < cap) {
                owned.get_mut(*owner).unwrap().push(shard);
            }
        }
        owned
    }

    #[test]
    fn placement_and_its_memo_agree_with_the_ranking() {
        for n in [1, 2, 3, 5, 7, 20, 64] {
            for shards in [1, 32, 100, 1000] {
                let fleet = members(n);
                let expected = ranked_placement(shards, &fleet);
                assert_eq!(assignment(shards, &fleet), expected, "{n} members, {shards} shards");
                let mut shuffled = fleet.clone();
                shuffled.reverse();
                shuffled.push(fleet[0].clone());
                assert_eq!(assignment(shards, &shuffled), expected, "remembered, in any order");
            }
        }
        let long = vec!["r".repeat(200), "s".into()];
        assert_eq!(assignment(32, &long), ranked_placement(32, &long), "a name past the stack buffer");
    }

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("gitops-reverser-{i}")).collect()
    }

    /// max load / average load when shards `0..items` go to `n` members.
    fn max_over_avg(items: u32, n: usize) -> f64 {
        let owned = assignment(items, &members(n));
        let max = owned.values().map(Vec::len).max().unwrap();
        max as f64 / (f64::from(items) / n as f64)
    }

    /// Golden values, cross-checked with the Python `xxhash` package. If one
    /// changes, placements change between builds: never accept that silently.
    #[test]
    fn golden_values() {
        let fleet = BranchKey::new("https://github.com/example/fleet.git", "main");
        let audit = BranchKey::new("ssh://git@git.example.com/org/audit", "prod");
        assert_eq!(key_hash(&fleet), 0x871d_d7dc_4361_ae8d);
        assert_eq!(key_hash(&audit), 0x8642_9863_150f_42e8);
        assert_eq!((shard_of(&fleet, 32), shard_of(&fleet, 1000)), (13, 493));
        assert_eq!((shard_of(&audit, 32), shard_of(&audit, 1000)), (8, 680));

        assert_eq!(weight(0, "gitops-reverser-0"), 0x7ae8_a449_99d0_4219);
        assert_eq!(weight(31, "gitops-reverser-0"), 0xda85_faa8_0b34_a21a);
        let five = members(5);
        let owners: Vec<_> = [0, 1, 7, 31].map(|shard| owner_of(shard, &five).unwrap()).into();
        assert_eq!(
            owners,
            ["gitops-reverser-4", "gitops-reverser-2", "gitops-reverser-0", "gitops-reverser-0"]
        );
    }

    #[test]
    fn shard_of_stays_in_range() {
        for i in 0..200 {
            let key = BranchKey::new(&format!("https://h/r{i}"), "main");
            assert!(shard_of(&key, 7) < 7);
            assert_eq!(shard_of(&key, 1), 0);
        }
    }

    #[test]
    #[should_panic(expected = "shard count")]
    fn zero_shards_panics() {
        shard_of(&BranchKey::new("https://h/r", "main"), 0);
    }

    #[test]
    fn no_members_no_owner() {
        assert_eq!(owner_of(3, &[]), None);
        assert!(assignment(32, &[]).is_empty());
    }

    /// 1,000 shards. Plain rendezvous is a multinomial draw (for 10 members
    /// the expected max is about 1.15 × the average); the bounded loads of
    /// [`assignment`] keep every member within 1.10.
    #[test]
    fn balance_on_1000_items() {
        for n in [3, 5, 10] {
            let ratio = max_over_avg(1000, n);
            println!("{n} members, 1000 shards: max/avg {ratio:.3}");
            assert!(ratio <= 1.10, "{n} members: max/avg {ratio:.3} > 1.10");
        }
        for (shards, n) in [(32, 3), (32, 5), (32, 10), (64, 3)] {
            let ratio = max_over_avg(shards, n);
            let bound = (capacity(shards, n) as f64) / (f64::from(shards) / n as f64);
            assert!(ratio <= bound + 1e-9, "{shards} shards on {n}: {ratio:.3} > {bound:.3}");
        }
    }

    /// Shards that change owner when the member set changes from `before` to `after`.
    fn moved(shards: u32, before: &[String], after: &[String]) -> usize {
        let owner = |assigned: &BTreeMap<String, Vec<u32>>| {
            let mut by_shard = BTreeMap::new();
            for (member, list) in assigned {
                for shard in list {
                    by_shard.insert(*shard, member.clone());
                }
            }
            by_shard
        };
        let (a, b) = (owner(&assignment(shards, before)), owner(&assignment(shards, after)));
        (0..shards).filter(|s| a.get(s) != b.get(s)).count()
    }

    /// Bounded loads move more than plain rendezvous, but stay near the
    /// ideal: a joining member should take 1/n of the shards.
    #[test]
    fn membership_changes_move_few_shards() {
        for (from, to) in [(3, 4), (4, 3), (1, 3), (3, 5), (5, 2)] {
            let moved = moved(1000, &members(from), &members(to));
            let ideal = if to > from {
                1000.0 * (to - from) as f64 / to as f64
            } else {
                1000.0 * (from - to) as f64 / from as f64
            };
            println!("{from} -> {to} members: {moved} of 1000 shards moved, ideal {ideal:.0}");
            assert!((moved as f64) <= ideal * 1.2, "{from} -> {to}: moved {moved}, ideal {ideal:.0}");
        }
    }

    #[test]
    fn every_member_is_listed_and_every_shard_owned_once() {
        let owned = assignment(32, &members(10));
        assert_eq!(owned.len(), 10);
        let mut all: Vec<u32> = owned.values().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..32).collect::<Vec<_>>());
    }

    #[test]
    fn adding_a_member_moves_about_a_quarter_only_to_it() {
        let (three, four) = (members(3), members(4));
        let mut moved = 0;
        for shard in 0..1000 {
            let (before, after) = (owner_of(shard, &three).unwrap(), owner_of(shard, &four).unwrap());
            if before != after {
                assert_eq!(after, "gitops-reverser-3", "shard {shard} moved between old members");
                moved += 1;
            }
        }
        let fraction = f64::from(moved) / 1000.0;
        assert!((0.15..=0.35).contains(&fraction), "moved {fraction}");
    }

    #[test]
    fn removing_a_member_moves_only_its_shards() {
        let four = members(4);
        let three: Vec<String> = four.iter().filter(|m| *m != "gitops-reverser-1").cloned().collect();
        for shard in 0..1000 {
            let before = owner_of(shard, &four).unwrap();
            if before != "gitops-reverser-1" {
                assert_eq!(owner_of(shard, &three), Some(before), "shard {shard}");
            }
        }
    }

    #[test]
    fn member_order_does_not_matter() {
        let ten = members(10);
        let mut reversed = ten.clone();
        reversed.reverse();
        let mut rotated = ten.clone();
        rotated.rotate_left(3);
        let expected = assignment(1000, &ten);
        assert_eq!(assignment(1000, &reversed), expected);
        assert_eq!(assignment(1000, &rotated), expected);
    }
}
