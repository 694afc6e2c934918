//! Per-change completeness of a fleet: every value the load driver wrote
//! to an object must appear in some commit of its branch's history, not
//! only the last one (the final-state check cannot see a lost change that a
//! later change of the same object overwrote, and every resync writes the
//! final state again).
//!
//! The only skips allowed are the ones the operator counted: each increment
//! of `gitops_reverser_events_coalesced_total` of a branch merged one change
//! into a pending change of the same file, so one value of that branch may
//! be in no commit. Faults that unavoidably lose a replica's unpushed
//! commits (SIGKILL, SIGSTOP) are given [`FaultWindow`]s; planned
//! handovers of a shard must lose nothing ([`HandoverWindow`]s only locate
//! a loss in the report).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::fleet::{Fleet, PUSH_INTERVAL};
use super::load::Record;
use super::process::{line_time_ns, log_events, shard_field};
use super::pushes::Push;
use super::{Coalesced, LeaseSettings, Replicas, SHARDS};

/// (repository index, branch) of a fleet.
pub type Branch = (usize, String);

/// A value the driver wrote that no commit of its branch holds.
#[derive(Debug, Clone)]
pub struct Missing {
    pub object: String,
    pub value: String,
    /// Unix ns when the API server had accepted it.
    pub at_ns: i128,
    pub branch: Branch,
    /// The shard of the branch.
    pub shard: u32,
    pub path: String,
}

/// Where a replica that was killed (SIGKILL) or frozen (SIGSTOP) may have
/// lost values of a branch it owned: the commits it had made but not pushed
/// are gone with it (no other replica can read its disk), and the new owner
/// resyncs the final state, not the steps in between. So values of that
/// branch written from a little before the fault until the new owner's
/// first push may be in no commit.
#[derive(Debug, Clone)]
pub struct FaultWindow {
    pub kind: &'static str,
    pub replica: String,
    pub branch: Branch,
    pub fault_ns: i128,
    pub from_ns: i128,
    pub to_ns: i128,
}

impl FaultWindow {
    pub fn contains(&self, missing: &Missing) -> bool {
        missing.branch == self.branch && (self.from_ns..=self.to_ns).contains(&missing.at_ns)
    }
}

/// How long before a fault a value may have been accepted and still be
/// lost with the victim, beyond [`PUSH_INTERVAL`]: a commit waits at most
/// the push interval for its push to start, but a push already in flight
/// (killed with the replica, or its answer lost) may have been started
/// earlier: up to the push timeout, but no push to the test server has
/// taken longer than [`LONGEST_PUSH`], so a window that long stays honest.
/// The event → commit step itself takes a moment on a busy 2-core machine
/// (1 s allowed).
pub fn fault_margin(settings: LeaseSettings) -> Duration {
    settings.push_timeout.min(LONGEST_PUSH) + COMMIT_ALLOWANCE
}

/// The longest push to soft-serve seen on the 2-core test machine (3–7 s
/// under the HA tests' load).
const LONGEST_PUSH: Duration = Duration::from_secs(8);

/// The windows of a fault of `replica` at `fault_ns` on the branches it
/// was on standby for then: once it announced a standby (its last
/// "announced standby" line before the fault), the old owner stopped
/// writing those shards, so values from that moment until another
/// replica's first push on the branch were held only by the victim.
pub fn standby_windows(
    fleet: &Fleet,
    replicas: &Replicas,
    kind: &'static str,
    replica: &str,
    fault_ns: i128,
) -> Vec<FaultWindow> {
    let logs = replicas.all_logs().remove(replica).unwrap_or_default();
    let Some((announced_ns, shards)) = log_events(&logs, "announced standby")
        .iter()
        .filter_map(|e| Some((line_time_ns(e)?, e["shards"].as_str()?.to_owned())))
        .filter(|(at, _)| *at < fault_ns)
        .max_by_key(|(at, _)| *at)
    else {
        return Vec::new();
    };
    let shards: Vec<u32> = shards.split(',').filter_map(|s| s.parse().ok()).collect();
    let pushes = fleet.pushes(announced_ns);
    fleet
        .branches()
        .into_iter()
        .filter(|(repo, branch)| shards.contains(&fleet.shard_of(*repo, branch, SHARDS)))
        .map(|(repo, branch)| {
            let name = fleet.repo_name(repo);
            let to_ns = pushes
                .iter()
                .filter(|p| p.repo == name && p.branch == branch && p.at_ns >= fault_ns)
                .filter(|p| p.replica.as_deref().is_some_and(|r| r != replica))
                .map(|p| p.at_ns)
                .min()
                .unwrap_or(fault_ns);
            FaultWindow {
                kind,
                replica: replica.to_owned(),
                branch: (repo, branch),
                fault_ns,
                from_ns: announced_ns - COMMIT_ALLOWANCE.as_nanos() as i128,
                to_ns,
            }
        })
        .collect()
}

