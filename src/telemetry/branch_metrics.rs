//! Metrics of the branch workers, labelled by repository and branch.
//!
//! A worker binds its labels once ([`BranchMetrics`]) and updates shared
//! atomics from then on; its gauges are removed when it stops, so a branch
//! no GitTarget uses any more leaves no stale queue depth behind.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::{Registry, Unit};

use super::metrics::{Latency, LatencyFamily, Seconds, TraceLabel};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BranchLabels {
    /// The repository URL without userinfo.
    pub repository: String,
    pub branch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitLabels {
    pub repository: String,
    pub branch: String,
    /// `committed` or `failed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    pub repository: String,
    pub branch: String,
    /// `pushed`, `stale` (the branch moved; replayed), `failed`, or
    /// `fenced` (held back: the shard Lease was not held long enough).
    pub result: &'static str,
    /// A condition reason for failures (`AuthenticationFailed`, ...), else `""`.
    pub reason: String,
}

fn commit_buckets() -> Latency {
    HistogramWithExemplars::new(exponential_buckets(0.0005, 2.0, 16))
}

fn push_buckets() -> Latency {
    HistogramWithExemplars::new(exponential_buckets(0.01, 2.0, 14))
}

fn lag_buckets() -> Latency {
    HistogramWithExemplars::new(exponential_buckets(0.05, 2.0, 15))
}

/// Finer at the low end than the push lag: a commit follows its event by
/// milliseconds when the worker keeps up.
fn commit_lag_buckets() -> Latency {
    HistogramWithExemplars::new(exponential_buckets(0.005, 2.0, 18))
}

/// The families every worker's handles come from.
pub(super) struct BranchFamilies {
    queue_depth: Family<BranchLabels, Gauge>,
    queue_oldest_age: Family<BranchLabels, Seconds>,
    coalesced: Family<BranchLabels, Counter>,
    drift: Family<BranchLabels, Counter>,
    commit_duration: LatencyFamily<BranchLabels>,
    commits: Family<CommitLabels, Counter>,
    push_duration: LatencyFamily<BranchLabels>,
    pushes: Family<PushLabels, Counter>,
    lag: LatencyFamily<BranchLabels>,
    commit_lag: LatencyFamily<BranchLabels>,
}

impl BranchFamilies {
    pub(super) fn new() -> Self {
        Self {
            queue_depth: Family::default(),
            queue_oldest_age: Family::default(),
            coalesced: Family::default(),
            drift: Family::default(),
            commit_duration: Family::new_with_constructor(commit_buckets),
            commits: Family::default(),
            push_duration: Family::new_with_constructor(push_buckets),
            pushes: Family::default(),
            lag: Family::new_with_constructor(lag_buckets),
            commit_lag: Family::new_with_constructor(commit_lag_buckets),
        }
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "queue_depth",
            "Changes waiting in a branch worker's queue",
            self.queue_depth.clone(),
        );
        registry.register_with_unit(
            "queue_oldest_age",
            "Age of the oldest change waiting in a branch worker's queue (0 when empty)",
            Unit::Seconds,
            self.queue_oldest_age.clone(),
        );
        registry.register(
            "events_coalesced",
            "Changes merged into a pending change of the same file (the latest state wins)",
            self.coalesced.clone(),
        );
        registry.register(
            "drift_repaired_files",
            "Files on the remote branch that differed from the cluster (hand edits, lost changes) and were repaired",
            self.drift.clone(),
        );
        registry.register_with_unit(
            "commit_duration",
            "Time to write one commit into the local repository",
            Unit::Seconds,
            self.commit_duration.clone(),
        );
        registry.register("commits", "Commits written, by result", self.commits.clone());
        registry.register_with_unit(
            "push_duration",
            "Time of one push attempt (git push --force-with-lease)",
            Unit::Seconds,
            self.push_duration.clone(),
        );
        registry.register("pushes", "Push attempts, by result and failure reason", self.pushes.clone());
        registry.register_with_unit(
            "event_to_push_lag",
            "Time from a watch event to the push that carried its commit",
            Unit::Seconds,
            self.lag.clone(),
        );
        registry.register_with_unit(
            "event_to_commit_lag",
            "Time from a watch event to the local commit that carries it",
            Unit::Seconds,
            self.commit_lag.clone(),
        );
    }

    pub(super) fn bind(&self, repository: &str, branch: &str) -> BranchMetrics {
        let labels = BranchLabels { repository: repository.to_owned(), branch: branch.to_owned() };
        let commits = |result| CommitLabels {
            repository: labels.repository.clone(),
            branch: labels.branch.clone(),
            result,
        };
        BranchMetrics {
            queue_depth: self.queue_depth.get_or_create_owned(&labels),
            queue_oldest_age: self.queue_oldest_age.get_or_create_owned(&labels),
            coalesced: self.coalesced.get_or_create_owned(&labels),
            drift: self.drift.get_or_create_owned(&labels),
            commit_duration: self.commit_duration.get_or_create_owned(&labels),
            committed: self.commits.get_or_create_owned(&commits("committed")),
            commit_failed: self.commits.get_or_create_owned(&commits("failed")),
            push_duration: self.push_duration.get_or_create_owned(&labels),
            lag: self.lag.get_or_create_owned(&labels),
            commit_lag: self.commit_lag.get_or_create_owned(&labels),
            pushes: self.pushes.clone(),
            gauges: (self.queue_depth.clone(), self.queue_oldest_age.clone()),
            labels,
        }
    }
}

