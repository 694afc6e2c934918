//! One push at a time per (replica, repository), carrying every branch that
//! is due.
//!
//! Branch workers of one repository send their pushes here instead of each
//! running its own `git push`. While one push of the repository is in
//! flight, the others wait, and the next push takes all of them: one
//! connection, one pack and one receive-pack run at the server for many
//! branches, so a server that manages a few pushes per second still serves
//! hundreds of branches. Each ref keeps its own lease, so one stale branch
//! holds no other back.
//!
//! A push that is due opens a round: the other branches of the repository
//! hear of it ([`Pushers::rounds`]) and join it with what they committed,
//! even before their own interval is up. What is committed while a push
//! runs then waits for the next round, so a replica pushes a repository
//! about once per interval, and a change waits for at most one interval
//! and one push (not for the pushes of other branches queued before it).
//!
//! A push still takes one of the replica's [`PushSlots`] and passes each
//! branch's fence before git runs; a branch whose fence fails is answered
//! `Fenced` and left out. The task of a repository ends after a minute
//! without pushes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::core::PushReply;
use super::push_slots::{PushEnd, PushSlots};
use super::remote::{PushOutcome, RefUpdate, Remote, RemoteError};
use super::repo::{HeldObjects, write_held};
use crate::shard::Fence;

/// Refs one push carries at most. Each ref's repository joins the push as
/// an alternate object store, and git looks every object up in each loose
/// store in turn: with 100 stores a push of 35,000 objects made 6 million
/// failing `openat` calls and took 8–18 s; 16 keep a push near 0.6 s.
pub const MAX_REFS_PER_PUSH: usize = 128;
/// A repository's task ends after this long without a push.
const IDLE: Duration = Duration::from_secs(60);
/// How long a push that opens a round on an idle repository waits for the
/// branches that join it: they only copy what they hold and hand it over.
/// A branch that misses it goes out in a push of its own right after.
const ROUND_GATHER: Duration = Duration::from_millis(25);

/// The replica's pushers: one task per repository, created on first use.
#[derive(Clone, Debug)]
pub struct Pushers {
    slots: PushSlots,
    repositories: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Request>>>>,
    rounds: Rounds,
}

/// Per repository, a counter that moves whenever a push of it opens a round.
type Rounds = Arc<Mutex<HashMap<String, watch::Sender<u64>>>>;

/// One branch's push.
#[derive(Debug)]
pub struct PushRequest {
    /// The branch worker's remote: its URL and credentials.
    pub remote: Arc<Remote>,
    pub update: RefUpdate,
    /// The branch's shard fence, checked right before git runs.
    pub fence: Fence,
    /// What the branch committed that is not on disk yet: the push writes
    /// it, with the other branches' objects, as one pack.
    pub objects: Arc<HeldObjects>,
    /// The branch joins a round another branch opened: its push opens none.
    pub joins_round: bool,
}

#[derive(Debug)]
struct Request {
    push: PushRequest,
    reply: oneshot::Sender<PushReply>,
    /// When it was handed over, for the log of how long pushes wait.
    queued_at: Instant,
}

impl Pushers {
    /// At most `max_concurrent` pushes (of all repositories) run at once.
    pub fn new(max_concurrent: usize) -> Self {
        Self { slots: PushSlots::new(max_concurrent), repositories: Arc::default(), rounds: Arc::default() }
    }

    /// Changes whenever a push of `repository` (its normalised URL) opens a
    /// round: a branch with commits that waits for its interval joins it.
    pub fn rounds(&self, repository: &str) -> watch::Receiver<u64> {
        round_of(&self.rounds, repository).subscribe()
    }

    /// Pushes one branch of `repository` (its normalised URL), together with
    /// whatever else of that repository is waiting.
    pub async fn push(&self, repository: &str, push: PushRequest) -> PushReply {
        let (reply, answer) = oneshot::channel();
        self.enqueue(repository, Request { push, reply, queued_at: Instant::now() });
        answer.await.unwrap_or_else(|_| PushReply::Failed {
            reason: crate::api::Reason::GitOperationFailed,
            message: "the repository's push task ended before it answered".into(),
        })
    }

