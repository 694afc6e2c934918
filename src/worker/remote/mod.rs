//! Network operations on one remote repository, through the `git` CLI (gix
//! cannot push).
//!
//! In: a repository URL and [`Credentials`]; for fetch and push, a local bare
//! repository. Out: remote branch tips, fetched refs (`refs/remotes/origin/<b>`),
//! compare-and-swap pushes ([`PushOutcome`]), or a [`RemoteError`] whose
//! [`reason`](RemoteError::reason) is the condition reason to report.
//!
//! Every git process runs in the `sandbox` environment (credentials in 0600
//! files, never in argv); each operation is bounded by one timeout, on which its
//! git processes are killed together with their helpers.
//! A push that creates a branch is only attempted after `ls-remote` has seen
//! the repository: some servers (soft-serve, Gitea with push-to-create)
//! create a repository on push. Other pushes go straight out: their lease
//! says whether the branch moved, and git reports a ref already at our
//! commit (a lost reply) as up to date.

mod askpass;
mod error;
mod intake;
mod leftovers;
mod output;
mod run;
mod sandbox;
#[cfg(test)]
mod tests;
mod url;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tracing::Instrument;

use self::error::{Class, classify, clean};
pub use self::error::{Op, RemoteError};
pub use self::intake::remove_partial_packs;
pub use self::leftovers::remove_stale_sandboxes;
use self::output::PushStatus;
use self::run::{Output, RunError};
use self::sandbox::Sandbox;
use self::url::{RemoteUrl, check_branch, check_oid};
pub use self::url::{check_url, strip_userinfo};
use crate::worker::credentials::Credentials;
use crate::worker::limits::Limits;
#[cfg(test)]
use crate::{api::Reason, worker::credentials::CredentialsError};

/// Packs past which maintenance consolidates them into one: far below the
/// index slots a repository handle has (`worker::repo`), so reads never run
/// out of slots between two maintenances. Above the pushers' cheaper
/// consolidation (`worker::pushers`), which keeps a store that pushes below
/// it; this is for stores that only fetch (standbys).
pub const PACK_LIMIT: u32 = 64;

/// The result of a compare-and-swap push that reached the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The remote branch now points at the local commit.
    Pushed,
    /// The remote branch was not where the caller expected: fetch, rebuild, retry.
    Stale,
    /// The server refused the update (a hook, a protected branch, a size
    /// limit); the message quotes it, cleaned of anything secret.
    Rejected(String),
}

/// One remote repository with its credentials, in a private sandbox directory
/// that is removed on drop.
pub struct Remote {
    url: RemoteUrl,
    credentials: Credentials,
    sandbox: Sandbox,
    timeout: Duration,
    search_path: OsString,
    /// Bounds on what one fetch receives (bytes, objects).
    limits: Limits,
    /// The commit offered in dry-run pushes, made once per remote.
    probe: OnceCell<String>,
}

/// One ref of a push: commit `local` of the bare repository `git_dir` goes
/// to `refs/heads/<branch>` if the remote branch is at `expected` (`None`:
/// if it does not exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefUpdate {
    pub git_dir: PathBuf,
    pub branch: String,
    pub local: String,
    pub expected: Option<String>,
}

impl Remote {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    pub fn new(url: &str, credentials: Credentials) -> Result<Self, RemoteError> {
        let url = url::parse(url).map_err(RemoteError::InvalidConfiguration)?;
        if credentials.transport() != url.transport {
            return Err(RemoteError::InvalidConfiguration(format!(
                "the credentials were read for an {}:// URL, but the URL is {}",
                credentials.transport().as_str(),
                url.display
            )));
        }
        let sandbox = Sandbox::new(&url, &credentials).map_err(|source| RemoteError::Io {
            op: Op::Local,
            url: url.display.clone(),
            source,
        })?;
        Ok(Self {
            url,
            credentials,
            sandbox,
            timeout: Self::DEFAULT_TIMEOUT,
            search_path: sandbox::default_search_path(),
            limits: Limits::default(),
            probe: OnceCell::new(),
        })
    }

    /// Bounds each operation, all its git processes together (default
    /// [`Self::DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds what one fetch may receive (default: [`Limits::default`]).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether the ssh processes of this repository and identity share one
    /// connection (default), or each connects anew.
    pub fn with_shared_ssh_connection(mut self, sharing: bool) -> Self {
        self.sandbox.share_connection(sharing);
        self
    }

