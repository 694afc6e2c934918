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
//! A shard's rendezvous owner (`balance` uses these weights for the shards
//! it places freely) is chosen by highest-random-weight hashing: each
//! member gets the weight xxh3-64(shard as u32 big-endian ++ 0x00 ++ member
//! name), and the highest weight wins; equal weights go to the
//! lexicographically smallest name. The choice does not depend on the order
//! of `members`, and a membership change moves only the shards of a removed
//! member, or the shards a new member now wins (about 1/n).

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

/// How many of `members` (other than `me`) outrank `me` for `shard`: a
/// higher weight, or an equal one and a smaller name.
pub(super) fn rank_among<'a>(shard: u32, me: &str, members: impl Iterator<Item = &'a str>) -> usize {
    let mine = weight(shard, me);
    members
        .filter(|m| *m != me)
        .filter(|m| {
            let w = weight(shard, m);
            w > mine || (w == mine && *m < me)
        })
        .count()
}

/// The rendezvous weight of `member` for `shard`.
pub(super) fn weight(shard: u32, member: &str) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("gitops-reverser-{i}")).collect()
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
}
