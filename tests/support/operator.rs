//! Runs the real operator binary as an OS process for one namespace, with
//! its logs in a file (tests scan them for credentials).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::free_local_addr;

pub struct Operator {
    child: Option<Child>,
    pub addr: std::net::SocketAddr,
    pub log_path: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Operator {
    /// Starts `gitops-reverser run` limited to `namespace`.
    pub fn start(env: &super::Env, namespace: &str) -> Self {
        Self::start_with(env, namespace, &[])
    }

    pub fn start_with(env: &super::Env, namespace: &str, extra: &[&str]) -> Self {
        Self::start_with_env(env, namespace, extra, &[])
    }

    /// Starts it with `extra` flags and `vars` in its environment.
    pub fn start_with_env(env: &super::Env, namespace: &str, extra: &[&str], vars: &[(&str, &str)]) -> Self {
        Self::start_as_with_env(namespace, std::path::Path::new(env.var("KUBECONFIG")), extra, vars)
    }

    /// Like `start_with`, with the identity of `kubeconfig` instead of the admin.
    pub fn start_as(namespace: &str, kubeconfig: &std::path::Path, extra: &[&str]) -> Self {
        Self::start_as_with_env(namespace, kubeconfig, extra, &[])
    }

    fn start_as_with_env(
        namespace: &str,
        kubeconfig: &std::path::Path,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let log_path = scratch.path().join("operator.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let addr = free_local_addr();
        let child = Command::new(env!("CARGO_BIN_EXE_gitops-reverser"))
            .arg("run")
            .args(["--namespace", namespace, "--log-format", "json", "--access-check-interval", "3s"])
            .arg("--http-addr")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(scratch.path().join("data"))
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("GITOPS_REVERSER_LOG_LEVEL", "info,gitops_reverser=debug")
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start gitops-reverser");
        Self { child: Some(child), addr, log_path, _scratch: scratch }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits until the log has a line containing `needle`.
    pub async fn wait_log(&self, needle: &str) {
        super::wait_for(&format!("the operator to log {needle:?}"), Duration::from_secs(60), || async {
            self.logs().contains(needle).then_some(())
        })
        .await
    }

    /// Its `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self._scratch.path().join("data")
    }

    /// The process's peak resident memory in KiB (`VmHWM`), while it runs.
    pub fn peak_memory_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> =
                logs.lines().rev().filter(|l| !l.contains("\"level\":\"DEBUG\"")).take(60).collect();
            eprintln!("--- operator log (last {} lines) ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