    /// The `PATH` in which `git` and `ssh` are looked up (default: the operator's).
    pub fn with_search_path(mut self, path: impl Into<OsString>) -> Self {
        self.search_path = path.into();
        self
    }

    /// Whether `other` reaches the same repository with the same credentials,
    /// so one push may carry branches of both.
    pub fn same_access(&self, other: &Remote) -> bool {
        self.url.for_git == other.url.for_git && self.credentials == other.credentials
    }

    /// The URL without userinfo, as shown in messages.
    pub fn url(&self) -> &str {
        &self.url.display
    }

    /// The bound on each operation, all its git processes together. A caller that
    /// fences pushes (design notes §4) checks its lease margin against this.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Tip of `refs/heads/<branch>` on the remote; `None` if the branch does not exist.
    pub async fn branch_tip(&self, branch: &str) -> Result<Option<String>, RemoteError> {
        self.bounded(Op::LsRemote, self.ls_remote(branch)).await
    }

    /// Proves write access: `ls-remote` (read access, and the repository exists),
    /// then a dry-run push that must get past receive-pack's ref advertisement.
    /// A refusal there means the credentials can read but not write.
    pub async fn verify_write_access(&self, branch: &str) -> Result<(), RemoteError> {
        self.bounded(Op::DryRunPush, self.dry_run_push(branch)).await
    }

    /// Fetches `refs/heads/<branch>` (depth 1) into the bare repository `git_dir` as
    /// `refs/remotes/origin/<branch>`; returns its tip, or `None` (and removes the
    /// stale tracking ref) if the branch does not exist.
    pub async fn fetch(&self, git_dir: &Path, branch: &str) -> Result<Option<String>, RemoteError> {
        self.bounded(Op::Fetch, self.fetch_branch(git_dir, branch, Some("--depth=1"))).await
    }

    /// Deepens a shallow `git_dir` to every commit of the branch made after
    /// `after` (`git fetch --shallow-since`); best effort: a server without
    /// the capability fails it, and the caller makes do with less history.
    pub async fn deepen_since(
        &self,
        git_dir: &Path,
        branch: &str,
        after: std::time::SystemTime,
    ) -> Result<(), RemoteError> {
        let seconds = after.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let since = k8s_openapi::jiff::Timestamp::from_second(i64::try_from(seconds).unwrap_or(i64::MAX))
            .map_err(|e| RemoteError::InvalidConfiguration(format!("a history start out of range: {e}")))?;
        let depth = format!("--shallow-since={since}");
        self.bounded(Op::Fetch, self.fetch_branch(git_dir, branch, Some(&depth))).await.map(drop)
    }

    /// [`Self::fetch`] of every commit since what `git_dir` already has, so
    /// that whether the tip contains a local commit can be told exactly.
    pub async fn fetch_full(&self, git_dir: &Path, branch: &str) -> Result<Option<String>, RemoteError> {
        self.bounded(Op::Fetch, self.fetch_branch(git_dir, branch, None)).await
    }

    /// Fetches several branches in one `git fetch` (one connection, one
    /// negotiation, one pack), shallow (`--depth=1`) or with every commit
    /// since what `git_dir` has. Returns each branch's tip, in order. Fails
    /// as a whole: a branch the remote lacks fails it, and so does a pack
    /// past the size limit; the caller then fetches each on its own.
    pub async fn fetch_branches(
        &self,
        git_dir: &Path,
        branches: &[&str],
        shallow: bool,
    ) -> Result<Vec<String>, RemoteError> {
        self.bounded(Op::Fetch, self.fetch_many(git_dir, branches, shallow.then_some("--depth=1"))).await
    }

    /// Compare-and-swap push of commit `local` (in `git_dir`) to `refs/heads/<branch>`,
    /// expecting the remote branch at `expected` (`None`: it must not exist yet).
    /// A wrong expectation gives `Ok(PushOutcome::Stale)` and changes nothing.
    pub async fn push(
        &self,
        git_dir: &Path,
        local: &str,
        branch: &str,
        expected: Option<&str>,
    ) -> Result<PushOutcome, RemoteError> {
        self.push_until(Instant::now() + self.timeout, git_dir, local, branch, expected).await
    }

