//! Per-change completeness: every value the load wrote is looked up in the
//! full history of its branch (every commit reachable from the tip), not
//! only in the final state, which every resync rewrites. The operator may
//! skip a value only by coalescing it into a pending change of the same
//! file, which it counts (`gitops_reverser_events_coalesced_total`); a
//! replica that is killed or frozen loses the commits it had not pushed, so
//! for those faults the values of the victim's branches around the fault
//! are set apart (fault windows). Planned handovers of a shard get
//! handover windows, counted apart only to locate a loss: since the
//! standby handover they must lose nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use gitops_reverser::route::BranchKey;
use serde::Serialize;

use crate::cluster::branch_of;
use crate::exposition::sample;
use crate::load::Change;
use crate::measure::Disruption;
use crate::remote::PushInfo;

/// The operator's counter of changes merged into a pending change of the same file.
pub const COALESCED: &str = "gitops_reverser_events_coalesced_total";

/// `events_coalesced_total` by branch label in one exposition, summed over
/// the other labels.
pub fn coalesced_by_branch(text: &str) -> BTreeMap<String, f64> {
    let mut by_branch = BTreeMap::new();
    for (name, labels, value) in text.lines().filter_map(|l| sample(l).ok().flatten()) {
        if name == COALESCED {
            let branch =
                labels.iter().find(|(k, _)| *k == "branch").map(|(_, v)| v.clone()).unwrap_or_default();
            *by_branch.entry(branch).or_insert(0.0) += value;
        }
    }
    by_branch
}

