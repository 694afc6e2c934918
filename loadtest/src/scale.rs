//! scale-out: the same plan on several replica counts, one run each, and a
//! summary comparing them (`<out>/scale-out-<pid>/summary.{json,md}` and a plot).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::env::Env;
use crate::plot::{self, Series};
use crate::run::{self, Plan};

pub async fn run(env: &Env, operator: &Path, out: &Path, base: Plan, counts: &[usize]) -> Result<(), String> {
    let dir = out.join(format!("scale-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for &replicas in counts {
        let outcome = run::execute(env, operator, out, Plan { replicas, ..base.clone() }).await?;
        let report = crate::report::write(&outcome)?;
        eprintln!("{replicas} replicas: {}", outcome.dir.join("report.md").display());
        let cpu: f64 = report["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["cpu_seconds"].as_f64())
            .sum();
        let peak: u64 = report["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["peak_rss_kib"].as_u64())
            .max()
            .unwrap_or(0);
        rows.push(json!({"replicas": replicas, "run": report["run"], "lag_seconds": report["lag_seconds"],
            "pushed_per_second": report["changes"]["pushed_per_second"], "pushes_per_second": report["pushes"]["per_second"],
            "cpu_seconds_total": cpu, "peak_rss_kib_max": peak, "shard_balance_end": report["shard_balance"]["end"],
            "lost": report["lost"]}));
    }
    let lost: u64 = rows.iter().filter_map(|r| r["lost"].as_u64()).sum();
    let summary = json!({"schema": "gitops-reverser-loadtest-scale-out/1", "scenario": "scale-out", "runs": rows, "lost": lost});
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let series = |name: &str, f: &dyn Fn(&Value) -> Option<f64>| Series {
        name: name.into(),
        points: rows.iter().filter_map(|r| Some((r["replicas"].as_f64()?, f(r)?))).collect(),
    };
    let plotted = plot::line_chart(
        &dir.join("scale-out.png"),
        "lag by replica count",
        ("replicas", "seconds"),
        &[
            series("lag p50", &|r: &Value| r["lag_seconds"]["p50"].as_f64()),
            series("lag p99", &|r: &Value| r["lag_seconds"]["p99"].as_f64()),
        ],
        &[],
    );
    let mut md = String::from(
        "# loadtest `scale-out`\n\n| replicas | lag p50 (s) | lag p99 (s) | changes pushed/s | pushes/s | CPU s (all replicas) | peak RSS max (KiB) | balance | lost |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in &rows {
        let f = |v: &Value| v.as_f64().map_or("–".to_owned(), |f| format!("{f:.3}"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r["replicas"],
            f(&r["lag_seconds"]["p50"]),
            f(&r["lag_seconds"]["p99"]),
            f(&r["pushed_per_second"]),
            f(&r["pushes_per_second"]),
            f(&r["cpu_seconds_total"]),
            r["peak_rss_kib_max"],
            f(&r["shard_balance_end"]),
            r["lost"]
        );
    }
    match plotted {
        Ok(()) => md.push_str("\n![scale-out](scale-out.png)\n"),
        Err(e) => md.push_str(&format!("\nNo plot: {e}\n")),
    }
    std::fs::write(dir.join("summary.md"), md).map_err(|e| e.to_string())?;
    println!("{summary}");
    eprintln!("summary: {}", dir.join("summary.md").display());
    if lost > 0 {
        return Err(format!("{lost} changes lost"));
    }
    Ok(())
}
