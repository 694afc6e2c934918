//! A run's report: `report.json` (stable field names), `report.md`, and
//! PNG plots, all in the run's folder.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::measure;
use crate::plot::{self, Mark, Series};
use crate::run::Outcome;
use crate::stats;

/// Per replica: peak RSS, CPU seconds used, and the average cores over its life.
fn replicas(outcome: &Outcome) -> Vec<Value> {
    let mut by_name: BTreeMap<&str, (u64, f64, f64, f64, f64)> = BTreeMap::new();
    for sample in &outcome.samples {
        for r in &sample.replicas {
            let e = by_name.entry(&r.name).or_insert((0, r.cpu_seconds, r.cpu_seconds, sample.at, sample.at));
            e.0 = e.0.max(r.peak_rss_kib);
            e.2 = r.cpu_seconds;
            e.4 = sample.at;
        }
    }
    by_name
        .into_iter()
        .map(|(name, (peak, cpu0, cpu1, t0, t1))| {
            let cpu = cpu1 - cpu0;
            json!({"name": name, "peak_rss_kib": peak, "cpu_seconds": cpu,
                   "cpu_cores_avg": if t1 > t0 { cpu / (t1 - t0) } else { 0.0 }, "seconds_sampled": t1 - t0})
        })
        .collect()
}

/// Shard moves against the replicas stopped (terminated or killed): a
/// rolling update should move each shard at most once per restart.
fn shard_moves(outcome: &Outcome) -> Value {
    let (moves, most) = measure::shard_moves(&outcome.samples);
    let restarts = outcome.disruptions.iter().filter(|d| d.kind == "terminate" || d.kind == "kill").count();
    let between_stops = measure::most_moves_between_stops(&outcome.samples, &outcome.disruptions);
    json!({"moves": moves, "most_by_one_shard": most, "restarts": restarts,
           "per_shard_per_restart": (restarts > 0).then(|| most as f64 / restarts as f64),
           "most_by_one_shard_between_two_stops": between_stops})
}

fn gap_summary(gaps: &[measure::Gap], kinds: &[&str]) -> Value {
    let values: Vec<f64> =
        gaps.iter().filter(|g| kinds.contains(&g.kind.as_str())).filter_map(|g| g.max_seconds).collect();
    let branches: Vec<f64> = gaps
        .iter()
        .filter(|g| kinds.contains(&g.kind.as_str()))
        .flat_map(|g| g.seconds.iter().copied())
        .collect();
    json!({"count": values.len(), "median_seconds": stats::median(&values),
           "max_seconds": values.iter().copied().reduce(f64::max),
           "median_over_branches_seconds": stats::median(&branches)})
}

pub fn json(outcome: &Outcome, lags: &[Option<f64>], plots: &[String], plot_error: Option<&str>) -> Value {
    let plan = &outcome.plan;
    let pushed: Vec<f64> = lags.iter().flatten().copied().collect();
    let last_push = outcome.pushes.iter().map(|p| p.at).fold(outcome.load_started_at, f64::max);
    let window = (last_push - outcome.load_started_at).max(1e-9);
    let commits: usize =
        outcome.pushes.iter().filter(|p| p.at >= outcome.load_started_at).map(|p| p.commits).sum();
    let pushes_in_run = outcome.pushes.iter().filter(|p| p.at >= outcome.load_started_at).count();
    let gaps = measure::gaps(&outcome.disruptions, &outcome.pushes);
    let balance_end = outcome.samples.last().and_then(|s| measure::balance(s, plan.shards));
    let balance_max =
        outcome.samples.iter().filter_map(|s| measure::balance(s, plan.shards)).reduce(f64::max);
    let initial_sync = plan.initial_sync.then(|| {
        let baseline = outcome.baseline_rss_kib.unwrap_or(0);
        let after = outcome.rss_after_kib.unwrap_or(0);
        json!({"objects": plan.objects, "create_seconds": outcome.create_seconds,
               "synced_seconds": pushed.iter().copied().reduce(f64::max),
               "rss_baseline_kib": baseline, "rss_after_kib": after,
               "rss_per_object_bytes": after.saturating_sub(baseline) as f64 * 1024.0 / plan.objects.max(1) as f64})
    });
    json!({
        "schema": "gitops-reverser-loadtest/1",
        "scenario": plan.scenario,
        "run": outcome.dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "started_at": outcome.started_at,
        "machine": {"cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
                    "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()},
        "parameters": {"replicas": plan.replicas, "targets": plan.targets, "objects": plan.objects,
                       "profile": format!("{:?}", plan.profile), "seconds": plan.seconds,
                       "push_interval": plan.interval, "max_commits": plan.max_commits,
                       "parallel": plan.parallel, "faults": format!("{:?}", plan.faults), "shards": plan.shards,
                       "operator_args": plan.operator_args},
        "changes": {"accepted": outcome.changes.len(), "failed": outcome.errors,
                    "pushed": pushed.len(), "not_pushed": lags.len() - pushed.len(),
                    "send_seconds": outcome.load_seconds,
                    "accepted_per_second": (outcome.load_seconds > 0.0).then(|| outcome.changes.len() as f64 / outcome.load_seconds),
                    "pushed_per_second": pushed.len() as f64 / window},
        "lag_seconds": stats::summary(&pushed),
        // Per commit (from its oldest event's arrival at the operator), from
        // the replicas' histograms: git commit dates have whole seconds.
        "commit_lag_seconds": outcome.commit_lag.summary(),
        "push_attempt_seconds": outcome.push_duration.summary(),
        "pushes": {"count": pushes_in_run, "per_second": pushes_in_run as f64 / window,
                   "commits": commits, "commits_per_second": commits as f64 / window},
        "replicas": replicas(outcome),
        "shard_balance": {"end": balance_end, "max_over_run": balance_max},
        "shard_moves": shard_moves(outcome),
        "gaps": gaps,
        "failover": gap_summary(&gaps, &["kill", "freeze"]),
        "handover": gap_summary(&gaps, &["terminate"]),
        "disruptions": outcome.disruptions,
        "initial_sync": initial_sync,
        "api_server_requests": outcome.api_server_requests,
        "final_check": outcome.final_check,
        "lost": outcome.final_check.lost,
        "completeness": outcome.completeness,
        "plots": plots,
        "plot_error": plot_error,
    })
}

fn fmt(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() != 0.0 => format!("{f:.3}"),
        _ if v.is_null() => "–".into(),
        _ => v.to_string(),
    }
}