/// Time allowed from a value's acceptance to the victim's commit of it.
const COMMIT_ALLOWANCE: Duration = Duration::from_secs(1);

/// The windows of a fault of `replica` at `fault_ns` on the `branches` it
/// owned then.
///
/// A window ends at the first push on the branch by another replica at or
/// after the fault (the new owner's first push, which carries its resync;
/// without one it ends at the fault). It starts at the earlier of
/// - the fault less [`PUSH_INTERVAL`] and [`fault_margin`];
/// - the last moment the victim had certainly pushed everything: its last
///   "pushed" line for the branch with `left: 0` (nothing taken in was
///   still unpushed) before the fault, after it last acquired the branch's
///   shard, less 1 s for an event to reach the worker — or that
///   acquisition if it never caught up since. When the git server is slow,
///   pushes carry only part of the backlog and commits stay unpushed far
///   longer than the interval.
pub fn fault_windows(
    fleet: &Fleet,
    replicas: &Replicas,
    kind: &'static str,
    replica: &str,
    fault_ns: i128,
    branches: &[Branch],
    settings: LeaseSettings,
) -> Vec<FaultWindow> {
    let nanos = |d: Duration| d.as_nanos() as i128;
    let pushes = fleet.pushes(fault_ns - nanos(Duration::from_secs(600)));
    let logs = replicas.all_logs().remove(replica).unwrap_or_default();
    let acquired = log_events(&logs, "acquired shard");
    branches
        .iter()
        .map(|(repo, branch)| {
            let name = fleet.repo_name(*repo);
            let on_branch = |p: &&Push| p.repo == name && &p.branch == branch;
            let to_ns = pushes
                .iter()
                .filter(on_branch)
                .filter(|p| p.at_ns >= fault_ns && p.replica.as_deref().is_some_and(|r| r != replica))
                .map(|p| p.at_ns)
                .min()
                .unwrap_or(fault_ns);
            let shard = u64::from(fleet.shard_of(*repo, branch, SHARDS));
            let acquired_ns = acquired
                .iter()
                .filter(|e| shard_field(e) == Some(shard))
                .filter_map(line_time_ns)
                .filter(|&at| at < fault_ns)
                .max();
            let caught_up = caught_up(&logs, &name, branch)
                .into_iter()
                .filter(|&at| at < fault_ns && acquired_ns.is_none_or(|a| at > a))
                .max();
            let certain = match (caught_up, acquired_ns) {
                (Some(at), _) => at - nanos(COMMIT_ALLOWANCE),
                (None, Some(at)) => at,
                (None, None) => fault_ns,
            };
            let from_ns = (fault_ns - nanos(PUSH_INTERVAL + fault_margin(settings))).min(certain);
            FaultWindow {
                kind,
                replica: replica.to_owned(),
                branch: (*repo, branch.clone()),
                fault_ns,
                from_ns,
                to_ns,
            }
        })
        .collect()
}