/// A span of time in which a replica killed or frozen at `fault` may have
/// lost values of `branch`, a branch it owned then (the commits it made but
/// had not pushed), until the first push on the branch by another replica
/// (the new owner resyncs the final state, not the steps in between). It
/// starts at the earlier of: the fault less the push interval, the push
/// timeout and 1 s (a commit waits at most the interval for its push, a
/// push in flight may have started up to the timeout earlier, the event →
/// commit step takes a moment); and what the victim had certainly pushed:
/// its last push on the branch since it acquired the branch's shard less
/// the push timeout and 1 s, or that acquisition if it made none (when the
/// git server is slow, pushes wait for a slot or back off).
#[derive(Debug, Clone, Serialize)]
pub struct FaultWindow {
    pub kind: String,
    pub replica: String,
    pub branch: String,
    pub fault: f64,
    pub from: f64,
    pub to: f64,
    /// A handover whose old owner logged "drain timed out" on the branch:
    /// it declared what it did not push (a git server too slow for the
    /// shutdown timeout), as a kill would lose it.
    pub drain_timed_out: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Completeness {
    /// Changes the API server accepted.
    pub written: usize,
    /// Of them, the ones whose value is in some commit of their branch.
    pub in_history: usize,
    pub missing: usize,
    /// `events_coalesced_total` over the load, summed over every replica
    /// (each one's last read minus its read before the load).
    pub coalesced: f64,
    /// The same per replica.
    pub coalesced_by_replica: BTreeMap<String, f64>,
    /// Missing values written inside a fault window of their branch.
    pub missing_in_fault_windows: usize,
    pub fault_windows: usize,
    /// Missing values written inside a handover window of their branch
    /// (and in no fault window): planned handovers must lose nothing.
    pub missing_in_handover_windows: usize,
    pub handover_windows: usize,
    /// Of the handover windows, those whose drain timed out, and the missing
    /// values in them (counted in `missing_in_handover_windows` too).
    pub drain_timeout_windows: usize,
    pub missing_in_drain_timeouts: usize,
    /// Up to 20 missing values, those outside fault and handover windows first:
    /// `b<i> o-<j>=v<seq> at +<s>` (seconds into the load).
    pub missing_examples: Vec<String>,
    /// Why the check could not run (then every count is 0).
    pub error: Option<String>,
}

/// The shards a replica held at `at`, with when it acquired each, from the
/// "acquired/released/lost shard" lines of its JSON log.
fn shards_held_at(log: &str, at: f64) -> BTreeMap<u64, f64> {
    let mut held = BTreeMap::new();
    let mut events: Vec<(f64, u64, bool)> = Vec::new();
    for line in log.lines().filter(|l| l.contains(" shard")) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let gained = match v["message"].as_str() {
            Some("acquired shard") => true,
            Some("released shard" | "lost shard") => false,
            _ => continue,
        };
        let shard = v["shard"].as_u64().or_else(|| v["shard"].as_str()?.parse().ok());
        let time = v["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_nanosecond() as f64 / 1e9);
        if let (Some(shard), Some(time)) = (shard, time) {
            events.push((time, shard, gained));
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (time, shard, gained) in events.into_iter().take_while(|e| e.0 < at) {
        if gained {
            held.insert(shard, time);
        } else {
            held.remove(&shard);
        }
    }
    held
}

/// The first push on `branch` by a replica other than the victim of `d`, after `d`.
fn first_push_by_another(pushes: &[PushInfo], branch: &str, d: &Disruption) -> Option<f64> {
    pushes
        .iter()
        .filter(|p| p.branch == branch && p.at >= d.at)
        .filter(|p| p.replica.as_deref().is_some_and(|r| r != d.replica))
        .map(|p| p.at)
        .reduce(f64::min)
}

/// The shards a replica was on standby for at `at` (its last "announced
/// standby" line before then), with when it announced them.
fn standby_at(log: &str, at: f64) -> Option<(f64, Vec<u64>)> {
    log.lines()
        .filter(|l| l.contains("announced standby"))
        .filter_map(|line| {
            let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
            let time = v["timestamp"].as_str()?.parse::<k8s_openapi::jiff::Timestamp>().ok()?;
            let shards = v["shards"].as_str()?.split(',').filter_map(|s| s.parse().ok()).collect();
            Some((time.as_nanosecond() as f64 / 1e9, shards))
        })
        .take_while(|(time, _)| *time < at)
        .last()
}

/// What bounds a fault window.
pub struct Faults<'a> {
    pub disruptions: &'a [Disruption],
    /// Folder with each replica's log, `<name>.log`.
    pub logs: &'a Path,
    pub url: &'a str,
    pub targets: usize,
    pub shards: usize,
    /// The GitProvider's push interval.
    pub interval: Duration,
    /// How long a push still in flight at a fault may have run: the
    /// replicas' `--push-timeout`, at most the longest push seen.
    pub push_timeout: Duration,
}

/// Time allowed from a value's acceptance to the victim's commit of it.
const COMMIT_ALLOWANCE: Duration = Duration::from_secs(1);

/// One window per (kill or freeze, branch the victim held or was on
/// standby for then). Once a standby is announced the old owner stops
/// writing the shard, so from then on only the victim held its changes.
pub fn fault_windows(faults: &Faults<'_>, pushes: &[PushInfo]) -> Vec<FaultWindow> {
    let mut windows = Vec::new();
    for d in faults.disruptions.iter().filter(|d| matches!(d.kind.as_str(), "kill" | "freeze")) {
        let log = std::fs::read_to_string(faults.logs.join(format!("{}.log", d.replica))).unwrap_or_default();
        let held = shards_held_at(&log, d.at);
        let standby = standby_at(&log, d.at);
        for target in 0..faults.targets {
            let branch = branch_of(target);
            let shard = gitops_reverser::shard::hash::shard_of(
                &BranchKey::new(faults.url, &branch),
                faults.shards as u32,
            );
            let from = match held.get(&u64::from(shard)) {
                Some(&acquired) => {
                    let last_push = pushes
                        .iter()
                        .filter(|p| p.branch == branch && p.at > acquired && p.at < d.at)
                        .filter(|p| p.replica.as_deref() == Some(d.replica.as_str()))
                        .map(|p| p.at)
                        .reduce(f64::max);
                    let certain = last_push
                        .map_or(acquired, |at| at - (faults.push_timeout + COMMIT_ALLOWANCE).as_secs_f64());
                    (d.at - (faults.interval + faults.push_timeout + COMMIT_ALLOWANCE).as_secs_f64())
                        .min(certain)
                }
                None => match standby.as_ref().filter(|(_, shards)| shards.contains(&u64::from(shard))) {
                    Some((announced, _)) => announced - COMMIT_ALLOWANCE.as_secs_f64(),
                    None => continue,
                },
            };
            let to = first_push_by_another(pushes, &branch, d).unwrap_or(d.at);
            windows.push(FaultWindow {
                kind: d.kind.clone(),
                replica: d.replica.clone(),
                branch,
                fault: d.at,
                from,
                to,
                drain_timed_out: false,
            });
        }
    }
    windows
}

/// Where a planned handover could lose a value, reported apart to locate
/// a loss, not excused: the old owner writes a shard until the new owner's
/// standby workers receive its events (issue 18), so none may be missing.
///
/// What a branch worker logs when its drain runs out of time.
const DRAIN_TIMED_OUT: &str = "drain timed out: these changes were not pushed; the next owner's resync restores the final state, not these versions";

/// One window (`kind` "handover", `fault` its start) per (branch, handover):
/// from the old owner's "handing over" line for the branch (for a release
/// without one: its "leaving the shard membership" line, else the release)
/// less the push interval, the push timeout and 1 s, until the new owner's
/// first push on the branch after it acquired the shard (the first
/// "acquired shard" of that shard by any replica after the handover began).
pub fn handover_windows(faults: &Faults<'_>, pushes: &[PushInfo]) -> Vec<FaultWindow> {
    let mut logs: Vec<(String, String)> = std::fs::read_dir(faults.logs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".log")?.to_owned();
            Some((name, std::fs::read_to_string(e.path()).ok()?))
        })
        .collect();
    logs.sort();
    let lines = |log: &str, message: &str| -> Vec<(f64, Option<u64>, String)> {
        log.lines()
            .filter(|l| l.contains(message))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message)
            .filter_map(|v| {
                let time = v["timestamp"].as_str()?.parse::<k8s_openapi::jiff::Timestamp>().ok()?;
                let shard = v["shard"].as_u64().or_else(|| v["shard"].as_str()?.parse().ok());
                let branch = v["branch"].as_str().unwrap_or_default().to_owned();
                Some((time.as_nanosecond() as f64 / 1e9, shard, branch))
            })
            .collect()
    };
    let mut acquired: Vec<(f64, u64, String)> = Vec::new();
    // (old owner, shard, start, branch as logged `<url>#<branch>` or "").
    let mut starts: Vec<(String, u64, f64, String)> = Vec::new();
    for (name, log) in &logs {
        for (at, shard, _) in lines(log, "acquired shard") {
            acquired.extend(shard.map(|s| (at, s, name.clone())));
        }
        let handing = lines(log, "handing over: draining branch worker");
        for (at, shard, branch) in &handing {
            starts.extend(shard.map(|s| (name.clone(), s, *at, branch.clone())));
        }
        let leaving: Vec<f64> = lines(log, "leaving the shard membership: draining, then releasing")
            .into_iter()
            .map(|(at, _, _)| at)
            .collect();
        let released: Vec<(f64, u64)> =
            lines(log, "released shard").into_iter().filter_map(|(at, s, _)| Some((at, s?))).collect();
        for (i, &(at, shard)) in released.iter().enumerate() {
            let previous = released[..i].iter().rev().find(|(_, s)| *s == shard).map_or(f64::MIN, |r| r.0);
            if handing.iter().any(|(t, s, _)| *s == Some(shard) && *t > previous && *t <= at) {
                continue;
            }
            let began = leaving.iter().copied().filter(|&t| t > previous && t <= at).reduce(f64::max);
            starts.push((name.clone(), shard, began.unwrap_or(at), String::new()));
        }
    }
    acquired.sort_by(|a, b| a.0.total_cmp(&b.0));
    // (replica, time, branch) of every drain that ran out of time.
    let timed_out: Vec<(String, f64, String)> = logs
        .iter()
        .flat_map(|(name, log)| {
            lines(log, DRAIN_TIMED_OUT).into_iter().map(move |(at, _, branch)| (name.clone(), at, branch))
        })
        .collect();
    let margin = (faults.interval + faults.push_timeout + COMMIT_ALLOWANCE).as_secs_f64();
    let mut windows = Vec::new();
    for (replica, shard, at, logged) in starts {
        for target in 0..faults.targets {
            let branch = branch_of(target);
            let key = BranchKey::new(faults.url, &branch);
            let ours = u64::from(gitops_reverser::shard::hash::shard_of(&key, faults.shards as u32)) == shard;
            if !ours || !(logged.is_empty() || logged.ends_with(&format!("#{branch}"))) {
                continue;
            }
            if windows
                .iter()
                .any(|w: &FaultWindow| w.branch == branch && w.fault == at && w.replica == replica)
            {
                continue;
            }
            let next = acquired.iter().find(|(a, s, _)| *s == shard && *a >= at);
            let to = match next {
                Some((acq, _, owner)) => pushes
                    .iter()
                    .filter(|p| p.branch == branch && p.at >= *acq)
                    .filter(|p| p.replica.as_deref() == Some(owner.as_str()))
                    .map(|p| p.at)
                    .reduce(f64::min)
                    .or_else(|| {
                        pushes
                            .iter()
                            .filter(|p| p.branch == branch && p.at >= *acq)
                            .map(|p| p.at)
                            .reduce(f64::min)
                    })
                    .unwrap_or(*acq),
                None => at,
            };
            let drain_timed_out = timed_out.iter().any(|(name, t, b)| {
                *name == replica && *t >= at && *t <= to.max(at) && b.ends_with(&format!("#{branch}"))
            });
            windows.push(FaultWindow {
                kind: "handover".into(),
                replica: replica.clone(),
                branch,
                fault: at,
                from: at - margin,
                to,
                drain_timed_out,
            });
        }
    }
    windows.sort_by(|a, b| a.fault.total_cmp(&b.fault));
    windows
}

