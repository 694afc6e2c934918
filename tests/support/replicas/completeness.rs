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
//! commits (SIGKILL, SIGSTOP) are given [`FaultWindow`]s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::fleet::{Fleet, PUSH_INTERVAL};
use super::load::Record;
use super::pushes::Push;
use super::{Coalesced, LeaseSettings};

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
/// (killed with the replica, or its answer lost) may have been started up
/// to the push timeout earlier, and the event → commit step itself takes a
/// moment on a busy 2-core machine (1 s allowed).
pub fn fault_margin(settings: LeaseSettings) -> Duration {
    settings.push_timeout + Duration::from_secs(1)
}

/// The windows of a fault of `replica` at `fault_ns` on the `branches` it
/// owned then: from the fault less [`PUSH_INTERVAL`] and `margin`, to the
/// first push on that branch by another replica at or after the fault
/// (`pushes` must be attributed; without such a push the window ends at
/// the fault).
pub fn fault_windows(
    fleet: &Fleet,
    kind: &'static str,
    replica: &str,
    fault_ns: i128,
    branches: &[Branch],
    margin: Duration,
    pushes: &[Push],
) -> Vec<FaultWindow> {
    let before = (PUSH_INTERVAL + margin).as_nanos() as i128;
    branches
        .iter()
        .map(|(repo, branch)| {
            let name = fleet.repo_name(*repo);
            let to_ns = pushes
                .iter()
                .filter(|p| p.repo == name && &p.branch == branch && p.at_ns >= fault_ns)
                .filter(|p| p.replica.as_deref().is_some_and(|r| r != replica))
                .map(|p| p.at_ns)
                .min()
                .unwrap_or(fault_ns);
            FaultWindow {
                kind,
                replica: replica.to_owned(),
                branch: (*repo, branch.clone()),
                fault_ns,
                from_ns: fault_ns - before,
                to_ns,
            }
        })
        .collect()
}

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

    /// The figures and every missing value (which fault window holds it, if any).
    pub fn report(&self, test: &str, windows: &[FaultWindow]) -> String {
        let in_windows = self.missing.iter().filter(|m| windows.iter().any(|w| w.contains(m))).count();
        let mut text = format!(
            "{test}: completeness: {} values written, {} found in the history of the branches ({} commits), \
             {} missing, {} coalesced (events_coalesced_total over every replica: {:?}); {} fault windows, \
             {in_windows} of the missing values in them",
            self.written,
            self.found,
            self.commits,
            self.missing.len(),
            self.coalesced_total(),
            self.coalesced_by_incarnation,
            windows.len(),
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
                    "; in the window of the {} of {} ({:+.2}s from the fault, which ends {:.2}s after it)",
                    w.kind,
                    w.replica,
                    (m.at_ns - w.fault_ns) as f64 / 1e9,
                    (w.to_ns - w.fault_ns) as f64 / 1e9
                );
            }
        }
        text
    }

    /// Per branch: the missing values outside every fault window, when
    /// more than the branch coalesced (empty: every missing value explained).
    pub fn unexplained(&self, windows: &[FaultWindow]) -> Vec<(Branch, Vec<&Missing>, u64)> {
        let mut outside: BTreeMap<&Branch, Vec<&Missing>> = BTreeMap::new();
        for m in self.missing.iter().filter(|m| !windows.iter().any(|w| w.contains(m))) {
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

    /// Panics unless, on every branch, the missing values outside
    /// `windows` are at most the changes that branch coalesced (so also in
    /// total: missing outside windows ≤ coalesced).
    pub fn assert_explained(&self, test: &str, windows: &[FaultWindow]) {
        let unexplained = self.unexplained(windows);
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
            "{test}: values the load driver wrote are in no commit, beyond what the operator coalesced:\n{}\n{}",
            lines.join("\n"),
            self.report(test, windows)
        );
    }
}

/// Unix ns as UTC (RFC 3339), as the replicas' JSON logs write time.
fn utc(ns: i128) -> String {
    k8s_openapi::jiff::Timestamp::from_nanosecond(ns)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ns.to_string())
}