/// Where a planned handover could lose a value, for the report only: no
/// longer a tolerance. Before the standby handover (issue 18), when a
/// replica handed a shard over (rolling restart, scale up or down, rebalancing after an API server
/// restart, the hand-back to a restarted or resumed replica), the old owner
/// logs "handing over: draining branch worker", stops routing that
/// branch's events, pushes and releases the shard seconds later; only then
/// does the new owner acquire it and resync the current state. An object
/// changed twice inside that span lost the earlier value. Values missing
/// inside them are still counted apart (`missing_in_handover_windows`), so
/// a regression shows where it happened; `assert_explained` excuses none.
///
/// One window per (branch, handover): from the old owner's "handing over"
/// line for the branch (a replica leaving on SIGTERM logs none: its
/// "leaving the shard membership" line, else its "released shard") less
/// [`PUSH_INTERVAL`] and [`fault_margin`] (as a fault window), until the new owner's first push on the branch after it
/// acquired the shard (the first "acquired shard" of that shard by any
/// replica after the handover began).
#[derive(Debug, Clone)]
pub struct HandoverWindow {
    /// The old owner.
    pub replica: String,
    /// The replica that acquired the shard next, if any did.
    pub new_owner: Option<String>,
    pub branch: Branch,
    pub shard: u32,
    /// When the old owner began handing the branch over.
    pub handover_ns: i128,
    /// The old owner logged that its drain of the branch ran out of time
    /// with changes unpushed: a loss it declared (a git server too slow for
    /// the shutdown timeout), excused as a fault is.
    pub drain_timed_out: bool,
    /// The shard came back to the old owner while it was still draining the
    /// branch (bounded-load placement moves a shard away and back when a
    /// member leaves and rejoins): KNOWN GAP (issue 18), the new standby was
    /// stopped and the old owner waits for its drain before it starts the
    /// branch again, so nobody takes in changes meanwhile.
    pub reversed: bool,
    pub from_ns: i128,
    pub to_ns: i128,
}

impl HandoverWindow {
    pub fn contains(&self, missing: &Missing) -> bool {
        missing.branch == self.branch && (self.from_ns..=self.to_ns).contains(&missing.at_ns)
    }
}

