//! Running one git process: bounded in time, killed with all its children.
//!
//! In: a prepared `git` command (see `sandbox`). Out: its exit status and output,
//! or `Timeout`. git runs in its own process group, so that on timeout or when the
//! caller drops the future, the helpers it started (`ssh`, `git-remote-https`)
//! die with it instead of lingering on a dead connection.

use std::io;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// What a finished git process produced.
#[derive(Debug)]
pub(super) struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug)]
pub(super) enum RunError {
    Spawn(io::Error),
    Timeout,
}

/// Largest file a git process may write (a pack, an index). The data volume
/// is shared by every branch of the replica (2 Gi in the chart): one
/// tenant's server must not fill it with one fetch. Past it git gets SIGXFSZ.
pub(super) const MAX_FILE_WRITTEN: u64 = 1 << 30;

/// Makes every file this process and its children write stop at `bytes`
/// (the soft limit; an already lower one stays).
///
/// Set on the operator itself, once, rather than in each child: a
/// `pre_exec` hook makes std `fork()` the whole operator for every git
/// command instead of `posix_spawn`, and copying the page tables of a
/// replica with 1 GiB resident took 30 % of its CPU under load. Children
/// inherit the limit; the operator itself never writes a file that large.
pub(super) fn limit_file_size(bytes: u64) -> io::Result<()> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: both calls only read or write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        let wanted = (bytes as libc::rlim_t).min(limit.rlim_max);
        if limit.rlim_cur <= wanted {
            return Ok(());
        }
        limit.rlim_cur = wanted;
        if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// [`limit_file_size`] at [`MAX_FILE_WRITTEN`], done before the first git runs.
fn limit_children() -> Result<(), RunError> {
    static LIMITED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LIMITED.get_or_init(|| limit_file_size(MAX_FILE_WRITTEN).map_err(|e| e.to_string())).clone().map_err(
        |e| RunError::Spawn(io::Error::other(format!("cannot limit the size of files git writes: {e}"))),
    )
}

/// Runs `command` with null stdin, capturing stdout and stderr, for at most `timeout`.
pub(super) async fn run(
    mut command: tokio::process::Command,
    op: &str,
    timeout: Duration,
) -> Result<Output, RunError> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.kill_on_drop(true).process_group(0);
    limit_children()?;
    let started = Instant::now();
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    // Declared after `child`, so dropped before it: the group is killed while git
    // is not yet reaped, and its id cannot have been reused.
    let mut group = GroupGuard(child.id());
    let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");

    let work = async {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let (out, err, status) = tokio::join!(
            stdout_pipe.read_to_end(&mut stdout),
            stderr_pipe.read_to_end(&mut stderr),
            child.wait()
        );
        out?;
        err?;
        Ok::<_, io::Error>((status?, stdout, stderr))
    };
    let result = tokio::time::timeout(timeout, work).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(Ok((status, stdout, stderr))) => {
            group.0 = None; // exited and reaped: nothing left to kill
            tracing::debug!(op, elapsed_ms, code = status.code(), "git finished");
            Ok(Output {
                success: status.success(),
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            })
        }
        Ok(Err(error)) => Err(RunError::Spawn(error)),
        Err(_) => {
            tracing::warn!(op, elapsed_ms, "git timed out; killing its process group");
            Err(RunError::Timeout)
        }
    }
}

/// Kills the process group on drop unless disarmed (`None`).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // std has no killpg, and Cargo.toml has no libc; `kill` ships with every
            // image that ships git. Negative pid = the whole group.
            let killed = std::process::Command::new("kill")
                .args(["-9", "--", &format!("-{pgid}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if let Err(error) = killed {
                tracing::warn!(pgid, %error, "could not kill git's process group");
            }
        }
    }
}
