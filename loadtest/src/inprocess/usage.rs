//! What the run cost and did, read from inside: the workers' counters (from
//! the operator's own metrics registry) and this process's CPU and memory
//! (from /proc).

use gitops_reverser::telemetry::Metrics;

use crate::exposition::{labels, sample};

/// Sums of the branch workers' metrics over every branch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub committed: f64,
    pub commit_failed: f64,
    pub commit_seconds: f64,
    /// Commits that reached the remote (one `event_to_push_lag` sample each).
    pub pushed_commits: f64,
    pub pushes: f64,
    pub push_attempts: f64,
    pub push_seconds: f64,
    pub coalesced: f64,
}

/// Sum of the samples of `name` that carry every label of `filter`
/// (`key="value",…`; empty: all of them).
fn sum(text: &str, name: &str, filter: &str) -> f64 {
    let filter = format!("{filter}}}");
    let Ok((wanted, _)) = labels(&filter) else { return 0.0 };
    text.lines()
        .filter_map(|line| sample(line).ok().flatten())
        .filter(|(n, found, _)| *n == name && wanted.iter().all(|w| found.contains(w)))
        .map(|(_, _, value)| value)
        .sum()
}

impl Counters {
    pub fn read(metrics: &Metrics) -> Self {
        let text = metrics.encode();
        let m = |suffix: &str, filter: &str| sum(&text, &format!("gitops_reverser_{suffix}"), filter);
        Self {
            committed: m("commits_total", "result=\"committed\""),
            commit_failed: m("commits_total", "result=\"failed\""),
            commit_seconds: m("commit_duration_seconds_sum", ""),
            pushed_commits: m("event_to_push_lag_seconds_count", ""),
            pushes: m("pushes_total", "result=\"pushed\""),
            push_attempts: m("push_duration_seconds_count", ""),
            push_seconds: m("push_duration_seconds_sum", ""),
            coalesced: m("events_coalesced_total", ""),
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            committed: self.committed - earlier.committed,
            commit_failed: self.commit_failed - earlier.commit_failed,
            commit_seconds: self.commit_seconds - earlier.commit_seconds,
            pushed_commits: self.pushed_commits - earlier.pushed_commits,
            pushes: self.pushes - earlier.pushes,
            push_attempts: self.push_attempts - earlier.push_attempts,
            push_seconds: self.push_seconds - earlier.push_seconds,
            coalesced: self.coalesced - earlier.coalesced,
        }
    }
}

/// CPU seconds of a process and of its reaped children (git, ssh).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub own: f64,
    pub children: f64,
}

impl Cpu {
    pub fn of(pid: &str, ticks_per_second: f64) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start at field 3.
        let rest: Vec<f64> =
            stat.rsplit_once(')')?.1.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
        let field = |n: usize| rest.get(n - 3).copied().unwrap_or(0.0) / ticks_per_second;
        Some(Self { own: field(14) + field(15), children: field(16) + field(17) })
    }

    pub fn since(&self, earlier: &Self) -> Self {
        Self { own: self.own - earlier.own, children: self.children - earlier.children }
    }
}

/// This process's memory in KiB, from /proc/self/status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss: u64,
    /// VmHWM: the most ever resident.
    pub peak: u64,
    /// RssAnon: the heap and stacks, this process's own.
    pub anon: u64,
    /// RssFile: mapped files, counted once per mapping though the page
    /// cache holds each page once (every repository handle maps the packs).
    pub file: u64,
}

pub fn memory_kib() -> Memory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or(0)
    };
    Memory { rss: kib("VmRSS:"), peak: kib("VmHWM:"), anon: kib("RssAnon:"), file: kib("RssFile:") }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_samples_over_labels_and_filters() {
        let text = "# HELP x\nfoo_total{branch=\"b0\",result=\"ok\"} 3\nfoo_total{branch=\"b1\",result=\"ok\"} 4 # {trace_id=\"a\"} 1\nfoo_total{result=\"bad\"} 9\nfoo_sum 2.5\nfoo_total_other 100\n";
        assert_eq!(sum(text, "foo_total", "result=\"ok\""), 7.0);
        assert_eq!(sum(text, "foo_total", ""), 16.0);
        assert_eq!(sum(text, "foo_sum", ""), 2.5);
    }
}