/// Every planned handover of a branch in the replicas' logs (see
/// [`HandoverWindow`]), for the report.
pub fn handover_windows(fleet: &Fleet, replicas: &Replicas, settings: LeaseSettings) -> Vec<HandoverWindow> {
    let nanos = |d: Duration| d.as_nanos() as i128;
    let pushes = fleet.pushes(0);
    let logs = replicas.all_logs();
    let mut acquisitions: Vec<(i128, u64, String)> = Vec::new();
    for (name, log) in &logs {
        for event in log_events(log, "acquired shard") {
            if let (Some(at), Some(shard)) = (line_time_ns(&event), shard_field(&event)) {
                acquisitions.push((at, shard, name.clone()));
            }
        }
    }
    acquisitions.sort();
    // Where each handover began: (old owner, shard, unix ns, the branch as
    // logged, `<url>#<branch>`, or "" for every branch of the shard).
    let mut starts: Vec<(String, u64, i128, String)> = Vec::new();
    for (name, log) in &logs {
        let handing: Vec<(i128, u64)> = log_events(log, HANDING_OVER)
            .iter()
            .filter_map(|e| Some((line_time_ns(e)?, shard_field(e)?)))
            .collect();
        for event in log_events(log, HANDING_OVER) {
            let (Some(at), Some(shard)) = (line_time_ns(&event), shard_field(&event)) else { continue };
            let logged = event["branch"].as_str().unwrap_or_default().to_owned();
            starts.push((name.clone(), shard, at, logged));
        }
        // A replica leaving (SIGTERM: rolling restart, scale down) logs no
        // per-branch "handing over" line: it stops its branch workers
        // ("leaving the shard membership: draining, then releasing") and
        // releases its shards. A release with no "handing over" line of that
        // shard since the replica's previous release of it began there.
        let leaving: Vec<i128> = log_events(log, LEAVING).iter().filter_map(line_time_ns).collect();
        let mut released: Vec<(i128, u64)> = log_events(log, "released shard")
            .iter()
            .filter_map(|e| Some((line_time_ns(e)?, shard_field(e)?)))
            .collect();
        released.sort();
        for (i, &(at, shard)) in released.iter().enumerate() {
            let previous =
                released[..i].iter().rev().find(|(_, s)| *s == shard).map_or(i128::MIN, |(t, _)| *t);
            if handing.iter().any(|&(t, s)| s == shard && t > previous && t <= at) {
                continue;
            }
            let began = leaving.iter().copied().filter(|&t| t > previous && t <= at).max().unwrap_or(at);
            starts.push((name.clone(), shard, began, String::new()));
        }
    }
    let branches = fleet.branches();
    let mut windows = Vec::new();
    for (name, shard, at, logged) in starts {
        for (repo, branch) in &branches {
            let ours = u64::from(fleet.shard_of(*repo, branch, SHARDS)) == shard;
            let named = logged.is_empty()
                || (logged.ends_with(&format!("#{branch}")) && logged.contains(&fleet.repo_name(*repo)));
            if !(ours && named) {
                continue;
            }
            let repo_name = fleet.repo_name(*repo);
            let on_branch = |p: &&Push| p.repo == repo_name && &p.branch == branch;
            let next = acquisitions.iter().find(|(a, s, _)| *s == shard && *a >= at);
            let to_ns = match next {
                Some((acquired, _, owner)) => pushes
                    .iter()
                    .filter(on_branch)
                    .filter(|p| p.at_ns >= *acquired && p.replica.as_deref() == Some(owner.as_str()))
                    .map(|p| p.at_ns)
                    .min()
                    .or_else(|| {
                        pushes.iter().filter(on_branch).map(|p| p.at_ns).filter(|&p| p >= *acquired).min()
                    })
                    .unwrap_or(*acquired),
                None => at,
            };
            // The old owner's drain may not push its whole backlog before the
            // shutdown timeout (a slow git server): as for a fault, what it had
            // not certainly pushed is at risk.
            let own = logs.get(&name).map(String::as_str).unwrap_or_default();
            let acquired_ns = acquisitions
                .iter()
                .filter(|(a, s, owner)| *s == shard && owner == &name && *a < at)
                .map(|(a, _, _)| *a)
                .max();
            let certain = caught_up(own, &repo_name, branch)
                .into_iter()
                .filter(|&t| t < at && acquired_ns.is_none_or(|a| t > a))
                .max()
                .map(|t| t - nanos(COMMIT_ALLOWANCE))
                .or(acquired_ns)
                .unwrap_or(at);
            let drain_timed_out = log_events(own, DRAIN_TIMED_OUT).iter().any(|e| {
                let logged = e["branch"].as_str().unwrap_or_default();
                let on_branch = logged.ends_with(&format!("#{branch}")) && logged.contains(&repo_name);
                on_branch && line_time_ns(e).is_some_and(|t| t >= at && next.is_none_or(|(n, _, _)| t <= *n))
            });
            let reversed = log_events(own, STARTING_LATER).iter().any(|e| {
                let logged = e["branch"].as_str().unwrap_or_default();
                let on_branch = logged.ends_with(&format!("#{branch}")) && logged.contains(&repo_name);
                on_branch && line_time_ns(e).is_some_and(|t| t >= at && next.is_none_or(|(n, _, _)| t <= *n))
            });
            windows.push(HandoverWindow {
                replica: name.clone(),
                new_owner: next.map(|(_, _, owner)| owner.clone()),
                branch: (*repo, branch.clone()),
                shard: shard as u32,
                handover_ns: at,
                drain_timed_out,
                reversed,
                from_ns: (at - nanos(PUSH_INTERVAL + fault_margin(settings))).min(certain),
                to_ns,
            });
        }
    }
    windows.sort_by_key(|w| w.handover_ns);
    windows
}

const HANDING_OVER: &str = "handing over: draining branch worker";