/// The API server's requests per second by verb: a table, or why there is none.
fn api_requests(md: &mut String, a: &Value) {
    if let Some(e) = a["error"].as_str() {
        let _ = writeln!(md, "\nAPI server requests: not measured: {e}");
        return;
    }
    let _ = writeln!(
        md,
        "\nAPI server requests, all clients (its `apiserver_request_total` at the load's start and end, {} s apart): {} per second.\n",
        fmt(&a["window_seconds"]),
        fmt(&a["total_per_second"])
    );
    let _ = writeln!(md, "| verb | req/s (all) | req/s (leases) |\n| --- | --- | --- |");
    for (verb, rate) in a["per_second_by_verb"].as_object().into_iter().flatten() {
        let _ = writeln!(md, "| {verb} | {} | {} |", fmt(rate), fmt(&a["leases_per_second_by_verb"][verb]));
    }
    if let Some(verbs) = a["reset_verbs"].as_array().filter(|v| !v.is_empty()) {
        let verbs: Vec<&str> = verbs.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(
            md,
            "\nThe API server restarted during the load: the counters of {} count from 0 at the restart (lower bounds).",
            verbs.join(", ")
        );
    }
}

pub fn markdown(report: &Value) -> String {
    let mut md = String::new();
    let r = report;
    let _ = writeln!(
        md,
        "# loadtest `{}` — {}\n",
        fmt(&r["scenario"]).trim_matches('"'),
        fmt(&r["run"]).trim_matches('"')
    );
    let _ = writeln!(
        md,
        "Machine: {} cores, load average at the end `{}`.\n",
        r["machine"]["cores"],
        r["machine"]["loadavg"].as_str().unwrap_or_default()
    );
    let _ = writeln!(md, "Parameters: `{}`\n", r["parameters"]);
    let _ = writeln!(md, "| figure | value |\n| --- | --- |");
    let c = &r["completeness"];
    let rows: [(&str, &Value); 37] = [
        ("changes accepted", &r["changes"]["accepted"]),
        ("changes accepted per second", &r["changes"]["accepted_per_second"]),
        ("changes pushed per second", &r["changes"]["pushed_per_second"]),
        ("lag event → pushed p50 (s)", &r["lag_seconds"]["p50"]),
        ("lag event → pushed p90 (s)", &r["lag_seconds"]["p90"]),
        ("lag event → pushed p99 (s)", &r["lag_seconds"]["p99"]),
        ("lag event → pushed max (s)", &r["lag_seconds"]["max"]),
        ("lag event → commit p50 (s, operator histogram)", &r["commit_lag_seconds"]["p50"]),
        ("lag event → commit p90 (s)", &r["commit_lag_seconds"]["p90"]),
        ("lag event → commit p99 (s)", &r["commit_lag_seconds"]["p99"]),
        ("lag event → commit max ≤ (s, bucket bound)", &r["commit_lag_seconds"]["max_at_most"]),
        (
            "push attempt p50 (s: pack, wait for the repository's push, push)",
            &r["push_attempt_seconds"]["p50"],
        ),
        ("push attempt p99 (s)", &r["push_attempt_seconds"]["p99"]),
        ("pushes", &r["pushes"]["count"]),
        ("pushes per second", &r["pushes"]["per_second"]),
        ("commits pushed", &r["pushes"]["commits"]),
        ("shard balance max/avg at the end", &r["shard_balance"]["end"]),
        ("shard moves (holder changes in 0.5 s samples)", &r["shard_moves"]["moves"]),
        ("shard moves: most by one shard", &r["shard_moves"]["most_by_one_shard"]),
        (
            "shard moves: most by one shard between two stops",
            &r["shard_moves"]["most_by_one_shard_between_two_stops"],
        ),
        ("replicas stopped (SIGTERM or kill)", &r["shard_moves"]["restarts"]),
        ("failover gap median (s)", &r["failover"]["median_seconds"]),
        ("failover gap max (s)", &r["failover"]["max_seconds"]),
        ("failover gap median over branches (s)", &r["failover"]["median_over_branches_seconds"]),
        ("handover gap median (s)", &r["handover"]["median_seconds"]),
        ("handover gap max (s)", &r["handover"]["max_seconds"]),
        ("handover gap median over branches (s)", &r["handover"]["median_over_branches_seconds"]),
        ("final state: objects compared", &r["final_check"]["objects"]),
        ("**lost changes**", &r["lost"]),
        ("completeness: values written", &c["written"]),
        ("completeness: values in some commit", &c["in_history"]),
        ("completeness: values in no commit", &c["missing"]),
        ("completeness: of them in fault windows (killed or frozen owner)", &c["missing_in_fault_windows"]),
        (
            "completeness: of them in handover windows (known gap, issue 18)",
            &c["missing_in_handover_windows"],
        ),
        ("completeness: handover windows whose drain timed out", &c["drain_timeout_windows"]),
        ("completeness: missing values in those (declared losses)", &c["missing_in_drain_timeouts"]),
        ("completeness: changes coalesced by the operator", &c["coalesced"]),
    ];
    for (name, value) in rows {
        let _ = writeln!(md, "| {name} | {} |", fmt(value));
    }
    if let Some(sync) = r["initial_sync"].as_object() {
        let _ = writeln!(
            md,
            "\nInitial sync: {} objects pushed {} s after the replicas started; RSS {} KiB idle → {} KiB after, {} bytes per object.",
            sync["objects"],
            fmt(&sync["synced_seconds"]),
            sync["rss_baseline_kib"],
            sync["rss_after_kib"],
            fmt(&sync["rss_per_object_bytes"])
        );
    }
    if let Some(e) = c["error"].as_str() {
        let _ = writeln!(md, "\nCompleteness not checked: {e}");
    }
    for example in c["missing_examples"].as_array().into_iter().flatten() {
        let _ = writeln!(md, "\n- in no commit: {}", example.as_str().unwrap_or_default());
    }
    api_requests(&mut md, &r["api_server_requests"]);
    let _ = writeln!(md, "\n| replica | peak RSS (KiB) | CPU (s) | avg cores |\n| --- | --- | --- | --- |");
    for rep in r["replicas"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            fmt(&rep["name"]).trim_matches('"'),
            rep["peak_rss_kib"],
            fmt(&rep["cpu_seconds"]),
            fmt(&rep["cpu_cores_avg"])
        );
    }
    let gaps = r["gaps"].as_array().cloned().unwrap_or_default();
    if !gaps.is_empty() {
        let _ = writeln!(
            md,
            "\n| fault | replica | branches | gap median (s) | gap max (s) |\n| --- | --- | --- | --- | --- |"
        );
        for g in gaps {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                fmt(&g["kind"]).trim_matches('"'),
                fmt(&g["replica"]).trim_matches('"'),
                g["branches"],
                fmt(&g["median_seconds"]),
                fmt(&g["max_seconds"])
            );
        }
    }
    for plot in r["plots"].as_array().into_iter().flatten() {
        let name = plot.as_str().unwrap_or_default();
        let _ = writeln!(md, "\n![{name}]({name})");
    }
    if let Some(e) = r["plot_error"].as_str() {
        let _ = writeln!(md, "\nNo plots: {e}");
    }
    md
}

