//! Load tests for gitops-reverser against the local environment of real
//! parts. Each scenario prints a JSON summary on stdout.
//!
//! - `steady`: ConfigMaps created at a fixed rate; event → pushed lag.
//! - `memory`: RSS per watched object after an initial sync of N objects.

mod env;
mod setup;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    /// The operator binary to run (build it with --release first).
    #[arg(long, default_value = "target/release/gitops-reverser")]
    operator: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Creates ConfigMaps at `rate` per second for `seconds`; reports lag.
    Steady {
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// push.interval of the provider.
        #[arg(long, default_value = "1s")]
        interval: String,
    },
    /// Creates `objects` ConfigMaps while the operator is down, restarts it,
    /// and reports the initial sync time and RSS per watched object.
    Memory {
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
    },
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let cli = Cli::parse();
    let root = std::env::current_dir().map_err(|e| e.to_string())?;
    let env = env::Env::up(&root)?;
    let operator = root.join(&cli.operator);
    match cli.scenario {
        Scenario::Steady { rate, seconds, interval } => {
            steady(&env, &operator, rate, seconds, &interval).await
        }
        Scenario::Memory { objects } => memory(&env, &operator, objects).await,
    }
}

async fn steady(
    env: &env::Env,
    operator: &std::path::Path,
    rate: f64,
    seconds: u64,
    interval: &str,
) -> Result<(), String> {
    let run = setup::Run::start(env, operator, "lt-steady", interval, 1000).await?;
    let total = (rate * seconds as f64) as usize;
    let mut created = Vec::with_capacity(total);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let started = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        run.configmap(&format!("lt-{i}"), &i.to_string()).await?;
        created.push(now());
    }
    let send_seconds = started.elapsed().as_secs_f64();
    let pushed = run.wait_pushed(total, Duration::from_secs(300)).await?;
    let lags: Vec<f64> =
        (0..total).filter_map(|i| pushed.get(&format!("lt-{i}")).map(|at| at - created[i])).collect();
    let summary = json!({
        "scenario": "steady",
        "rate_requested": rate,
        "rate_achieved": total as f64 / send_seconds,
        "changes": total,
        "pushed": lags.len(),
        "lost": total - lags.len(),
        "push_interval": interval,
        "pushes": env.pushes(&run.repo).len(),
        "lag_seconds": stats::summary(&lags),
        "operator_rss_kib": run.rss_kib(),
    });
    println!("{summary}");
    Ok(())
}

async fn memory(env: &env::Env, operator: &std::path::Path, objects: usize) -> Result<(), String> {
    let mut run = setup::Run::start(env, operator, "lt-memory", "1s", 1000).await?;
    // Idle with nothing selected: the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = run.rss_kib();
    let created = Instant::now();
    run.configmaps_in_parallel(objects, 16).await?;
    let create_seconds = created.elapsed().as_secs_f64();
    eprintln!("created {objects} objects in {create_seconds:.1}s; restarting the operator");
    let started = Instant::now();
    run.restart_operator().await?;
    eprintln!("operator restarted; waiting for the initial sync");
    run.wait_pushed(objects, Duration::from_secs(900)).await?;
    let synced_seconds = started.elapsed().as_secs_f64();
    // Let transient buffers of the sync settle before reading RSS.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = run.rss_kib();
    let summary = json!({
        "scenario": "memory",
        "objects": objects,
        "create_seconds": create_seconds,
        "initial_sync_seconds": synced_seconds,
        "rss_baseline_kib": baseline,
        "rss_after_kib": after,
        "rss_peak_kib": run.peak_kib(),
        "rss_per_object_bytes": (after.saturating_sub(baseline)) as f64 * 1024.0 / objects as f64,
    });
    println!("{summary}");
    Ok(())
}
