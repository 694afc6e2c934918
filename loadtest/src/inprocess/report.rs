//! The in-process run's `report.json` (schema
//! `gitops-reverser-loadtest-in-process/1`) and `report.md`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use super::Measured;
use crate::{measure, stats};

fn per(count: f64, seconds: f64) -> Option<f64> {
    (seconds > 0.0).then(|| count / seconds)
}

pub fn json(m: &Measured) -> Value {
    let s = &m.settings;
    let c = &m.counters;
    let changes = m.fed.changes.len() as f64;
    let window = m.last_push_seconds;
    let lags: Vec<f64> = measure::lags(&m.fed.changes, &m.pushes).into_iter().flatten().collect();
    let worker_seconds = window * s.branches as f64;
    let server_commits: usize = m.pushes.iter().map(|p| p.commits).sum();
    json!({
        "schema": "gitops-reverser-loadtest-in-process/1",
        "scenario": "in-process",
        "run": m.run,
        "started_at": m.started_at,
        "machine": {"cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
                    "loadavg_before": m.loadavg_before, "loadavg_after": m.loadavg_after},
        "parameters": {"branches": s.branches, "repositories": s.repositories, "objects": s.objects, "changes": s.changes,
                       "rate": (s.rate > 0.0).then_some(s.rate),
                       "push_interval_seconds": s.push.interval.as_secs_f64(), "max_commits": s.push.max_commits},
        "initial_sync_seconds": m.sync_seconds,
        "changes": {"fed": m.fed.changes.len(), "items": m.fed.items, "feed_seconds": m.fed.seconds,
                    "fed_per_second": per(changes, m.fed.seconds),
                    "pushed_per_second": per(changes, window)},
        "last_push_seconds": window,
        "complete": m.complete,
        "commits": {"committed": c.committed, "failed": c.commit_failed, "coalesced": c.coalesced,
                    "pushed": c.pushed_commits, "on_remote": m.verified.commits_on_remote,
                    "in_server_pushes": server_commits,
                    "one_per_change": c.coalesced == 0.0 && m.verified.commits_on_remote == m.fed.changes.len(),
                    "per_second": per(m.verified.commits_on_remote as f64, window),
                    "mean_ms": per(c.commit_seconds * 1000.0, c.committed)},
        "pushes": {"count": c.pushes, "attempts": c.push_attempts, "in_server_log": m.pushes.len(),
                   "per_second": per(c.pushes, window), "mean_ms": per(c.push_seconds * 1000.0, c.push_attempts),
                   "commits_per_push": per(c.pushed_commits, c.pushes)},
        // Share of the workers' wall time spent in commits and in pushes (a
        // worker does one at a time): near 1 together means the workers are the limit.
        "worker_time": {"commit_share": per(c.commit_seconds, worker_seconds),
                        "push_share": per(c.push_seconds, worker_seconds)},
        "lag_seconds": stats::summary(&lags),
        "commit_lag_seconds": m.commit_lag.summary(),
        "process": {"cpu_seconds": m.cpu.own, "cpu_cores_avg": per(m.cpu.own, window),
                    "children_cpu_seconds": m.cpu.children, "rss_kib": m.memory.rss, "peak_rss_kib": m.memory.peak,
                    "rss_anon_kib": m.memory.anon, "rss_file_kib": m.memory.file},
        "git_server": m.git_server_cpu.map(|cpu| json!({"cpu_seconds": cpu.own + cpu.children})),
        "final_check": m.verified,
        "lost": m.verified.lost,
    })
}

fn fmt(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() != 0.0 => format!("{f:.3}"),
        _ if v.is_null() => "–".into(),
        _ => v.to_string(),
    }
}

pub fn markdown(r: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# loadtest `in-process` — {}\n", r["run"].as_str().unwrap_or_default());
    let _ = writeln!(
        md,
        "Machine: {} cores, load average before `{}`, after `{}`.\n",
        r["machine"]["cores"],
        r["machine"]["loadavg_before"].as_str().unwrap_or_default(),
        r["machine"]["loadavg_after"].as_str().unwrap_or_default()
    );
    let _ = writeln!(md, "Parameters: `{}`\n", r["parameters"]);
    let _ = writeln!(md, "| figure | value |\n| --- | --- |");
    let rows: [(&str, &Value); 27] = [
        ("initial sync pushed (s)", &r["initial_sync_seconds"]),
        ("all pushed within the settle time", &r["complete"]),
        ("changes fed", &r["changes"]["fed"]),
        ("changes fed per second", &r["changes"]["fed_per_second"]),
        ("first change → last push (s)", &r["last_push_seconds"]),
        ("**changes pushed per second**", &r["changes"]["pushed_per_second"]),
        ("**commits per second**", &r["commits"]["per_second"]),
        ("commits on the remote", &r["commits"]["on_remote"]),
        ("changes coalesced", &r["commits"]["coalesced"]),
        ("one commit per change", &r["commits"]["one_per_change"]),
        ("commit mean (ms)", &r["commits"]["mean_ms"]),
        ("pushes", &r["pushes"]["count"]),
        ("pushes per second", &r["pushes"]["per_second"]),
        ("push mean (ms)", &r["pushes"]["mean_ms"]),
        ("commits per push", &r["pushes"]["commits_per_push"]),
        ("worker time in commits", &r["worker_time"]["commit_share"]),
        ("worker time in pushes", &r["worker_time"]["push_share"]),
        ("lag event → pushed p50 (s)", &r["lag_seconds"]["p50"]),
        ("lag event → pushed p99 (s)", &r["lag_seconds"]["p99"]),
        ("lag event → commit p50 (s, operator histogram)", &r["commit_lag_seconds"]["p50"]),
        ("lag event → commit p99 (s)", &r["commit_lag_seconds"]["p99"]),
        ("process CPU (s)", &r["process"]["cpu_seconds"]),
        ("process CPU (cores)", &r["process"]["cpu_cores_avg"]),
        ("git/ssh child CPU (s)", &r["process"]["children_cpu_seconds"]),
        ("git server CPU (s)", &r["git_server"]["cpu_seconds"]),
        ("peak RSS (KiB)", &r["process"]["peak_rss_kib"]),
        ("**lost changes**", &r["lost"]),
    ];
    for (name, value) in rows {
        let _ = writeln!(md, "| {name} | {} |", fmt(value));
    }
    md
}

/// Writes report.json and report.md into `dir`; returns the JSON.
pub fn write(dir: &Path, m: &Measured) -> Result<Value, String> {
    let report = json(m);
    let pretty = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("report.json"), pretty).map_err(|e| format!("writing report.json: {e}"))?;
    std::fs::write(dir.join("report.md"), markdown(&report))
        .map_err(|e| format!("writing report.md: {e}"))?;
    Ok(report)
}