/// When a replica's worker of `branch` in repository `repo` had pushed
/// everything it had taken in: its "pushed" log lines with `left: 0`.
fn caught_up(logs: &str, repo: &str, branch: &str) -> Vec<i128> {
    log_events(logs, "pushed")
        .iter()
        .filter(|e| {
            let logged = e["branch"].as_str().unwrap_or_default();
            logged.ends_with(&format!("#{branch}")) && logged.contains(repo)
        })
        .filter(|e| e["left"].as_u64() == Some(0) || e["left"].as_str() == Some("0"))
        .filter_map(line_time_ns)
        .collect()
}
const LEAVING: &str = "leaving the shard membership: draining, then releasing";
const DRAIN_TIMED_OUT: &str = "drain timed out: these changes were not pushed; the next owner's resync restores the final state, not these versions";
const STARTING_LATER: &str = "the branch's previous worker is still pushing; starting it later";

/// The written values against the branches' full history.
#[derive(Debug, Clone)]
pub struct Completeness {
    pub written: usize,
    pub found: usize,
    /// Commits in the history of every branch.
    pub commits: usize,
    pub missing: Vec<Missing>,
    /// `events_coalesced_total` per branch, summed over every replica.
    pub coalesced: BTreeMap<Branch, u64>,
    /// Coalesced changes under a repository label of no fleet repository.
    pub coalesced_elsewhere: u64,
    /// Coalesced changes per replica incarnation (`<name>.<n>`).
    pub coalesced_by_incarnation: BTreeMap<String, u64>,
    /// The first write, for relative times.
    pub first_ns: i128,
}

impl Completeness {
    /// Reads every branch's full history now and looks up every value in
    /// `record`; `coalesced` is [`super::Replicas::coalesced`].
    pub fn measure(fleet: &Fleet, record: &Record, coalesced: &Coalesced) -> Self {
        let history = fleet.history();
        let mut result = Self {
            written: 0,
            found: 0,
            commits: history.values().map(|h| h.commits).sum(),
            missing: Vec::new(),
            coalesced: BTreeMap::new(),
            coalesced_elsewhere: 0,
            coalesced_by_incarnation: coalesced
                .by_incarnation
                .iter()
                .map(|(name, value)| (name.clone(), value.round() as u64))
                .collect(),
            first_ns: record.writes.values().flatten().map(|w| w.at_ns).min().unwrap_or(0),
        };
        for (object, writes) in &record.writes {
            for write in writes {
                let target = fleet.target(&write.target);
                let branch = (target.repo, target.branch.clone());
                let path = fleet.object_path(object, &write.target);
                result.written += 1;
                if history.get(&branch).is_some_and(|h| h.contains(&path, &write.value)) {
                    result.found += 1;
                } else {
                    result.missing.push(Missing {
                        object: object.clone(),
                        value: write.value.clone(),
                        at_ns: write.at_ns,
                        shard: fleet.shard_of(branch.0, &branch.1, SHARDS),
                        branch,
                        path,
                    });
                }
            }
        }
        result.missing.sort_by_key(|m| m.at_ns);
        for ((repository, branch), value) in &coalesced.by_branch {
            let name = repository.rsplit('/').next().unwrap_or_default().trim_end_matches(".git");
            let count = value.round() as u64;
            match (0..fleet.repos.len()).find(|&r| fleet.repo_name(r) == name) {
                Some(repo) => *result.coalesced.entry((repo, branch.clone())).or_insert(0) += count,
                None => result.coalesced_elsewhere += count,
            }
        }
        result
    }

    pub fn coalesced_total(&self) -> u64 {
        self.coalesced.values().sum::<u64>() + self.coalesced_elsewhere
    }