/// Looks up every change in `history` (branch → object → values in some
/// commit); `t0` is the load's start, for the examples.
pub fn check(
    changes: &[Change],
    targets: usize,
    history: &BTreeMap<String, BTreeMap<usize, BTreeSet<u64>>>,
    coalesced: f64,
    windows: &[FaultWindow],
    handovers: &[FaultWindow],
    t0: f64,
) -> Completeness {
    let mut result = Completeness {
        written: changes.len(),
        coalesced,
        fault_windows: windows.len(),
        handover_windows: handovers.len(),
        drain_timeout_windows: handovers.iter().filter(|h| h.drain_timed_out).count(),
        ..Completeness::default()
    };
    let mut missing: Vec<&Change> = Vec::new();
    for change in changes {
        let branch = branch_of(change.object % targets.max(1));
        let found =
            history.get(&branch).and_then(|h| h.get(&change.object)).is_some_and(|v| v.contains(&change.seq));
        if found {
            result.in_history += 1;
        } else {
            missing.push(change);
        }
    }
    missing.sort_by(|a, b| a.accepted.total_cmp(&b.accepted));
    result.missing = missing.len();
    let (mut outside, mut inside, mut in_handover) = (Vec::new(), Vec::new(), Vec::new());
    for change in missing {
        let branch = branch_of(change.object % targets.max(1));
        let holds = |w: &&FaultWindow| w.branch == branch && (w.from..=w.to).contains(&change.accepted);
        let fault = windows.iter().find(holds);
        let window = fault.or_else(|| handovers.iter().find(holds));
        let mut example =
            format!("{branch} o-{}=v{} at +{:.2}s", change.object, change.seq, change.accepted - t0);
        match window {
            Some(w) => {
                example.push_str(&format!(
                    " (in the window of the {} of {}, {:+.2}s from it)",
                    w.kind,
                    w.replica,
                    change.accepted - w.fault
                ));
                if fault.is_some() {
                    inside.push(example)
                } else {
                    result.missing_in_drain_timeouts += usize::from(w.drain_timed_out);
                    in_handover.push(example)
                }
            }
            None => outside.push(example),
        }
    }
    result.missing_in_fault_windows = inside.len();
    result.missing_in_handover_windows = in_handover.len();
    result.missing_examples = outside.into_iter().chain(inside).chain(in_handover).take(20).collect();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_coalesced_counter_by_branch() {
        let text = "# TYPE gitops_reverser_events_coalesced counter\n\
                    gitops_reverser_events_coalesced_total{repository=\"ssh://h/r.git\",branch=\"b0\"} 2\n\
                    gitops_reverser_events_coalesced_total{repository=\"ssh://h/s.git\",branch=\"b0\"} 1\n\
                    gitops_reverser_events_coalesced_created{repository=\"ssh://h/r.git\",branch=\"b0\"} 1.7e9\n\
                    gitops_reverser_events_coalesced_total{repository=\"ssh://h/r.git\",branch=\"b1\"} 0\n";
        let by_branch = coalesced_by_branch(text);
        assert_eq!(by_branch.get("b0"), Some(&3.0));
        assert_eq!(by_branch.get("b1"), Some(&0.0));
    }

    #[test]
    fn shards_held_follow_the_log_up_to_the_moment() {
        let log = "\
{\"timestamp\":\"2026-01-01T00:00:01Z\",\"level\":\"INFO\",\"message\":\"acquired shard\",\"shard\":3}
{\"timestamp\":\"2026-01-01T00:00:02Z\",\"level\":\"INFO\",\"message\":\"acquired shard\",\"shard\":5}
{\"timestamp\":\"2026-01-01T00:00:03Z\",\"level\":\"INFO\",\"message\":\"released shard\",\"shard\":3}
{\"timestamp\":\"2026-01-01T00:00:05Z\",\"level\":\"WARN\",\"message\":\"lost shard\",\"shard\":\"5\"}
";
        let t = |s: f64| 1_767_225_600.0 + s;
        assert_eq!(shards_held_at(log, t(1.5)), BTreeMap::from([(3, t(1.0))]));
        assert_eq!(shards_held_at(log, t(4.0)), BTreeMap::from([(5, t(2.0))]));
        assert_eq!(shards_held_at(log, t(6.0)), BTreeMap::new());
    }

    #[test]
    fn a_window_spans_the_victims_unpushed_time_until_another_replica_pushes() {
        let url = "ssh://127.0.0.1:1/r.git";
        let shard = gitops_reverser::shard::hash::shard_of(&BranchKey::new(url, "b0"), 32);
        let dir = std::env::temp_dir().join(format!("completeness-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Acquired at unix 90 (1970-01-01T00:01:30Z).
        let log = format!(
            "{{\"timestamp\":\"1970-01-01T00:01:30Z\",\"message\":\"acquired shard\",\"shard\":{shard}}}\n"
        );
        std::fs::write(dir.join("r0-1.log"), log).unwrap();
        let push = |at: f64, replica: &str| PushInfo {
            at,
            branch: "b0".into(),
            replica: Some(replica.into()),
            values: Vec::new(),
            commits: 1,
        };
        let kill = Disruption { at: 110.0, kind: "kill".into(), replica: "r0-1".into() };
        let faults = Faults {
            disruptions: std::slice::from_ref(&kill),
            logs: &dir,
            url,
            targets: 1,
            shards: 32,
            interval: Duration::from_secs(1),
            push_timeout: Duration::from_secs(2),
        };
        // Its last push landed at 100: from 100 - 2 - 1, until r1-2's first push.
        let pushes = [push(95.0, "r1-2"), push(100.0, "r0-1"), push(111.0, "r0-1"), push(112.0, "r1-2")];
        let windows = fault_windows(&faults, &pushes);
        assert_eq!(windows.len(), 1);
        assert_eq!((windows[0].from, windows[0].to), (97.0, 112.0));
        // A recent push: the fault less interval, push timeout and 1 s.
        let windows = fault_windows(&faults, &[push(109.5, "r0-1"), push(113.0, "r1-2")]);
        assert_eq!((windows[0].from, windows[0].to), (106.0, 113.0));
        // No push since it acquired the shard: from the acquisition.
        let windows = fault_windows(&faults, &[push(89.0, "r0-1")]);
        assert_eq!((windows[0].from, windows[0].to), (90.0, 110.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_values_are_counted_and_placed_in_fault_windows() {
        let changes = [
            Change { object: 0, seq: 10, accepted: 100.0 },
            Change { object: 1, seq: 11, accepted: 101.0 },
            Change { object: 0, seq: 12, accepted: 102.0 },
            Change { object: 1, seq: 13, accepted: 110.0 },
        ];
        let history = BTreeMap::from([
            ("b0".to_owned(), BTreeMap::from([(0, BTreeSet::from([12]))])),
            ("b1".to_owned(), BTreeMap::from([(1, BTreeSet::from([11]))])),
        ]);
        let window = FaultWindow {
            kind: "kill".into(),
            replica: "r0-1".into(),
            branch: "b1".into(),
            fault: 109.0,
            from: 107.0,
            to: 112.0,
            drain_timed_out: false,
        };
        let c = check(&changes, 2, &history, 1.0, &[window], &[], 100.0);
        assert_eq!((c.written, c.in_history, c.missing, c.missing_in_fault_windows), (4, 2, 2, 1));
        // Outside every window first.
        assert_eq!(c.missing_examples[0], "b0 o-0=v10 at +0.00s");
        assert!(
            c.missing_examples[1].starts_with("b1 o-1=v13 at +10.00s (in the window of the kill of r0-1")
        );
    }

    #[test]
    fn a_missing_value_in_a_handover_whose_drain_timed_out_is_a_declared_loss() {
        let changes =
            [Change { object: 1, seq: 13, accepted: 110.0 }, Change { object: 1, seq: 14, accepted: 130.0 }];
        let history = BTreeMap::new();
        let handover = |from: f64, to: f64, drain_timed_out| FaultWindow {
            kind: "handover".into(),
            replica: "r0-1".into(),
            branch: "b1".into(),
            fault: from + 2.0,
            from,
            to,
            drain_timed_out,
        };
        let handovers = [handover(105.0, 115.0, true), handover(125.0, 135.0, false)];
        let c = check(&changes, 2, &history, 0.0, &[], &handovers, 100.0);
        assert_eq!((c.missing, c.missing_in_handover_windows), (2, 2));
        assert_eq!((c.drain_timeout_windows, c.missing_in_drain_timeouts), (1, 1));
    }
}
