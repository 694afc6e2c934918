//! One `git fetch` per repository store for every branch waiting to fetch.
//!
//! A fetch runs under the store's lock ([`store::exclusive`]). At a handover
//! a replica takes over many branches of one repository at once, and each
//! fetched in turn: in `rolling-update` the eight takeovers of one replica
//! ended one at a time, 0.3–0.5 s apart, 3.8 s for the last. Here a branch
//! queues its fetch, and whoever takes the lock fetches every waiting branch
//! of the same remote and depth in one `git fetch` and answers each. A batch
//! that fails for one branch's sake (the remote lacks it, or their pack
//! together passes the size limit) is fetched again branch by branch, so one
//! branch's trouble never becomes another's; a failure of the remote itself
//! (network, credentials, timeout) answers every branch of the batch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::oneshot;

use super::remote::{Remote, RemoteError};
use super::store;

/// How much history a fetch brings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// The tip commit only (`--depth=1`).
    Tip,
    /// Every commit since what the store has.
    Full,
}

/// A branch's tip (`None`: the remote has no such branch), or why not.
pub type Answer = Result<Option<String>, Arc<RemoteError>>;

struct Waiting {
    remote: Arc<Remote>,
    branch: String,
    depth: Depth,
    reply: oneshot::Sender<Answer>,
}

static QUEUES: LazyLock<Mutex<HashMap<PathBuf, Vec<Waiting>>>> = LazyLock::new(Mutex::default);

/// `git fetch` processes the batches ran, in this process (for tests).
static RUNS: AtomicU64 = AtomicU64::new(0);

/// `git fetch` runs of batches so far in this process.
pub fn runs() -> u64 {
    RUNS.load(Ordering::Relaxed)
}

/// Fetches `branch` of `remote` into the store at `dir`, together with
/// whatever else is waiting there.
pub async fn fetch(dir: &Path, remote: &Arc<Remote>, branch: &str, depth: Depth) -> Answer {
    loop {
        let (reply, mut answer) = oneshot::channel();
        let waiting = Waiting { remote: remote.clone(), branch: branch.to_owned(), depth, reply };
        queues().entry(dir.to_owned()).or_default().push(waiting);
        let guard = tokio::select! {
            biased;
            answered = &mut answer => match answered {
                Ok(answer) => return answer,
                // The holder that took it was stopped mid-way: queue again.
                Err(_) => continue,
            },
            guard = store::exclusive(dir) => guard,
        };
        let batch = queues().remove(dir).unwrap_or_default();
        run(dir, batch).await;
        drop(guard);
        // Answered by this run, or by an earlier holder's.
        if let Ok(answer) = answer.await {
            return answer;
        }
    }
}

fn queues() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Vec<Waiting>>> {
    QUEUES.lock().expect("the fetch queues are never poisoned")
}

/// Fetches every request of `batch` into `dir` (the store's lock is held).
async fn run(dir: &Path, mut batch: Vec<Waiting>) {
    batch.retain(|waiting| !waiting.reply.is_closed());
    while let Some(first) = batch.first() {
        let (remote, depth) = (first.remote.clone(), first.depth);
        let (group, rest): (Vec<Waiting>, Vec<Waiting>) =
            batch.into_iter().partition(|w| w.depth == depth && w.remote.same_access(&remote));
        batch = rest;
        fetch_group(dir, &remote, depth, group).await;
    }
}

async fn fetch_group(dir: &Path, remote: &Remote, depth: Depth, group: Vec<Waiting>) {
    let mut branches: Vec<&str> = group.iter().map(|w| w.branch.as_str()).collect();
    branches.sort_unstable();
    branches.dedup();
    if branches.len() > 1 {
        RUNS.fetch_add(1, Ordering::Relaxed);
        match remote.fetch_branches(dir, &branches, depth == Depth::Tip).await {
            Ok(tips) => {
                let tips: HashMap<&str, String> = branches.iter().copied().zip(tips).collect();
                let answers: Vec<Answer> =
                    group.iter().map(|w| Ok(tips.get(w.branch.as_str()).cloned())).collect();
                answer_each(group, answers);
                return;
            }
            Err(RemoteError::Git { .. } | RemoteError::TooLarge { .. }) => {}
            Err(error) => {
                let error = Arc::new(error);
                let answers = group.iter().map(|_| Err(error.clone())).collect();
                answer_each(group, answers);
                return;
            }
        }
    }
    for waiting in group {
        RUNS.fetch_add(1, Ordering::Relaxed);
        let tip = match depth {
            Depth::Tip => remote.fetch(dir, &waiting.branch).await,
            Depth::Full => remote.fetch_full(dir, &waiting.branch).await,
        };
        let _ = waiting.reply.send(tip.map_err(Arc::new));
    }
}

fn answer_each(group: Vec<Waiting>, answers: Vec<Answer>) {
    for (waiting, answer) in group.into_iter().zip(answers) {
        let _ = waiting.reply.send(answer);
    }
}