    /// The figures and every missing value (which fault or handover window
    /// holds it, if any). A value in both counts as in a fault window.
    pub fn report(&self, test: &str, windows: &[FaultWindow], handovers: &[HandoverWindow]) -> String {
        let in_windows = self.missing.iter().filter(|m| windows.iter().any(|w| w.contains(m))).count();
        let in_handovers = self
            .missing
            .iter()
            .filter(|m| !windows.iter().any(|w| w.contains(m)) && handovers.iter().any(|h| h.contains(m)))
            .count();
        let timed_out = handovers.iter().filter(|h| h.drain_timed_out).count();
        let reversed = handovers.iter().filter(|h| h.reversed).count();
        let mut text = format!(
            "{test}: completeness: {} values written, {} found in the history of the branches ({} commits), \
             {} missing, {} coalesced (events_coalesced_total over every replica: {:?}); {} fault windows, \
             missing_in_fault_windows {in_windows}; {} handover windows (no tolerance), \
             missing_in_handover_windows {in_handovers} ({timed_out} windows whose drain timed out, {reversed} reversed); \
             {} missing outside every window",
            self.written,
            self.found,
            self.commits,
            self.missing.len(),
            self.coalesced_total(),
            self.coalesced_by_incarnation,
            windows.len(),
            handovers.len(),
            self.missing.len() - in_windows - in_handovers,
        );
        for m in &self.missing {
            let at = (m.at_ns - self.first_ns) as f64 / 1e9;
            let (repo, branch) = &m.branch;
            let _ = write!(
                text,
                "\n  missing {} = {:?} on repo {repo} branch {branch} ({}), accepted at {} ({at:.2}s into the load); \
                 the branch coalesced {}",
                m.object,
                m.value,
                m.path,
                utc(m.at_ns),
                self.coalesced.get(&m.branch).copied().unwrap_or(0)
            );
            for w in windows.iter().filter(|w| w.contains(m)) {
                let _ = write!(
                    text,
                    "; in the window of the {} of {} ({:+.2}s from the fault; the window spans {:+.2}s to {:+.2}s)",
                    w.kind,
                    w.replica,
                    (m.at_ns - w.fault_ns) as f64 / 1e9,
                    (w.from_ns - w.fault_ns) as f64 / 1e9,
                    (w.to_ns - w.fault_ns) as f64 / 1e9
                );
            }
            for h in handovers.iter().filter(|h| h.contains(m)) {
                let _ = write!(
                    text,
                    "; in the handover window of shard {} from {} to {}{} ({:+.2}s from the handover; \
                     the window spans {:+.2}s to {:+.2}s)",
                    h.shard,
                    h.replica,
                    h.new_owner.as_deref().unwrap_or("nobody"),
                    match (h.drain_timed_out, h.reversed) {
                        (true, _) => ", whose drain timed out (a declared loss)",
                        (_, true) => ", reversed while draining (known gap)",
                        _ => "",
                    },
                    (m.at_ns - h.handover_ns) as f64 / 1e9,
                    (h.from_ns - h.handover_ns) as f64 / 1e9,
                    (h.to_ns - h.handover_ns) as f64 / 1e9
                );
            }
        }
        text
    }

    /// Whether `m` is outside every fault and handover window.
    fn outside(m: &Missing, windows: &[FaultWindow], handovers: &[HandoverWindow]) -> bool {
        !windows.iter().any(|w| w.contains(m)) && !handovers.iter().any(|h| h.contains(m))
    }

    /// Per branch: the missing values outside every fault and handover
    /// window, when more than the branch coalesced (empty: every missing
    /// value explained).
    pub fn unexplained(
        &self,
        windows: &[FaultWindow],
        handovers: &[HandoverWindow],
    ) -> Vec<(Branch, Vec<&Missing>, u64)> {
        let mut outside: BTreeMap<&Branch, Vec<&Missing>> = BTreeMap::new();
        for m in self.missing.iter().filter(|m| Self::outside(m, windows, handovers)) {
            outside.entry(&m.branch).or_default().push(m);
        }
        outside
            .into_iter()
            .filter_map(|(branch, missing)| {
                let coalesced = self.coalesced.get(branch).copied().unwrap_or(0);
                (missing.len() as u64 > coalesced).then(|| (branch.clone(), missing, coalesced))
            })
            .collect()
    }