/// Draws the run's plots; returns their file names.
pub fn plots(outcome: &Outcome, lags: &[Option<f64>]) -> Result<Vec<String>, String> {
    let t0 = outcome.load_started_at;
    let dir = &outcome.dir;
    let marks: Vec<Mark> = outcome
        .disruptions
        .iter()
        .map(|d| Mark { x: d.at - t0, label: format!("{} {}", d.kind, d.replica) })
        .collect();
    let mut names = Vec::new();
    let points: Vec<(f64, f64)> =
        outcome.changes.iter().zip(lags).filter_map(|(c, l)| Some((c.accepted - t0, (*l)?))).collect();
    let lag_bins = stats::bins(&points, 1.0);
    let pct = |p: f64| lag_bins.iter().map(|(x, ys)| (*x, stats::percentile(ys, p))).collect::<Vec<_>>();
    let lag_series = vec![
        Series { name: "p50".into(), points: pct(50.0) },
        Series { name: "p90".into(), points: pct(90.0) },
        Series { name: "p99".into(), points: pct(99.0) },
        Series { name: "max".into(), points: pct(100.0) },
    ];
    plot::line_chart(
        &dir.join("lag.png"),
        "event → pushed lag per 1 s of changes",
        ("seconds since load start", "lag (s)"),
        &lag_series,
        &marks,
    )?;
    names.push("lag.png".to_owned());

    let accepted: Vec<(f64, f64)> = outcome.changes.iter().map(|c| (c.accepted - t0, 1.0)).collect();
    let pushed: Vec<(f64, f64)> =
        outcome.changes.iter().zip(lags).filter_map(|(c, l)| Some((c.accepted + (*l)? - t0, 1.0))).collect();
    let pushes: Vec<(f64, f64)> =
        outcome.pushes.iter().filter(|p| p.at >= t0).map(|p| (p.at - t0, 1.0)).collect();
    let per_second =
        |pts: &[(f64, f64)]| stats::bins(pts, 1.0).into_iter().map(|(x, ys)| (x, ys.len() as f64)).collect();
    let throughput = vec![
        Series { name: "changes accepted/s".into(), points: per_second(&accepted) },
        Series { name: "changes pushed/s".into(), points: per_second(&pushed) },
        Series { name: "pushes/s".into(), points: per_second(&pushes) },
    ];
    plot::line_chart(
        &dir.join("throughput.png"),
        "throughput",
        ("seconds since load start", "per second"),
        &throughput,
        &marks,
    )?;
    names.push("throughput.png".to_owned());

    let mut rss: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut cpu: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut shards: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut last_cpu: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for s in &outcome.samples {
        for r in &s.replicas {
            rss.entry(r.name.clone()).or_default().push((s.at - t0, r.rss_kib as f64 / 1024.0));
            if let Some((t, c)) = last_cpu.insert(r.name.clone(), (s.at, r.cpu_seconds)) {
                cpu.entry(r.name.clone())
                    .or_default()
                    .push((s.at - t0, (r.cpu_seconds - c) / (s.at - t).max(1e-3)));
            }
        }
        for name in s.replicas.iter().map(|r| &r.name).chain(s.shards.keys()) {
            shards
                .entry(name.clone())
                .or_default()
                .push((s.at - t0, *s.shards.get(name).unwrap_or(&0) as f64));
        }
        shards.entry("unowned".into()).or_default().push((s.at - t0, s.unowned as f64));
    }
    let to_series = |m: BTreeMap<String, Vec<(f64, f64)>>| {
        m.into_iter().map(|(name, points)| Series { name, points }).collect::<Vec<_>>()
    };
    plot::line_chart(
        &dir.join("rss.png"),
        "RSS per replica",
        ("seconds since load start", "MiB"),
        &to_series(rss),
        &marks,
    )?;
    names.push("rss.png".to_owned());
    plot::line_chart(
        &dir.join("cpu.png"),
        "CPU per replica",
        ("seconds since load start", "cores"),
        &to_series(cpu),
        &marks,
    )?;
    names.push("cpu.png".to_owned());
    plot::line_chart(
        &dir.join("shards.png"),
        "shards held per replica (unexpired Leases)",
        ("seconds since load start", "shards"),
        &to_series(shards),
        &marks,
    )?;
    names.push("shards.png".to_owned());
    Ok(names)
}

/// Writes report.json, report.md and the plots; returns the JSON.
pub fn write(outcome: &Outcome) -> Result<Value, String> {
    let lags = measure::lags(&outcome.changes, &outcome.pushes);
    let (plots, plot_error) = match plots(outcome, &lags) {
        Ok(names) => (names, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let report = json(outcome, &lags, &plots, plot_error.as_deref());
    let pretty = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(outcome.dir.join("report.json"), pretty).map_err(|e| e.to_string())?;
    std::fs::write(outcome.dir.join("report.md"), markdown(&report)).map_err(|e| e.to_string())?;
    Ok(report)
}