    fn enqueue(&self, repository: &str, request: Request) {
        // Sends happen under the lock, so a task that closes its intake
        // under the lock can never strand a request.
        let mut repositories = self.repositories.lock().expect("pushers lock");
        let request = match repositories.get(repository) {
            Some(sender) => match sender.send(request) {
                Ok(()) => return,
                Err(mpsc::error::SendError(request)) => request,
            },
            None => request,
        };
        let (sender, intake) = mpsc::unbounded_channel();
        sender.send(request).expect("the receiver is alive");
        repositories.insert(repository.to_owned(), sender);
        let (slots, registry, key) = (self.slots.clone(), self.repositories.clone(), repository.to_owned());
        let round = Round { sender: round_of(&self.rounds, repository), rounds: self.rounds.clone() };
        tokio::spawn(serve(intake, slots, registry, key, round));
    }
}

fn round_of(rounds: &Rounds, repository: &str) -> watch::Sender<u64> {
    let mut rounds = rounds.lock().expect("rounds lock");
    rounds.entry(repository.to_owned()).or_insert_with(|| watch::channel(0).0).clone()
}

/// The rounds of one repository's task.
struct Round {
    sender: watch::Sender<u64>,
    rounds: Rounds,
}

impl Round {
    fn open(&self) {
        self.sender.send_modify(|round| *round = round.wrapping_add(1));
    }

    /// The task ends: forget the repository unless a branch still listens.
    fn end(self, repository: &str) {
        let mut rounds = self.rounds.lock().expect("rounds lock");
        if self.sender.receiver_count() == 0 {
            rounds.remove(repository);
        }
    }
}

async fn serve(
    mut intake: mpsc::UnboundedReceiver<Request>,
    slots: PushSlots,
    registry: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Request>>>>,
    repository: String,
    round: Round,
) {
    let mut waiting: VecDeque<Request> = VecDeque::new();
    let mut refs = RefLimit::default();
    let consolidating = Arc::new(AtomicBool::new(false));
    loop {
        if waiting.is_empty() {
            match tokio::time::timeout(IDLE, intake.recv()).await {
                Ok(Some(request)) => {
                    let opens = !request.push.joins_round;
                    waiting.push_back(request);
                    if opens {
                        round.open();
                        tokio::time::sleep(ROUND_GATHER).await;
                    }
                }
                Ok(None) => return round.end(&repository),
                Err(_) => {
                    let mut repositories = registry.lock().expect("pushers lock");
                    if let Ok(request) = intake.try_recv() {
                        waiting.push_back(request);
                        continue;
                    }
                    intake.close();
                    if repositories.get(&repository).is_some_and(mpsc::UnboundedSender::is_closed) {
                        repositories.remove(&repository);
                    }
                    // Under the registry's lock: a task started for the
                    // repository after this one must find the rounds its
                    // branches listen to, not one forgotten after it began.
                    return round.end(&repository);
                }
            }
        }
        let slot = slots.acquire().await;
        // What arrived while the slot was awaited goes out too.
        while let Ok(request) = intake.try_recv() {
            waiting.push_back(request);
        }
        let batch = take_batch(&mut waiting, refs.current);
        consolidate_beside(&batch, &consolidating);
        // A due branch left for the next push opens its round now, so the
        // others join while this push runs.
        let mut next_round_open = waiting.iter().any(|r| !r.push.joins_round);
        if next_round_open {
            round.open();
        }
        let push = push_batch(batch);
        tokio::pin!(push);
        let end = loop {
            tokio::select! {
                biased;
                end = &mut push => break end,
                Some(request) = intake.recv() => {
                    if !next_round_open && !request.push.joins_round {
                        next_round_open = true;
                        round.open();
                    }
                    waiting.push_back(request);
                }
            }
        };
        refs.after(end);
        slot.finish(end);
    }
}

/// Refs the next push may carry. Some servers pay per ref (soft-serve runs
/// its hooks once per ref), so a push that timed out carries half as many
/// next time, and an answered one twice as many, up to [`MAX_REFS_PER_PUSH`].
#[derive(Debug)]
struct RefLimit {
    current: usize,
}

impl Default for RefLimit {
    fn default() -> Self {
        Self { current: MAX_REFS_PER_PUSH }
    }
}

impl RefLimit {
    fn after(&mut self, end: PushEnd) {
        self.current = match end {
            PushEnd::TimedOut => (self.current / 2).max(1),
            PushEnd::Answered => (self.current * 2).min(MAX_REFS_PER_PUSH),
            PushEnd::Other => self.current,
        };
    }
}

