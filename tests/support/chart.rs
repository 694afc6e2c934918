//! The Helm chart and the tools that check it (helm, kubeconform, kubectl),
//! found where `tests/env/install` links them (`GITENV_BIN`). Every command
//! runs with a deadline and the environment's admin KUBECONFIG.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Once, OnceLock, mpsc};
use std::time::Duration;

/// The Kubernetes version of the local API server.
pub const KUBE_VERSION: &str = "1.35.4";
/// No command of the chart tests takes this long.
pub const DEADLINE: Duration = Duration::from_secs(120);
/// The release rendered when a test does not care about the name.
pub const RELEASE: &str = "gitops-reverser";

pub struct Tools {
    pub helm: PathBuf,
    pub kubeconform: PathBuf,
    pub kubectl: PathBuf,
    /// The ServiceMonitor and PrometheusRule CRDs.
    pub monitoring_crds: PathBuf,
}

/// Brings the environment up (it installs the tools) and finds them.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let env = super::env();
        let bin = Path::new(env.var("GITENV_BIN"));
        let tools = Tools {
            helm: bin.join("helm"),
            kubeconform: bin.join("kubeconform"),
            kubectl: env.kubectl(),
            monitoring_crds: bin.parent().unwrap().join("monitoring-crds"),
        };
        for path in [&tools.helm, &tools.kubeconform, &tools.monitoring_crds] {
            assert!(path.exists(), "{} is missing; run tests/env/install", path.display());
        }
        tools
    })
}

/// `charts/gitops-reverser`.
pub fn dir() -> PathBuf {
    super::repo_root().join("charts/gitops-reverser")
}

/// None (the default values), then every `ci/*.yaml` of the chart.
pub fn values_files() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir().join("ci"))
        .expect("charts/gitops-reverser/ci")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "charts/gitops-reverser/ci has no values files");
    std::iter::once(None).chain(files.into_iter().map(Some)).collect()
}

/// `helm template` of the chart into the namespace `gitops-reverser`.
pub fn render(tools: &Tools, values: Option<&Path>, extra: &[&str]) -> String {
    render_in(tools, "gitops-reverser", values, extra)
}

pub fn render_in(tools: &Tools, namespace: &str, values: Option<&Path>, extra: &[&str]) -> String {
    render_release(tools, RELEASE, namespace, values, extra)
}

pub fn render_release(
    tools: &Tools,
    release: &str,
    namespace: &str,
    values: Option<&Path>,
    extra: &[&str],
) -> String {
    let mut cmd = Command::new(&tools.helm);
    cmd.args(["template", release])
        .arg(dir())
        .args(["--namespace", namespace, "--kube-version", KUBE_VERSION])
        .args(extra);
    if let Some(file) = values {
        cmd.arg("--values").arg(file);
    }
    String::from_utf8(run_ok(&mut cmd, None).stdout).unwrap()
}

/// Runs `cmd` (with `stdin`), killing it after `DEADLINE`.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    let description = format!("{cmd:?}");
    let mut child = cmd
        .env("KUBECONFIG", super::env().var("KUBECONFIG"))
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        std::thread::spawn(move || pipe.write_all(&bytes));
    }
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match finished.recv_timeout(DEADLINE) {
        Ok(output) => output.unwrap_or_else(|e| panic!("{description}: {e}")),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("{description} did not finish within {DEADLINE:?}");
        }
    }
}

/// `run`, and panics with its output unless it succeeded.
pub fn run_ok(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    let description = format!("{cmd:?}");
    let out = run(cmd, stdin);
    assert!(
        out.status.success(),
        "{description} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Applies the ServiceMonitor and PrometheusRule CRDs to the API server and
/// waits until they are served.
pub fn install_monitoring_crds(tools: &Tools) {
    static DONE: Once = Once::new();
    DONE.call_once(|| {
        // A folder reached through a symlink is not walked by kubectl: name the files.
        let mut cmd = Command::new(&tools.kubectl);
        cmd.args(["apply", "--server-side", "--force-conflicts"]);
        for entry in std::fs::read_dir(&tools.monitoring_crds).unwrap() {
            cmd.arg("-f").arg(entry.unwrap().path());
        }
        run_ok(&mut cmd, None);
        run_ok(
            Command::new(&tools.kubectl).args([
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/servicemonitors.monitoring.coreos.com",
                "crd/prometheusrules.monitoring.coreos.com",
            ]),
            None,
        );
    });
}

/// A copy of the chart whose `dashboards/` holds exactly `files`.
pub fn copy_with_dashboards(files: &[(&str, &str)]) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let (source, target) = (entry.path(), to.join(entry.file_name()));
            if entry.file_name() == "dashboards" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                copy(&source, &target);
            } else {
                std::fs::copy(&source, &target).unwrap();
            }
        }
    }
    let temp = tempfile::tempdir().unwrap();
    copy(&dir(), temp.path());
    let dashboards = temp.path().join("dashboards");
    std::fs::create_dir(&dashboards).unwrap();
    for (name, text) in files {
        std::fs::write(dashboards.join(name), text).unwrap();
    }
    temp
}
