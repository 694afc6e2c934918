//! Figures computed from what was written and what reached the server:
//! per-change lag, the final state check, failover gaps, shard balance.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{Cluster, branch_of};
use crate::load::Change;
use crate::remote::{Mirror, PushInfo};
use crate::sampler::Sample;

/// Per change, the time from its acceptance to the first push that carried
/// its value or a later one of the same object (a coalesced change counts
/// as pushed with its successor). None: not pushed.
pub fn lags(changes: &[Change], pushes: &[PushInfo]) -> Vec<Option<f64>> {
    // Per object: (push time, highest value pushed so far), in time order.
    let mut seen: HashMap<usize, Vec<(f64, u64)>> = HashMap::new();
    let mut ordered: Vec<&PushInfo> = pushes.iter().collect();
    ordered.sort_by(|a, b| a.at.total_cmp(&b.at));
    for push in ordered {
        for (object, value) in &push.values {
            let list = seen.entry(*object).or_default();
            let best = list.last().map_or(*value, |(_, max)| (*max).max(*value));
            list.push((push.at, best));
        }
    }
    changes
        .iter()
        .map(|c| {
            let list = seen.get(&c.object)?;
            let i = list.partition_point(|(_, max)| *max < c.seq);
            list.get(i).map(|(at, _)| at - c.accepted)
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct FinalCheck {
    /// Live objects whose file is missing or differs, plus files of no live object.
    pub lost: usize,
    pub missing: usize,
    pub differing: usize,
    pub extra: usize,
    pub objects: usize,
    pub examples: Vec<String>,
    /// Seconds from the end of the load until the branches equalled the cluster.
    pub converged_after_seconds: Option<f64>,
}

async fn check_once(cluster: &Cluster, mirror: &Mirror<'_>) -> Result<FinalCheck, String> {
    let mut check = FinalCheck {
        lost: 0,
        missing: 0,
        differing: 0,
        extra: 0,
        objects: 0,
        examples: Vec::new(),
        converged_after_seconds: None,
    };
    mirror.fetch()?;
    for target in 0..cluster.targets {
        let expected = cluster.expected_files(target).await?;
        let actual = mirror.files(&branch_of(target), &format!("t{target}"))?;
        check.objects += expected.len();
        for (path, bytes) in &expected {
            match actual.get(path) {
                None => {
                    check.missing += 1;
                    check.examples.push(format!("missing {}:{path}", branch_of(target)));
                }
                Some(got) if got != bytes => {
                    check.differing += 1;
                    check.examples.push(format!("differs {}:{path}", branch_of(target)));
                }
                Some(_) => {}
            }
        }
        for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
            check.extra += 1;
            check.examples.push(format!("extra {}:{path}", branch_of(target)));
        }
    }
    check.lost = check.missing + check.differing + check.extra;
    check.examples.truncate(10);
    Ok(check)
}

/// Waits up to `timeout` for every branch to equal the live objects; the
/// result of the last comparison counts.
pub async fn final_check(
    cluster: &Cluster,
    mirror: &Mirror<'_>,
    timeout: Duration,
) -> Result<FinalCheck, String> {
    let started = Instant::now();
    loop {
        let mut check = check_once(cluster, mirror).await?;
        if check.lost == 0 {
            check.converged_after_seconds = Some(started.elapsed().as_secs_f64());
            return Ok(check);
        }
        if started.elapsed() > timeout {
            return Ok(check);
        }
        eprintln!("final check: {} of {} objects not yet equal; waiting", check.lost, check.objects);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Disruption {
    /// Unix seconds.
    pub at: f64,
    /// `kill`, `freeze`, `thaw`, `terminate`, `start`.
    pub kind: String,
    pub replica: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub at: f64,
    pub kind: String,
    pub replica: String,
    /// Branches whose last push before the disruption was the victim's.
    pub branches: usize,
    /// Seconds from the disruption to the first push of another replica on
    /// those branches: median and max over the branches (None: none seen).
    pub median_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
    /// Every branch's gap, ascending.
    #[serde(skip)]
    pub seconds: Vec<f64>,
}

/// Failover (kill, freeze) and handover (terminate) gaps.
pub fn gaps(disruptions: &[Disruption], pushes: &[PushInfo]) -> Vec<Gap> {
    let mut ordered: Vec<&PushInfo> = pushes.iter().collect();
    ordered.sort_by(|a, b| a.at.total_cmp(&b.at));
    disruptions
        .iter()
        .filter(|d| matches!(d.kind.as_str(), "kill" | "freeze" | "terminate"))
        .map(|d| {
            let mut last: BTreeMap<&str, Option<&str>> = BTreeMap::new();
            for push in ordered.iter().take_while(|p| p.at < d.at) {
                last.insert(&push.branch, push.replica.as_deref());
            }
            let victims: Vec<&str> =
                last.iter().filter(|(_, r)| **r == Some(d.replica.as_str())).map(|(b, _)| *b).collect();
            let mut found: Vec<f64> = victims
                .iter()
                .filter_map(|branch| {
                    ordered
                        .iter()
                        .find(|p| {
                            p.at >= d.at
                                && p.branch == *branch
                                && p.replica.as_deref() != Some(d.replica.as_str())
                        })
                        .map(|p| p.at - d.at)
                })
                .collect();
            found.sort_by(f64::total_cmp);
            Gap {
                at: d.at,
                kind: d.kind.clone(),
                replica: d.replica.clone(),
                branches: victims.len(),
                median_seconds: found.get(found.len() / 2).copied(),
                max_seconds: found.last().copied(),
                seconds: found,
            }
        })
        .collect()
}

/// max/avg of shards per live replica in a sample (None: no live holder).
/// How often shards changed hands over the samples: a shard moves when a
/// sample shows a holder other than its last one (a gap with no holder in
/// between is no move; a move and back within one sample interval is missed).
/// Returns (moves in all, the most any one shard made).
pub fn shard_moves(samples: &[Sample]) -> (u64, u64) {
    let mut last: BTreeMap<u32, &str> = BTreeMap::new();
    let mut moves: BTreeMap<u32, u64> = BTreeMap::new();
    for sample in samples {
        for (shard, holder) in &sample.holders {
            if let Some(before) = last.insert(*shard, holder)
                && before != holder
            {
                *moves.entry(*shard).or_insert(0) += 1;
            }
        }
    }
    (moves.values().sum(), moves.values().copied().max().unwrap_or(0))
}

/// The most moves one shard made between two consecutive stops (SIGTERM
/// or kill) of a replica, counted from the first stop on: a rolling update
/// should move each shard at most once per restart.
pub fn most_moves_between_stops(samples: &[Sample], disruptions: &[Disruption]) -> u64 {
    let stops: Vec<f64> = disruptions
        .iter()
        .filter(|d| matches!(d.kind.as_str(), "terminate" | "kill"))
        .map(|d| d.at)
        .collect();
    let mut last: BTreeMap<u32, &str> = BTreeMap::new();
    let mut moves: BTreeMap<(usize, u32), u64> = BTreeMap::new();
    for sample in samples {
        let window = stops.iter().take_while(|at| **at <= sample.at).count();
        for (shard, holder) in &sample.holders {
            if let Some(before) = last.insert(*shard, holder)
                && before != holder
                && window > 0
            {
                *moves.entry((window, *shard)).or_insert(0) += 1;
            }
        }
    }
    moves.values().copied().max().unwrap_or(0)
}

pub fn balance(sample: &Sample, shards: usize) -> Option<f64> {
    let live = sample.replicas.iter().filter(|r| !r.frozen).count();
    let max = *sample.shards.values().max()?;
    (live > 0).then(|| max as f64 / (shards as f64 / live as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_moves_count_holder_changes_not_gaps() {
        let sample = |holders: &[(u32, &str)]| Sample {
            at: 0.0,
            replicas: Vec::new(),
            shards: BTreeMap::new(),
            unowned: 0,
            holders: holders.iter().map(|(shard, holder)| (*shard, holder.to_string())).collect(),
        };
        // Shard 0: a, unowned, a again, then b (one move); shard 1: b, b, c, b (two).
        let samples = [
            sample(&[(0, "a"), (1, "b")]),
            sample(&[(1, "b")]),
            sample(&[(0, "a"), (1, "c")]),
            sample(&[(0, "b"), (1, "b")]),
        ];
        assert_eq!(shard_moves(&samples), (3, 2));
    }

    #[test]
    fn moves_count_per_window_between_stops() {
        let sample = |at: f64, holders: &[(u32, &str)]| Sample {
            at,
            replicas: Vec::new(),
            shards: BTreeMap::new(),
            unowned: 0,
            holders: holders.iter().map(|(shard, holder)| (*shard, holder.to_string())).collect(),
        };
        let stop = |at: f64| Disruption { at, kind: "terminate".into(), replica: "a".into() };
        // Shard 0 goes a → b after the first stop, b → a after the second:
        // once per window. Shard 1 goes b → c → b within the second.
        let samples = [
            sample(0.0, &[(0, "a"), (1, "b")]),
            sample(1.5, &[(0, "b"), (1, "b")]),
            sample(2.5, &[(0, "a"), (1, "c")]),
            sample(3.0, &[(0, "a"), (1, "b")]),
        ];
        assert_eq!(most_moves_between_stops(&samples, &[]), 0, "before the first stop");
        assert_eq!(most_moves_between_stops(&samples, &[stop(1.0)]), 2);
        assert_eq!(most_moves_between_stops(&samples[..3], &[stop(1.0)]), 2);
        assert_eq!(most_moves_between_stops(&samples[..3], &[stop(1.0), stop(2.0)]), 1);
    }

    fn push(at: f64, branch: &str, replica: &str, values: &[(usize, u64)]) -> PushInfo {
        PushInfo {
            at,
            branch: branch.into(),
            replica: Some(replica.into()),
            values: values.to_vec(),
            commits: 1,
        }
    }

    #[test]
    fn a_coalesced_change_is_pushed_with_its_successor() {
        let changes = [
            Change { object: 0, seq: 10, accepted: 1.0 },
            Change { object: 0, seq: 12, accepted: 2.0 },
            Change { object: 1, seq: 11, accepted: 1.5 },
            Change { object: 2, seq: 13, accepted: 3.0 },
        ];
        // Object 0 only ever shows 12 (10 was coalesced); object 2 never.
        let pushes = [push(4.0, "b0", "r0", &[(0, 12)]), push(3.0, "b1", "r0", &[(1, 11)])];
        assert_eq!(lags(&changes, &pushes), vec![Some(3.0), Some(2.0), Some(1.5), None]);
    }

    #[test]
    fn failover_gap_is_first_push_of_another_replica_on_the_victims_branches() {
        let pushes = [
            push(1.0, "b0", "r0", &[]),
            push(1.0, "b1", "r1", &[]),
            push(5.0, "b0", "r0", &[]),
            push(9.0, "b0", "r1", &[]),
            push(9.5, "b1", "r1", &[]),
        ];
        let kill = Disruption { at: 2.0, kind: "kill".into(), replica: "r0".into() };
        let gaps = gaps(&[kill], &pushes);
        assert_eq!(gaps[0].branches, 1);
        assert_eq!(gaps[0].max_seconds, Some(7.0));
    }
}