/// The next push: the oldest waiting request and every other one for the
/// same remote and credentials, one per branch, up to `limit` refs.
/// Requests whose worker is gone are dropped.
fn take_batch(waiting: &mut VecDeque<Request>, limit: usize) -> Vec<Request> {
    waiting.retain(|request| !request.reply.is_closed());
    let Some(first) = waiting.pop_front() else { return Vec::new() };
    let mut branches = HashSet::from([first.push.update.branch.clone()]);
    let mut batch = vec![first];
    let mut later = VecDeque::new();
    while let Some(request) = waiting.pop_front() {
        let fits = batch.len() < limit
            && request.push.remote.same_access(&batch[0].push.remote)
            && request.push.update.git_dir == batch[0].push.update.git_dir
            && !branches.contains(&request.push.update.branch);
        if fits {
            branches.insert(request.push.update.branch.clone());
            batch.push(request);
        } else {
            later.push_back(request);
        }
    }
    *waiting = later;
    batch
}

/// Packs in a store past which a push starts a consolidation beside it.
const PACKS_BEFORE_CONSOLIDATION: usize = 32;

/// Merges the store's small packs when there are many: each push writes
/// one, and so does each fetch. Runs beside the repository's
/// pushes, not before them (under load a merge took 0.1 s, at times 1 s,
/// and every waiting branch waited for it): git keeps reading a pack it
/// opened once it is merged away, and a gix handle that misses reopens.
/// Under the store's lock, so never beside a fetch or another repack; at
/// most one at a time per repository (`running`).
fn consolidate_beside(batch: &[Request], running: &Arc<AtomicBool>) {
    let Some(first) = batch.first() else { return };
    let dir = first.push.update.git_dir.clone();
    if super::store::pack_count(&dir) <= PACKS_BEFORE_CONSOLIDATION || running.swap(true, Ordering::AcqRel) {
        return;
    }
    let (remote, running) = (first.push.remote.clone(), running.clone());
    tokio::spawn(async move {
        let store = super::store::exclusive(&dir).await;
        if super::store::pack_count(&dir) > PACKS_BEFORE_CONSOLIDATION {
            let started = Instant::now();
            match remote.consolidate_packs(&dir).await {
                Ok(()) => {
                    tracing::debug!(store = %dir.display(), took = ?started.elapsed(), "consolidated packs")
                }
                Err(error) => tracing::warn!(store = %dir.display(), %error, "consolidating packs failed"),
            }
        }
        drop(store);
        running.store(false, Ordering::Release);
    });
}

/// Runs one push for `batch` and answers every request; says how it ended.
async fn push_batch(batch: Vec<Request>) -> PushEnd {
    let now = Instant::now();
    let mut deadline: Option<Instant> = None;
    let mut live = Vec::with_capacity(batch.len());
    for request in batch {
        match request.push.fence.check(now) {
            Ok(bound) => {
                deadline = Some(deadline.map_or(now + bound, |d| d.min(now + bound)));
                live.push(request);
            }
            Err(_) => {
                let _ = request.reply.send(PushReply::Fenced);
            }
        }
    }
    let (Some(deadline), Some(first)) = (deadline, live.first()) else { return PushEnd::Other };
    let remote = first.push.remote.clone();
    let packing = Instant::now();
    if let Err(message) = write_pack(&live).await {
        fail_all(live, crate::api::Reason::GitOperationFailed, &message);
        return PushEnd::Other;
    }
    let packed = packing.elapsed();
    let updates: Vec<RefUpdate> = live.iter().map(|r| r.push.update.clone()).collect();
    let joined = live.iter().filter(|r| r.push.joins_round).count();
    let span = tracing::debug_span!("push_batch", url = %remote.url(), refs = updates.len());
    let started = Instant::now();
    let waited =
        live.iter().map(|r| started.saturating_duration_since(r.queued_at)).max().unwrap_or_default();
    let result = remote.push_refs_until(deadline, &updates).instrument(span).await;
    tracing::debug!(
        url = %remote.url(),
        refs = updates.len(),
        joined,
        ?waited,
        ?packed,
        took = ?started.elapsed(),
        ok = result.is_ok(),
        "pushed branches together"
    );
    let end = match &result {
        Ok(_) => PushEnd::Answered,
        Err(RemoteError::Timeout { .. }) => PushEnd::TimedOut,
        Err(_) => PushEnd::Other,
    };
    match result {
        Ok(outcomes) => {
            for (request, outcome) in live.into_iter().zip(outcomes) {
                let _ = request.reply.send(reply_of(outcome));
            }
        }
        Err(error) => fail_all(live, error.reason(), &error.to_string()),
    }
    end
}