    /// For each missing value outside `windows` and `handovers`: what happened to its
    /// branch's shard from 15 s before to 15 s after it was accepted, by
    /// replica, from their logs (acquired, released, lost, handing over).
    pub fn shard_events(
        &self,
        replicas: &Replicas,
        windows: &[FaultWindow],
        handovers: &[HandoverWindow],
    ) -> String {
        const MESSAGES: [&str; 4] =
            ["acquired shard", "released shard", "lost shard", "handing over: draining branch worker"];
        let mut events: Vec<(i128, u64, String, &str)> = Vec::new();
        for (name, logs) in replicas.all_logs() {
            for message in MESSAGES {
                for event in log_events(&logs, message) {
                    if let (Some(at), Some(shard)) = (line_time_ns(&event), shard_field(&event)) {
                        events.push((at, shard, name.clone(), message));
                    }
                }
            }
        }
        for (name, logs) in replicas.all_logs() {
            for event in log_events(&logs, LEAVING) {
                if let Some(at) = line_time_ns(&event) {
                    events.push((at, u64::MAX, name.clone(), LEAVING));
                }
            }
        }
        events.sort();
        let span = 15_000_000_000i128;
        let mut text = String::new();
        for m in self.missing.iter().filter(|m| Self::outside(m, windows, handovers)) {
            let _ = write!(
                text,
                "\n  {}={:?} (repo {} {}, shard {}):",
                m.object, m.value, m.branch.0, m.branch.1, m.shard
            );
            for (at, _, replica, message) in events.iter().filter(|(at, shard, _, _)| {
                (*shard == u64::from(m.shard) || *shard == u64::MAX) && (at - m.at_ns).abs() <= span
            }) {
                let _ = write!(text, " {:+.2}s {replica} {message};", (at - m.at_ns) as f64 / 1e9);
            }
        }
        text
    }

    /// Panics unless, on every branch, the missing values outside the fault
    /// `windows` are at most the changes that branch coalesced (so also in
    /// total: missing outside windows ≤ coalesced). Planned handovers lose
    /// nothing since the standby handover: `handovers` only locate a loss
    /// in the report and excuse none, except where the old owner declared
    /// the loss ("drain timed out" on that branch: a git server too slow
    /// to take its backlog within the shutdown timeout, which is a fault
    /// like a kill), where the handover was reversed while draining (a
    /// known gap, see [`HandoverWindow::reversed`]).
    /// The message names each unexplained value and what its shard went
    /// through around it.
    pub fn assert_explained(
        &self,
        test: &str,
        windows: &[FaultWindow],
        handovers: &[HandoverWindow],
        replicas: &Replicas,
    ) {
        let declared: Vec<HandoverWindow> =
            handovers.iter().filter(|h| h.drain_timed_out || h.reversed).cloned().collect();
        self.assert_outside(test, windows, handovers, &declared, replicas);
    }

    fn assert_outside(
        &self,
        test: &str,
        windows: &[FaultWindow],
        handovers: &[HandoverWindow],
        excused: &[HandoverWindow],
        replicas: &Replicas,
    ) {
        let unexplained = self.unexplained(windows, excused);
        let lines: Vec<String> = unexplained
            .iter()
            .map(|((repo, branch), missing, coalesced)| {
                let values: Vec<String> =
                    missing.iter().map(|m| format!("{}={:?}", m.object, m.value)).collect();
                format!(
                    "repo {repo} branch {branch}: {} missing outside fault windows, {coalesced} coalesced: {}",
                    missing.len(),
                    values.join(", ")
                )
            })
            .collect();
        assert!(
            lines.is_empty(),
            "{test}: values the load driver wrote are in no commit, beyond what the operator coalesced:\n{}\n\
             their shards around them (seconds from the value's acceptance):{}\n{}",
            lines.join("\n"),
            self.shard_events(replicas, windows, excused),
            self.report(test, windows, handovers)
        );
    }
}

/// Unix ns as UTC (RFC 3339), as the replicas' JSON logs write time.
fn utc(ns: i128) -> String {
    k8s_openapi::jiff::Timestamp::from_nanosecond(ns)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ns.to_string())
}
