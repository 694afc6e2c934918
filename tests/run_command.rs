//! `gitops-reverser run` as a real OS process against the local API server:
//! it serves health, readiness and metrics, and exits 0 soon after SIGTERM.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::http::{free_local_addr, get};

/// Runs in a namespace of its own (no other test's GitTargets: it must not
/// become a second writer of their branches), with its own Leases and data
/// folder; logs go to a file, never to a pipe that could fill.
fn start_operator(kubeconfig: &str, addr: std::net::SocketAddr, scratch: &std::path::Path) -> Child {
    let log = std::fs::File::create(scratch.join("operator.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_gitops-reverser"))
        .args(["run", "--log-format", "json", "--shutdown-timeout", "7s"])
        .arg("--namespace")
        .arg(support::unique_name("run-command"))
        .arg("--lease-prefix")
        .arg(support::unique_name("run-command"))
        .arg("--data-dir")
        .arg(scratch.join("data"))
        .env("GITOPS_REVERSER_HTTP_ADDR", addr.to_string())
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start gitops-reverser")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args(["-s", name, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Waits for the process to exit, returning its status and how long it took.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<(std::process::ExitStatus, Duration)> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((status, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test]
async fn run_serves_probes_and_metrics_and_exits_cleanly_on_sigterm() {
    let env = support::env();
    let addr = free_local_addr();
    let scratch = tempfile::tempdir().unwrap();
    let mut child = start_operator(env.var("KUBECONFIG"), addr, scratch.path());

    let healthz =
        support::wait_for("/healthz", Duration::from_secs(30), || async { get(addr, "/healthz") }).await;
    assert_eq!(healthz.0, 200);
    support::wait_for("/readyz to report ready", Duration::from_secs(30), || async {
        get(addr, "/readyz").filter(|(code, _)| *code == 200)
    })
    .await;

    let (code, metrics) = get(addr, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    assert!(metrics.contains("gitops_reverser_api_server_reachable 1"), "{metrics}");
    assert!(metrics.contains("gitops_reverser_build_info{"), "{metrics}");
    // A plain GET gets the Prometheus text format; Prometheus asks for OpenMetrics.
    assert!(!metrics.contains("# EOF"), "{metrics}");
    let (_, open) =
        support::http::get_accepting(addr, "/metrics", "application/openmetrics-text;version=1.0.0")
            .expect("/metrics answers");
    assert!(open.ends_with("# EOF\n"), "OpenMetrics output must end with # EOF");

    signal(&child, "TERM");
    // With nothing to drain it must not need its shutdown timeout (6 s).
    let (status, took) = wait_exit(&mut child, Duration::from_secs(6)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the operator did not exit within its 6 s shutdown timeout after SIGTERM")
    });
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let logs = std::fs::read_to_string(scratch.path().join("operator.log")).unwrap();
    assert!(
        logs.lines().all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok()),
        "non-JSON log line:\n{logs}"
    );
    assert!(logs.contains("\"signal\":\"SIGTERM\""), "shutdown not logged:\n{logs}");
    assert!(!logs.contains("shutdown timed out"), "nothing to drain, yet the shutdown timed out:\n{logs}");
    eprintln!("exited {took:?} after SIGTERM");
}

#[test]
fn run_without_a_reachable_configuration_fails_with_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_gitops-reverser"))
        .args(["run", "--http-addr", &free_local_addr().to_string()])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("Kubernetes client configuration"), "{logs}");
}

#[test]
fn invalid_flags_are_rejected_with_usage() {
    let output = Command::new(env!("CARGO_BIN_EXE_gitops-reverser"))
        .args(["run", "--shutdown-timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid duration"));
}

#[test]
fn a_shutdown_timeout_without_room_to_drain_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_gitops-reverser"))
        .args(["run", "--shutdown-timeout", "3s", "--push-timeout", "60s"])
        .args(["--http-addr", &free_local_addr().to_string()])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("--shutdown-timeout 3s leaves no time to drain"), "{logs}");
}

/// Issue 20: a process killed by SIGKILL never removes its credential
/// directories, and the chart's `/tmp` is an emptyDir that outlives
/// container restarts. The next start removes them, and nothing else.
#[tokio::test]
async fn credential_directories_left_by_a_killed_process_are_removed_at_start_up() {
    let env = support::env();
    let tmp = tempfile::tempdir().unwrap();
    let planted = tmp.path().join("gitops-reverser-remote-xyz");
    std::fs::create_dir(&planted).unwrap();
    std::fs::write(planted.join("password"), "left-behind").unwrap();
    let unrelated = tmp.path().join("gitops-reverser-other");
    std::fs::create_dir(&unrelated).unwrap();
    std::fs::write(unrelated.join("keep"), "not ours to remove").unwrap();

    let lease_prefix = support::unique_name("run-stale");
    let operator = support::operator::Operator::start_with_env(
        env,
        &support::unique_name("run-stale"),
        &["--lease-prefix", &lease_prefix],
        &[("TMPDIR", tmp.path().to_str().unwrap())],
    );
    support::wait_for("the planted credential directory to be removed", Duration::from_secs(30), || async {
        (!planted.exists()).then_some(())
    })
    .await;
    operator.wait_log("removed credential directories a previous process left behind").await;
    assert!(unrelated.join("keep").exists(), "a directory without our prefix was removed");
}