/// Answers every request of a push that failed as a whole.
fn fail_all(live: Vec<Request>, reason: crate::api::Reason, message: &str) {
    for request in live {
        let _ = request.reply.send(PushReply::Failed { reason, message: message.to_owned() });
    }
}

/// Writes what the branches of a push committed as one pack into their
/// store (one pack per push, not per branch: fewer files for git to open
/// and fewer merges of small packs).
async fn write_pack(live: &[Request]) -> Result<(), String> {
    let Some(first) = live.first() else { return Ok(()) };
    let held: Vec<_> = live.iter().map(|r| r.push.objects.clone()).filter(|o| !o.is_empty()).collect();
    if held.is_empty() {
        return Ok(());
    }
    let dir = first.push.update.git_dir.clone();
    let written = tokio::task::spawn_blocking(move || {
        let held: Vec<&HeldObjects> = held.iter().map(|o| o.as_ref()).collect();
        write_held(&dir, &held)
    })
    .await;
    match written {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(super::branch::with_causes(&error)),
        Err(join) => Err(format!("writing the push's pack stopped: {join}")),
    }
}

fn reply_of(outcome: Result<PushOutcome, RemoteError>) -> PushReply {
    match outcome {
        Ok(PushOutcome::Pushed) => PushReply::Pushed,
        Ok(PushOutcome::Stale) => PushReply::Stale,
        Ok(PushOutcome::Rejected(message)) => PushReply::Rejected(message),
        Err(error) => PushReply::Failed { reason: error.reason(), message: error.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use k8s_openapi::ByteString;

    use super::*;
    use crate::worker::credentials::Credentials;

    fn remote(url: &str, password: &str) -> Arc<Remote> {
        let data: BTreeMap<String, ByteString> = [("username", "u"), ("password", password)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect();
        Arc::new(Remote::new(url, Credentials::from_secret_data("auth", &data, url).unwrap()).unwrap())
    }

    fn request(remote: &Arc<Remote>, branch: &str) -> (Request, oneshot::Receiver<PushReply>) {
        let (reply, answer) = oneshot::channel();
        let update = RefUpdate {
            git_dir: PathBuf::from("/data/repos/r"),
            branch: branch.to_owned(),
            local: "a".repeat(40),
            expected: None,
        };
        let push = PushRequest {
            remote: remote.clone(),
            update,
            fence: Fence::unfenced(Duration::from_secs(4)),
            objects: Arc::default(),
            joins_round: false,
        };
        (Request { push, reply, queued_at: Instant::now() }, answer)
    }

    fn branches(batch: &[Request]) -> Vec<&str> {
        batch.iter().map(|r| r.push.update.branch.as_str()).collect()
    }

    #[test]
    fn a_batch_takes_every_branch_of_the_same_access_once() {
        let ours = remote("https://h/r.git", "pw");
        let same = remote("https://h/r.git", "pw");
        let other_key = remote("https://h/r.git", "another");
        let mut answers = Vec::new();
        let mut waiting = VecDeque::new();
        for (remote, branch) in [(&ours, "a"), (&same, "b"), (&other_key, "c"), (&ours, "a"), (&ours, "d")] {
            let (request, answer) = request(remote, branch);
            waiting.push_back(request);
            answers.push(answer);
        }
        let batch = take_batch(&mut waiting, MAX_REFS_PER_PUSH);
        assert_eq!(branches(&batch), ["a", "b", "d"], "one ref per branch, equal credentials only");
        let rest: Vec<&str> = waiting.iter().map(|r| r.push.update.branch.as_str()).collect();
        assert_eq!(rest, ["c", "a"], "the others wait for the next push, in order");
        assert_eq!(branches(&take_batch(&mut waiting, MAX_REFS_PER_PUSH)), ["c"]);
        assert_eq!(branches(&take_batch(&mut waiting, MAX_REFS_PER_PUSH)), ["a"]);
        assert!(take_batch(&mut waiting, MAX_REFS_PER_PUSH).is_empty());
    }

    #[test]
    fn refs_of_another_local_store_wait_for_a_push_of_their_own() {
        let ours = remote("https://h/r.git", "pw");
        let mut waiting = VecDeque::new();
        let mut answers = Vec::new();
        for (branch, store) in
            [("a", "/data/repos/r"), ("b", "/data/repos/elsewhere"), ("c", "/data/repos/r")]
        {
            let (mut request, answer) = request(&ours, branch);
            request.push.update.git_dir = PathBuf::from(store);
            waiting.push_back(request);
            answers.push(answer);
        }
        assert_eq!(branches(&take_batch(&mut waiting, MAX_REFS_PER_PUSH)), ["a", "c"]);
        assert_eq!(branches(&take_batch(&mut waiting, MAX_REFS_PER_PUSH)), ["b"]);
    }

    #[test]
    fn a_batch_is_bounded_and_skips_requests_nobody_waits_for() {
        let ours = remote("https://h/r.git", "pw");
        let mut waiting = VecDeque::new();
        let mut answers = Vec::new();
        for i in 0..MAX_REFS_PER_PUSH + 10 {
            let (request, answer) = request(&ours, &format!("b{i}"));
            waiting.push_back(request);
            answers.push(answer);
        }
        // The worker of b0 ended (aborted): its request is dropped, not pushed.
        drop(answers.remove(0));
        let batch = take_batch(&mut waiting, MAX_REFS_PER_PUSH);
        assert_eq!(batch.len(), MAX_REFS_PER_PUSH);
        assert_eq!(batch[0].push.update.branch, "b1");
        assert_eq!(waiting.len(), 9);
        assert_eq!(take_batch(&mut waiting, 4).len(), 4, "a lowered limit holds");
    }

    #[test]
    fn a_timed_out_push_halves_the_refs_of_the_next_and_an_answer_doubles_them() {
        let mut refs = RefLimit::default();
        for expected in [MAX_REFS_PER_PUSH / 2, MAX_REFS_PER_PUSH / 4, MAX_REFS_PER_PUSH / 8] {
            refs.after(PushEnd::TimedOut);
            assert_eq!(refs.current, expected);
        }
        refs.after(PushEnd::Other);
        assert_eq!(
            refs.current,
            MAX_REFS_PER_PUSH / 8,
            "a failure that is not a timeout says nothing about size"
        );
        for _ in 0..10 {
            refs.after(PushEnd::TimedOut);
        }
        assert_eq!(refs.current, 1);
        for _ in 0..20 {
            refs.after(PushEnd::Answered);
        }
        assert_eq!(refs.current, MAX_REFS_PER_PUSH);
    }

    fn fenced(remote: &Arc<Remote>, branch: &str, joins_round: bool) -> PushRequest {
        let (mut request, _) = request(remote, branch);
        // Shard 7 is not held: the push is answered without git.
        let (_, view) = tokio::sync::watch::channel(Arc::default());
        request.push.fence = Fence::new(7, Duration::from_secs(4), view);
        request.push.joins_round = joins_round;
        request.push
    }

    #[tokio::test]
    async fn a_due_push_opens_a_round_of_its_repository_and_a_joining_one_does_not() {
        let pushers = Pushers::new(2);
        let ours = remote("https://h/r.git", "pw");
        let mut rounds = pushers.rounds("h/r");
        let elsewhere = pushers.rounds("h/other");
        let reply = pushers.push("h/r", fenced(&ours, "a", true)).await;
        assert_eq!(reply, PushReply::Fenced);
        assert!(!rounds.has_changed().unwrap(), "a branch that joins opens no round");
        let reply = pushers.push("h/r", fenced(&ours, "a", false)).await;
        assert_eq!(reply, PushReply::Fenced);
        assert!(rounds.has_changed().unwrap(), "a due push opens one");
        rounds.mark_unchanged();
        assert!(!elsewhere.has_changed().unwrap(), "only for its own repository");
        let (first, second) = tokio::join!(
            pushers.push("h/r", fenced(&ours, "a", false)),
            pushers.push("h/r", fenced(&ours, "b", false)),
        );
        assert_eq!((first, second), (PushReply::Fenced, PushReply::Fenced));
        assert!(rounds.has_changed().unwrap());
        assert!(!elsewhere.has_changed().unwrap());
    }

    #[tokio::test]
    async fn a_branch_whose_fence_fails_is_answered_fenced_without_git() {
        let ours = remote("https://h/r.git", "pw");
        let (mut request, answer) = request(&ours, "a");
        let (_ownership, view) = tokio::sync::watch::channel(Arc::default());
        request.push.fence = Fence::new(7, Duration::from_secs(4), view);
        assert_eq!(push_batch(vec![request]).await, PushEnd::Other);
        assert_eq!(answer.await.unwrap(), PushReply::Fenced);
    }
}
