//! Small versions of the load-test scenarios `steady`, `chaos` and
//! `initial-sync`, run by the `loadtest` tool against the real local
//! environment with this build of the operator. They assert only that no
//! change was lost (in the final state, and per change in the branches'
//! history: `completeness`) and that the report is well formed, never a speed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// Builds the loadtest tool (once) next to the operator binary.
fn loadtest_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let operator = Path::new(env!("CARGO_BIN_EXE_gitops-reverser"));
            // Building the operator's package too keeps the features of the
            // shared dependencies the same, so nothing is compiled twice.
            let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
                .args(["build", "--quiet", "--locked", "-p", "loadtest", "-p", "gitops-reverser", "--bins"])
                .current_dir(repo_root())
                .status()
                .expect("run cargo build -p loadtest");
            assert!(status.success(), "cargo build -p loadtest failed");
            operator.with_file_name("loadtest")
        })
        .clone()
}

/// The checkout under test: `cargo test` names it at run time, which stays right
/// when a shared target directory holds a binary built in another checkout.
fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Fast Lease settings, so a failover fits in a few seconds.
const FAST_LEASES: [&str; 4] = [
    "--operator-arg=--lease-duration=4s",
    "--operator-arg=--renew-deadline=3s",
    "--operator-arg=--retry-period=1s",
    "--operator-arg=--push-timeout=2s",
];

fn run(args: &[&str]) -> Value {
    let root = repo_root();
    let out = Command::new(loadtest_binary())
        .arg("--operator")
        .arg(env!("CARGO_BIN_EXE_gitops-reverser"))
        .args(["--out", "target/loadtest-ci"])
        .args(args)
        .current_dir(&root)
        .output()
        .expect("run loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest {args:?} failed:\n{stderr}");
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{stderr}"));
    // The run's folder holds the same report, and its Markdown summary.
    let dir = root.join("target/loadtest-ci").join(report["run"].as_str().expect("run name"));
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(saved, report);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("lost changes"));
    assert!(md.contains("| verb | req/s (all) | req/s (leases) |"), "{md}");
    report
}

fn assert_well_formed(report: &Value, scenario: &str) {
    assert_eq!(report["schema"], "gitops-reverser-loadtest/1");
    assert_eq!(report["scenario"], scenario);
    assert_eq!(report["lost"], 0, "changes lost: {}", report["final_check"]);
    assert_eq!(report["final_check"]["lost"], 0);
    for field in ["p50", "p90", "p99", "max", "count"] {
        assert!(report["lag_seconds"].get(field).is_some(), "lag_seconds.{field}");
    }
    // The operator's own histogram: every scenario commits something.
    let commit_lag = &report["commit_lag_seconds"];
    assert!(commit_lag["count"].as_f64().is_some_and(|n| n > 0.0), "{commit_lag}");
    assert!(commit_lag["p50"].as_f64().is_some_and(|p| p >= 0.0), "{commit_lag}");
    for section in ["changes", "pushes", "shard_balance", "failover", "handover", "parameters", "machine"] {
        assert!(report[section].is_object(), "{section}");
    }
    assert!(report["replicas"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(report["final_check"]["objects"].as_u64().unwrap() > 0);
    // The replicas' watches and Lease renewals alone guarantee requests.
    let api = &report["api_server_requests"];
    assert!(api["error"].is_null(), "API server requests not measured: {}", api["error"]);
    assert!(api["total_per_second"].as_f64().is_some_and(|r| r > 0.0), "{api}");
    assert!(api["window_seconds"].as_f64().is_some_and(|w| w > 0.0), "{api}");
    for map in ["per_second_by_verb", "leases_per_second_by_verb"] {
        assert!(api[map].as_object().is_some_and(|m| !m.is_empty()), "{map}: {api}");
    }
}

/// The report's per-change completeness, printed; checks that its figures
/// add up and returns (missing, of them in fault windows, of them in
/// handover windows, coalesced).
fn completeness(report: &Value, scenario: &str) -> (u64, u64, u64, u64) {
    let c = &report["completeness"];
    assert!(c["error"].is_null(), "{scenario}: completeness not checked: {}", c["error"]);
    let count = |field: &str| c[field].as_u64().unwrap_or_else(|| panic!("completeness.{field}: {c}"));
    let (written, in_history, missing) = (count("written"), count("in_history"), count("missing"));
    let in_windows = count("missing_in_fault_windows");
    let in_handovers = count("missing_in_handover_windows");
    let coalesced = c["coalesced"].as_f64().unwrap_or_else(|| panic!("completeness.coalesced: {c}"));
    println!(
        "loadtest {scenario}: completeness: {written} values written, {in_history} in some commit, {missing} in none \
         ({in_windows} of them in fault windows of {} windows, {in_handovers} in handover windows of {} windows), \
         {coalesced} coalesced ({}); in no commit: {}",
        c["fault_windows"], c["handover_windows"], c["coalesced_by_replica"], c["missing_examples"]
    );
    assert_eq!(Some(written), report["changes"]["accepted"].as_u64(), "every accepted change is looked up");
    assert_eq!(in_history + missing, written, "{c}");
    assert!(written > 0, "{c}");
    assert!(coalesced >= 0.0 && coalesced.fract() == 0.0, "a counter increase: {c}");
    (missing, in_windows, in_handovers, coalesced as u64)
}

#[test]
fn steady_small_loses_nothing() {
    let report = run(&[
        "steady",
        "--replicas",
        "2",
        "--targets",
        "2",
        "--objects",
        "20",
        "--rate",
        "10",
        "--seconds",
        "5",
    ]);
    assert_well_formed(&report, "steady");
    assert_eq!(report["changes"]["accepted"], report["changes"]["pushed"]);
    // No replica stops: every value is in some commit, unless the operator coalesced it.
    let (missing, _, _, coalesced) = completeness(&report, "steady");
    assert!(missing <= coalesced, "{missing} values in no commit, only {coalesced} coalesced");
}

#[test]
fn chaos_small_loses_nothing() {
    let mut args = vec![
        "chaos",
        "--replicas",
        "2",
        "--targets",
        "4",
        "--objects",
        "20",
        "--rate",
        "10",
        "--seconds",
        "14",
        "--every",
        "4",
        "--freeze-for",
        "5",
        "--restart-after",
        "1",
        "--seed",
        "7",
    ];
    args.extend(FAST_LEASES);
    let report = run(&args);
    assert_well_formed(&report, "chaos");
    assert!(!report["disruptions"].as_array().unwrap().is_empty(), "no fault was injected");
    // A killed or frozen replica's commits that it had not pushed are gone,
    // but its shards' warm successor (the other replica) wrote them, and
    // the hand-back to the restarted or resumed replica is a planned
    // handover: neither a fault's window nor a handover's excuses a value,
    // they only locate a loss in the report. Every missing value must be
    // one the operator coalesced.
    let (missing, _, _, coalesced) = completeness(&report, "chaos");
    assert!(
        missing <= coalesced,
        "{missing} values in no commit, only {coalesced} coalesced: {}",
        report["completeness"]
    );
}

#[test]
fn initial_sync_small_loses_nothing() {
    let report = run(&["initial-sync", "--replicas", "2", "--targets", "2", "--objects", "200"]);
    assert_well_formed(&report, "initial-sync");
    assert_eq!(report["initial_sync"]["objects"], 200);
    // Every object's value is in some commit, unless the operator coalesced it.
    let (missing, _, _, coalesced) = completeness(&report, "initial-sync");
    assert!(missing <= coalesced, "{missing} values in no commit, only {coalesced} coalesced");
}