/// One branch worker's handles.
pub struct BranchMetrics {
    labels: BranchLabels,
    queue_depth: Gauge,
    queue_oldest_age: Seconds,
    coalesced: Counter,
    drift: Counter,
    commit_duration: Latency,
    committed: Counter,
    commit_failed: Counter,
    push_duration: Latency,
    lag: Latency,
    commit_lag: Latency,
    pushes: Family<PushLabels, Counter>,
    gauges: (Family<BranchLabels, Gauge>, Family<BranchLabels, Seconds>),
}

fn exemplar(trace_id: Option<String>) -> Option<TraceLabel> {
    trace_id.map(|trace_id| TraceLabel { trace_id })
}

impl BranchMetrics {
    pub fn queue(&self, depth: usize, oldest_age: Duration) {
        self.queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.queue_oldest_age.set(oldest_age.as_secs_f64());
    }

    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    /// Files a comparison with the remote found wrong and repaired.
    pub fn drift_repaired(&self, files: usize) {
        self.drift.inc_by(files as u64);
    }

    pub fn commit(&self, took: Duration, ok: bool, trace_id: Option<String>) {
        if ok {
            self.commit_duration.observe(took.as_secs_f64(), exemplar(trace_id), None);
            self.committed.inc();
        } else {
            self.commit_failed.inc();
        }
    }

    /// One push attempt; `reason` names a failure. A `fenced` attempt
    /// never ran git, so it has no duration.
    pub fn push(&self, took: Duration, result: &'static str, reason: &str, trace_id: Option<String>) {
        if result != "fenced" {
            self.push_duration.observe(took.as_secs_f64(), exemplar(trace_id), None);
        }
        let labels = PushLabels {
            repository: self.labels.repository.clone(),
            branch: self.labels.branch.clone(),
            result,
            reason: reason.to_owned(),
        };
        self.pushes.get_or_create(&labels).inc();
    }

    /// A commit was written `lag` after the oldest watch event it carries.
    pub fn committed_change(&self, lag: Duration, trace_id: Option<String>) {
        self.commit_lag.observe(lag.as_secs_f64(), exemplar(trace_id), None);
    }

    /// A change reached the remote `lag` after its watch event.
    pub fn pushed_change(&self, lag: Duration, trace_id: Option<String>) {
        self.lag.observe(lag.as_secs_f64(), exemplar(trace_id), None);
    }
}

impl Drop for BranchMetrics {
    fn drop(&mut self) {
        self.gauges.0.remove(&self.labels);
        self.gauges.1.remove(&self.labels);
    }
}