    /// [`Self::push`] that must be over by `deadline`, set by the lease
    /// fence: everything is killed then, and the upload does not even start
    /// when the deadline passed while this process was not running (frozen).
    pub async fn push_until(
        &self,
        deadline: Instant,
        git_dir: &Path,
        local: &str,
        branch: &str,
        expected: Option<&str>,
    ) -> Result<PushOutcome, RemoteError> {
        let update = RefUpdate {
            git_dir: git_dir.to_owned(),
            branch: branch.to_owned(),
            local: local.to_owned(),
            expected: expected.map(str::to_owned),
        };
        let mut outcomes = self.push_refs_until(deadline, std::slice::from_ref(&update)).await?;
        outcomes.pop().expect("one outcome per ref")
    }

    /// Compare-and-swap pushes of several branches in one `git push`: one
    /// connection and one pack for all of them. Each ref carries its own lease
    /// and the push is not atomic, so a stale ref holds no other back. The
    /// outer error is one that failed the whole push (the connection, the
    /// deadline); otherwise there is one outcome per update, in order.
    pub async fn push_refs_until(
        &self,
        deadline: Instant,
        updates: &[RefUpdate],
    ) -> Result<Vec<Result<PushOutcome, RemoteError>>, RemoteError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let work = self.push_refs(updates, deadline);
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(result) => result,
            Err(_) => Err(RemoteError::Timeout { op: Op::Push, url: self.url.display.clone(), after: left }),
        }
    }

    /// Runs `work` within the timeout; dropping it on expiry kills its git processes.
    async fn bounded<T>(
        &self,
        op: Op,
        work: impl Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        let span = tracing::debug_span!("remote", %op, url = %self.url.display);
        match tokio::time::timeout(self.timeout, work).instrument(span).await {
            Ok(result) => result,
            Err(_) => Err(RemoteError::Timeout { op, url: self.url.display.clone(), after: self.timeout }),
        }
    }

    async fn ls_remote(&self, branch: &str) -> Result<Option<String>, RemoteError> {
        let refname = branch_ref(branch)?;
        let args = args(["ls-remote", "--", &self.url.for_git, &refname]);
        let output = self.git(Op::LsRemote, args).await?;
        if !output.success {
            return Err(self.failure(Op::LsRemote, &output.stderr));
        }
        Ok(output::ls_remote_tip(&output.stdout, &refname))
    }

    async fn dry_run_push(&self, branch: &str) -> Result<(), RemoteError> {
        let refname = branch_ref(branch)?;
        let tip = self.ls_remote(branch).await?;
        let probe = self.probe_commit().await?;
        let output = self
            .git(
                Op::DryRunPush,
                in_repo(
                    &self.probe_dir(),
                    [
                        "push",
                        "--dry-run",
                        "--porcelain",
                        "--no-verify",
                        &format!("--force-with-lease={refname}:{}", tip.as_deref().unwrap_or("")),
                        "--",
                        &self.url.for_git,
                        &format!("{probe}:{refname}"),
                    ],
                ),
            )
            .await?;
        // A status line means git read the advertisement, i.e. the server let us into
        // receive-pack. Some servers (soft-serve) then fail the idle session: ignore.
        if output::push_status(&output.stdout, &refname).is_some() {
            return Ok(());
        }
        Err(match self.failure(Op::DryRunPush, &output.stderr) {
            RemoteError::AuthenticationFailed { op, url, detail, .. }
            | RemoteError::RepositoryNotFound { op, url, detail } => {
                RemoteError::NoWriteAccess { op, url, detail, hint: error::write_hint(&self.credentials) }
            }
            other => other,
        })
    }

    /// `depth`: how far back (`--depth=1`, `--shallow-since=…`); `None`:
    /// every commit since what `git_dir` has.
    async fn fetch_branch(
        &self,
        git_dir: &Path,
        branch: &str,
        depth: Option<&str>,
    ) -> Result<Option<String>, RemoteError> {
        let refname = branch_ref(branch)?;
        let tracking = format!("refs/remotes/origin/{branch}");
        let target = format!("+{refname}:{tracking}");
        let output = self.receive(git_dir, in_repo(git_dir, self.fetch_args(depth, &[target]))).await?;
        if !output.success {
            if output.stderr.contains("couldn't find remote ref") {
                let delete = self.git(Op::Local, in_repo(git_dir, ["update-ref", "-d", &tracking])).await?;
                if !delete.success {
                    return Err(self.failure(Op::Local, &delete.stderr));
                }
                return Ok(None);
            }
            return Err(self.failure(Op::Fetch, &output.stderr));
        }
        let parsed = self
            .git(
                Op::Local,
                in_repo(git_dir, ["rev-parse", "--verify", "--quiet", &format!("{tracking}^{{commit}}")]),
            )
            .await?;
        if !parsed.success {
            return Err(self.failure(Op::Local, &parsed.stderr));
        }
        Ok(Some(parsed.stdout.trim().to_owned()))
    }

    /// `git fetch` of `refspecs` from this remote, `depth` as for
    /// [`Self::fetch_branch`]; every object through one pack file, which
    /// `intake` watches.
    fn fetch_args<'a>(&'a self, depth: Option<&'a str>, refspecs: &'a [String]) -> Vec<&'a str> {
        let mut fetch = intake::ONE_PACK.to_vec();
        fetch.push("fetch");
        fetch.extend(depth);
        fetch.extend(["--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", "--quiet", "--"]);
        fetch.push(&self.url.for_git);
        fetch.extend(refspecs.iter().map(String::as_str));
        fetch
    }

    async fn fetch_many(
        &self,
        git_dir: &Path,
        branches: &[&str],
        depth: Option<&str>,
    ) -> Result<Vec<String>, RemoteError> {
        let mut refspecs = Vec::with_capacity(branches.len());
        let mut tracking = Vec::with_capacity(branches.len());
        for branch in branches {
            refspecs.push(format!("+{}:refs/remotes/origin/{branch}", branch_ref(branch)?));
            tracking.push(format!("refs/remotes/origin/{branch}^{{commit}}"));
        }
        let output = self.receive(git_dir, in_repo(git_dir, self.fetch_args(depth, &refspecs))).await?;
        if !output.success {
            return Err(self.failure(Op::Fetch, &output.stderr));
        }
        let mut parse = vec!["rev-parse"];
        parse.extend(tracking.iter().map(String::as_str));
        let parsed = self.git(Op::Local, in_repo(git_dir, parse)).await?;
        let tips: Vec<String> = parsed.stdout.lines().map(str::to_owned).collect();
        if !parsed.success || tips.len() != branches.len() {
            return Err(self.failure(Op::Local, &parsed.stderr));
        }
        Ok(tips)
    }

    async fn push_refs(
        &self,
        updates: &[RefUpdate],
        deadline: Instant,
    ) -> Result<Vec<Result<PushOutcome, RemoteError>>, RemoteError> {
        let mut refnames = Vec::with_capacity(updates.len());
        for update in updates {
            refnames.push(branch_ref(&update.branch)?);
            check_oid("local commit", &update.local).map_err(RemoteError::InvalidConfiguration)?;
            if let Some(expected) = &update.expected {
                check_oid("expected commit", expected).map_err(RemoteError::InvalidConfiguration)?;
            }
        }
        let Some(first) = updates.first() else { return Ok(Vec::new()) };
        if updates.iter().any(|u| u.git_dir != first.git_dir) {
            return Err(RemoteError::InvalidConfiguration(
                "one push carries refs of one local store; these came from several".into(),
            ));
        }
        // Some servers (soft-serve, Gitea) create a repository on push: a
        // branch is only created in a repository ls-remote has seen. Any
        // other push carries a lease on an existing tip, which fails there.
        if let Some(creating) = updates.iter().find(|u| u.expected.is_none()) {
            self.ls_remote(&creating.branch).await?;
        }
        if Instant::now() >= deadline {
            return Err(RemoteError::Timeout {
                op: Op::Push,
                url: self.url.display.clone(),
                after: self.timeout,
            });
        }
        let mut push: Vec<String> = vec!["push".into(), "--porcelain".into(), "--no-verify".into()];
        for (update, refname) in updates.iter().zip(&refnames) {
            push.push(format!("--force-with-lease={refname}:{}", update.expected.as_deref().unwrap_or("")));
        }
        push.extend(["--".into(), self.url.for_git.clone()]);
        for (update, refname) in updates.iter().zip(&refnames) {
            push.push(format!("{}:{refname}", update.local));
        }
        let output = self.git(Op::Push, in_repo(&first.git_dir, push.iter().map(String::as_str))).await?;
        let mut outcomes = Vec::with_capacity(updates.len());
        for (update, refname) in updates.iter().zip(&refnames) {
            outcomes.push(self.ref_outcome(&output, update, refname).await);
        }
        Ok(outcomes)
    }

    /// What one ref's status line says about its update.
    async fn ref_outcome(
        &self,
        output: &Output,
        update: &RefUpdate,
        refname: &str,
    ) -> Result<PushOutcome, RemoteError> {
        match output::push_status(&output.stdout, refname) {
            Some(PushStatus::Updated) => Ok(PushOutcome::Pushed),
            Some(PushStatus::Stale) => Ok(PushOutcome::Stale),
            Some(PushStatus::RemoteRejected(summary)) => {
                // The server re-checks the old value when it updates the ref; if the
                // branch moved meanwhile, that is a lost race, not a failure.
                if let Ok(tip) = self.ls_remote(&update.branch).await
                    && tip != update.expected
                    && tip.as_deref() != Some(update.local.as_str())
                {
                    return Ok(PushOutcome::Stale);
                }
                let refused = self.failure(Op::Push, &format!("{}\n{summary}", output.stderr));
                Ok(PushOutcome::Rejected(refused.to_string()))
            }
            Some(PushStatus::Rejected(summary)) => {
                Err(self.failure(Op::Push, &format!("{}\n{summary}", output.stderr)))
            }
            None => Err(self.failure(Op::Push, &output.stderr)),
        }
    }

    fn probe_dir(&self) -> std::path::PathBuf {
        self.sandbox.path().join("probe.git")
    }

    /// An empty-tree commit in the sandbox's own bare repository, for dry runs.
    async fn probe_commit(&self) -> Result<&str, RemoteError> {
        let commit = self
            .probe
            .get_or_try_init(|| async {
                let dir = self.probe_dir();
                if !dir.exists() {
                    let mut init = args(["init", "--bare", "--quiet", "--"]);
                    init.push(dir.clone().into());
                    self.local_ok(init).await?;
                }
                let tree =
                    self.local_ok(in_repo(&dir, ["hash-object", "-t", "tree", "-w", "--stdin"])).await?;
                let commit = in_repo(
                    &dir,
                    [
                        "-c",
                        "user.name=gitops-reverser",
                        "-c",
                        "user.email=gitops-reverser@localhost",
                        "commit-tree",
                        "-m",
                        "gitops-reverser write-access probe (dry run, never pushed)",
                        tree.trim(),
                    ],
                );
                Ok::<_, RemoteError>(self.local_ok(commit).await?.trim().to_owned())
            })
            .await?;
        Ok(commit)
    }

    /// Packs loose objects once more than `loose_threshold` exist, and
    /// consolidates the packs once more than [`PACK_LIMIT`] exist (every
    /// fetch keeps its own pack). The sandbox turns git's automatic gc off,
    /// so the worker asks for it here. Unreachable objects younger than two
    /// weeks (git's default grace) are kept, which covers commits not yet
    /// pushed.
    pub async fn maintain(&self, git_dir: &Path, loose_threshold: u32) -> Result<(), RemoteError> {
        let threshold = format!("gc.auto={loose_threshold}");
        let packs = format!("gc.autoPackLimit={PACK_LIMIT}");
        let args = in_repo(
            git_dir,
            ["-c", &threshold, "-c", &packs, "-c", "gc.autoDetach=false", "gc", "--auto", "--quiet"],
        );
        self.local_ok(args).await.map(drop)
    }

    /// Merges the smaller packs into fewer (`repack --geometric=2`), so
    /// each pack holds at least twice the objects of all smaller ones
    /// together: a worker writes a pack before each push, and lookups in
    /// git and gix cost one index per pack. Only small packs are rewritten,
    /// and every object is kept, reachable or not (commits not pushed yet).
    pub async fn consolidate_packs(&self, git_dir: &Path) -> Result<(), RemoteError> {
        let args = in_repo(
            git_dir,
            ["-c", "repack.writeBitmaps=false", "repack", "-d", "-l", "-q", "--geometric=2"],
        );
        self.local_ok(args).await.map(drop)
    }

    async fn local_ok(&self, args: Vec<OsString>) -> Result<String, RemoteError> {
        let output = self.git(Op::Local, args).await?;
        if !output.success {
            return Err(self.failure(Op::Local, &output.stderr));
        }
        Ok(output.stdout)
    }

    /// Runs git in the sandbox; only spawning and the timeout are errors here.
    async fn git(&self, op: Op, args: Vec<OsString>) -> Result<Output, RemoteError> {
        self.git_until(op, args, None, std::future::pending()).await
    }

    /// Runs a fetch into `git_dir` while `intake` watches what it receives,
    /// with no file past the size limit; past a limit git is killed. A fetch
    /// that did not finish leaves a partial pack, removed here so no
    /// tenant's server fills the volume.
    async fn receive(&self, git_dir: &Path, args: Vec<OsString>) -> Result<Output, RemoteError> {
        let pack_dir = intake::pack_dir(git_dir);
        let watch = intake::watch(pack_dir.clone(), self.limits);
        let mut result = self.git_until(Op::Fetch, args, Some(self.limits.fetch_size), watch).await;
        if !result.as_ref().is_ok_and(|output| output.success) {
            let limits = self.limits;
            let (cut_off, cleaned) = tokio::task::spawn_blocking(move || {
                (intake::cut_off(&pack_dir, &limits), intake::remove_partial(&pack_dir))
            })
            .await
            .unwrap_or_else(|join| (None, Err(std::io::Error::other(join.to_string()))));
            // The kernel stopped the pack at the limit between two looks.
            if let (Ok(_), Some(limit)) = (&result, cut_off) {
                result = Err(RemoteError::TooLarge { op: Op::Fetch, url: self.url.display.clone(), limit });
            }
            match cleaned {
                Ok(0) => {}
                Ok(files) => tracing::debug!(files, "removed the partial pack of a failed fetch"),
                Err(error) => tracing::warn!(%error, "cannot remove the partial pack of a failed fetch"),
            }
        }
        result
    }

    /// [`Self::git`] that is killed when `stop` answers.
    async fn git_until(
        &self,
        op: Op,
        args: Vec<OsString>,
        max_file: Option<u64>,
        stop: impl Future<Output = crate::worker::limits::TooLarge>,
    ) -> Result<Output, RemoteError> {
        let mut command = self.sandbox.command(&self.search_path, self.timeout);
        command.args(args);
        let url = || self.url.display.clone();
        run::run(command, &op.to_string(), self.timeout, max_file, stop).await.map_err(|error| match error {
            RunError::Timeout => RemoteError::Timeout { op, url: url(), after: self.timeout },
            RunError::Spawn(source) => RemoteError::Io { op, url: url(), source },
            RunError::TooLarge(limit) => RemoteError::TooLarge { op, url: url(), limit },
        })
    }

    /// The error for a failed run, from git's stderr.
    fn failure(&self, op: Op, stderr: &str) -> RemoteError {
        let url = self.url.display.clone();
        let detail = clean(stderr, &self.credentials, self.sandbox.path());
        let credentials = &self.credentials;
        match classify(stderr) {
            Class::HostKey => {
                RemoteError::HostKeyRejected { op, url, detail, hint: error::host_key_hint(credentials) }
            }
            Class::Certificate => RemoteError::UntrustedCertificate {
                op,
                url,
                detail,
                hint: error::certificate_hint(credentials),
            },
            Class::NotFound => RemoteError::RepositoryNotFound { op, url, detail },
            Class::Auth => {
                RemoteError::AuthenticationFailed { op, url, detail, hint: error::auth_hint(credentials) }
            }
            Class::Network => RemoteError::Network { op, url, detail },
            Class::Other => RemoteError::Git { op, url, detail },
        }
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.url.display)
            .field("credentials", &self.credentials.source())
            .field("sandbox", &self.sandbox.path())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn branch_ref(branch: &str) -> Result<String, RemoteError> {
    check_branch(branch).map_err(RemoteError::InvalidConfiguration)?;
    Ok(format!("refs/heads/{branch}"))
}

fn args<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<OsString> {
    args.into_iter().map(|arg| OsStr::new(arg).to_owned()).collect()
}

/// `--git-dir=<path>` followed by `rest`; one argument, so no path can pose as an option.
fn in_repo<'a>(git_dir: &Path, rest: impl IntoIterator<Item = &'a str>) -> Vec<OsString> {
    let mut arg = OsString::from("--git-dir=");
    arg.push(git_dir);
    std::iter::once(arg).chain(args(rest)).collect()
}
