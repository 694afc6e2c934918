//! Running one git process: bounded in time, killed with all its children.
//!
//! In: a prepared `git` command (see `sandbox`), and a future that asks for
//! it to be stopped (a fetch's [`intake`](super::intake) watch). Out: its exit
//! status and output, or `Timeout` / `TooLarge`. git runs in its own process
//! group, so that on timeout, on a stop, or when the caller drops the
//! future, the helpers it started (`ssh`, `git-remote-https`) die with it
//! instead of lingering on a dead connection. Only the first
//! [`MAX_CAPTURED`] bytes of each output are kept: a server may send
//! endless `remote:` lines.

use std::io;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::worker::limits::TooLarge;

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
    /// The stop future answered: the process went past a limit.
    TooLarge(TooLarge),
}

/// Bytes of stdout, and of stderr, kept from one git process; the rest is
/// read and dropped. git's own output (ref lines, porcelain status, errors)
/// is far shorter.
pub(super) const MAX_CAPTURED: usize = 1 << 20;

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

/// Lowers the file size limit of the running process `pid` (and so of the
/// children it starts afterwards) to `bytes`. Called right after spawning:
/// git starts `index-pack` only once the server has answered, so the limit
/// is in place before any pack byte is written, without a `pre_exec` hook.
fn limit_process_file_size(pid: u32, bytes: u64) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: both calls only read or write the structs passed to them; a
    // pid that exited gives ESRCH.
    unsafe {
        if libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        let wanted = (bytes as libc::rlim_t).min(limit.rlim_max);
        if limit.rlim_cur <= wanted {
            return Ok(());
        }
        limit.rlim_cur = wanted;
        if libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) != 0 {
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

/// Runs `command` with null stdin, capturing stdout and stderr, for at most
/// `timeout`, or until `stop` answers (`std::future::pending()`: never).
/// `max_file`: a lower bound than [`MAX_FILE_WRITTEN`] on every file it
/// writes (past it, git gets SIGXFSZ and the file stops there).
pub(super) async fn run(
    mut command: tokio::process::Command,
    op: &str,
    timeout: Duration,
    max_file: Option<u64>,
    stop: impl Future<Output = TooLarge>,
) -> Result<Output, RunError> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.kill_on_drop(true).process_group(0);
    limit_children()?;
    let started = Instant::now();
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    // Declared after `child`, so dropped before it: the group is killed while git
    // is not yet reaped, and its id cannot have been reused (also on a stop).
    let mut group = GroupGuard(child.id());
    if let (Some(bytes), Some(pid)) = (max_file, child.id()) {
        limit_process_file_size(pid, bytes).map_err(|error| {
            RunError::Spawn(io::Error::other(format!("cannot limit the size of files git writes: {error}")))
        })?;
    }
    let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");

    let work = async {
        let (stdout, stderr, status) = tokio::join!(
            read_capped(&mut stdout_pipe, MAX_CAPTURED),
            read_capped(&mut stderr_pipe, MAX_CAPTURED),
            child.wait()
        );
        Ok::<_, io::Error>((status?, stdout?, stderr?))
    };
    let result = tokio::select! {
        result = tokio::time::timeout(timeout, work) => result,
        too_large = stop => {
            let elapsed_ms = started.elapsed().as_millis() as u64;
            tracing::warn!(op, elapsed_ms, %too_large, "git went past a limit; killing its process group");
            return Err(RunError::TooLarge(too_large));
        }
    };
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

/// Reads `pipe` to its end, keeping the first `cap` bytes.
async fn read_capped(pipe: &mut (impl AsyncRead + Unpin), cap: usize) -> io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buffer = vec![0u8; 8192];
    loop {
        let read = pipe.read(&mut buffer).await?;
        if read == 0 {
            return Ok(kept);
        }
        let room = cap.saturating_sub(kept.len()).min(read);
        kept.extend_from_slice(&buffer[..room]);
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
