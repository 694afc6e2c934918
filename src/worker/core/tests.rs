//! Unit tests of the core's transitions, one scenario each. The defects of
//! issue 21 that the old worker had are named where a test covers one.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gix::ObjectId;

use super::*;
use crate::api::{Operation, Reason};
use crate::telemetry::trace::EventTrace;
use crate::worker::policy::PushPolicy;
use crate::worker::queue::{ChangeMeta, SweepScope};
use crate::worker::repo::LocalRepo;

const A: &str = "f/ns/core/configmaps/a.yaml";
const B: &str = "f/ns/core/configmaps/b.yaml";
const C: &str = "f/ns/core/configmaps/c.yaml";

fn oid(n: u8) -> ObjectId {
    let mut bytes = [0u8; 20];
    bytes[0] = n;
    bytes[19] = 0xaa;
    ObjectId::from_bytes_or_panic(&bytes)
}

fn blob(text: &str) -> ObjectId {
    LocalRepo::blob_id(text.as_bytes())
}

/// A core plus a clock, and the commands of the last input.
struct Harness {
    core: BranchCore,
    base: Instant,
    clock: Duration,
    out: Vec<Command>,
    next_id: u8,
}

impl Harness {
    fn new() -> Self {
        let base = Instant::now();
        let settings = CoreSettings {
            push: PushPolicy { interval: Duration::from_secs(5), max_commits: 3 },
            folders: vec![(TargetKey::new("ns", "t"), "f".into())],
            kustomize: Default::default(),
            policies: Default::default(),
            replica: "r1".into(),
            // The first audit comes 599 s in: only the audit tests reach it.
            salt: 599_000,
            audit_interval: Duration::from_secs(600),
            first_audit: Duration::from_secs(599),
            standby: false,
        };
        let core = BranchCore::new(settings, At { now: base, wall: SystemTime::UNIX_EPOCH });
        Self { core, base, clock: Duration::ZERO, out: Vec::new(), next_id: 10 }
    }

    /// Started on a remote tip holding `files`.
    fn started(files: &[(&str, &str)]) -> Self {
        let mut h = Self::new();
        h.input(Input::Tick);
        assert!(matches!(h.out.as_slice(), [Command::Fetch { .. }]), "{:?}", h.out);
        let files = files.iter().map(|(p, c)| (p.to_string(), blob(c))).collect();
        h.input(Input::Fetched(Ok(Fetched { tip: Some(oid(1)), files, ..Fetched::default() })));
        assert_eq!(h.core.phase(), Phase::Running);
        h
    }

    fn at(&self) -> At {
        At { now: self.base + self.clock, wall: SystemTime::UNIX_EPOCH + self.clock }
    }

    fn input(&mut self, input: Input) -> &[Command] {
        self.out = self.core.handle(input, self.at());
        &self.out
    }

    fn advance(&mut self, by: Duration) -> &[Command] {
        self.clock += by;
        self.input(Input::Tick)
    }

    fn write(&mut self, path: &str, text: &str) -> &[Command] {
        let item = WorkItem::Write {
            path: path.into(),
            content: Arc::from(text.as_bytes()),
            meta: self.meta(false),
        };
        self.input(Input::Item(item))
    }

    fn meta(&self, resync: bool) -> ChangeMeta {
        ChangeMeta {
            target: TargetKey::new("ns", "t"),
            operation: Operation::Update,
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            resource_version: None,
            manager: None,
            namespace: Some("ns".into()),
            name: "a".into(),
            received_at: self.base + self.clock,
            resync,
            trace: EventTrace::default(),
        }
    }

    /// The commit command of the last input.
    fn commit(&self) -> Option<(Option<ObjectId>, Vec<Change>)> {
        self.out.iter().find_map(|c| match c {
            Command::Commit { parent, changes, .. } => Some((*parent, changes.clone())),
            _ => None,
        })
    }

    fn push(&self) -> Option<(ObjectId, Option<ObjectId>, usize)> {
        self.out.iter().find_map(|c| match c {
            Command::Push { local, expected, commits, .. } => Some((*local, *expected, *commits)),
            _ => None,
        })
    }

    fn fetch(&self) -> Option<Vec<ObjectId>> {
        self.out.iter().find_map(|c| match c {
            Command::Fetch { known, .. } => Some(known.clone()),
            _ => None,
        })
    }

    /// Answers the outstanding commit with a new id.
    fn committed(&mut self) -> ObjectId {
        let id = oid(self.next_id);
        self.next_id += 1;
        self.input(Input::Committed(Ok(Some(id))));
        id
    }

    fn notes(&self) -> Vec<&Note> {
        self.out.iter().filter_map(|c| if let Command::Note(n) = c { Some(n) } else { None }).collect()
    }
}

fn bytes(change: &Change) -> Option<String> {
    match &change.content {
        Content::Bytes(b) => Some(String::from_utf8(b.to_vec()).unwrap()),
        _ => None,
    }
}

#[test]
fn start_fetches_and_retries_with_backoff_while_items_wait() {
    let mut h = Harness::new();
    assert_eq!(h.core.phase(), Phase::Starting);
    h.input(Input::Tick);
    assert!(h.fetch().is_some());
    // Defect 5f: a git outage at start must not stop intake.
    assert!(h.core.wants_items());
    h.write(A, "1");
    assert!(h.commit().is_none(), "nothing is committed before the branch is fetched");
    h.input(Input::Fetched(Err((Reason::NetworkError, "down".into()))));
    assert_eq!(h.core.state().error.as_ref().map(|e| e.0), Some(Reason::NetworkError));
    assert!(!h.core.state().active);
    assert!(h.fetch().is_none(), "waits before retrying");
    let wake = h.core.wake_at(h.base + h.clock).expect("a retry is scheduled");
    assert!(wake > h.base + h.clock);
    h.clock = wake - h.base;
    h.input(Input::Tick);
    assert!(h.fetch().is_some(), "retries when the back-off is over");
    h.input(Input::Fetched(Ok(Fetched { tip: Some(oid(1)), ..Fetched::default() })));
    assert!(h.core.state().active);
    assert_eq!(h.commit().map(|c| c.0), Some(Some(oid(1))), "the waiting item is committed on the tip");
}

/// Issue 16: a branch past a limit is fetched again only after minutes,
/// since each try may receive the whole limit again.
#[test]
fn a_branch_past_a_limit_is_fetched_again_only_after_minutes() {
    let mut h = Harness::new();
    h.input(Input::Tick);
    assert!(h.fetch().is_some());
    h.input(Input::Fetched(Err((Reason::RemoteTooLarge, "too large".into()))));
    assert_eq!(h.core.state().error.as_ref().map(|e| e.0), Some(Reason::RemoteTooLarge));
    let wake = h.core.wake_at(h.base + h.clock).expect("a retry is scheduled");
    assert!(wake - (h.base + h.clock) >= super::remote::TOO_LARGE_RETRY, "{:?}", wake - (h.base + h.clock));
    h.clock = wake - h.base;
    h.input(Input::Tick);
    assert!(h.fetch().is_some(), "retries then: the tenant may have fixed the branch");
}

#[test]
fn a_change_is_committed_on_the_tip_and_pushed_after_the_interval() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    let (parent, changes) = h.commit().expect("commits at once");
    assert_eq!((parent, bytes(&changes[0]).as_deref()), (Some(oid(1)), Some("1")));
    let c1 = h.committed();
    assert!(h.push().is_none(), "one commit waits for the interval");
    assert_eq!(h.core.state().unpushed, 1);
    h.advance(Duration::from_secs(5));
    assert_eq!(h.push(), Some((c1, Some(oid(1)), 1)));
    h.input(Input::Pushed(PushReply::Pushed));
    assert!(h.out.iter().any(|c| matches!(c, Command::KeepTip(t) if *t == c1)));
    assert!(h.notes().iter().any(|n| matches!(n, Note::Acked { sources } if sources.len() == 1)));
    assert!(h.core.is_settled());
    assert_eq!(h.core.state().remote_tip, Some(c1.to_string()));
}

#[test]
fn an_unchanged_file_makes_no_commit() {
    let mut h = Harness::started(&[(A, "1")]);
    h.write(A, "1");
    assert!(h.commit().is_none());
    assert!(h.core.is_settled());
}

#[test]
fn commits_go_on_while_a_push_is_in_flight() {
    let mut h = Harness::started(&[]);
    for (i, text) in ["1", "2", "3"].iter().enumerate() {
        h.write(&format!("f/ns/core/configmaps/c{i}.yaml"), text);
        h.committed();
    }
    let (_, _, commits) = h.push().expect("a full batch pushes at once");
    assert_eq!(commits, 3);
    h.write(B, "4");
    assert!(h.commit().is_some(), "the push does not hold commits back");
    h.committed();
    h.input(Input::Pushed(PushReply::Pushed));
    assert_eq!(h.core.state().unpushed, 1, "the commit made meanwhile waits for the next push");
}

#[test]
fn what_is_committed_while_a_push_runs_waits_for_its_interval_not_the_push_s_end() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    h.committed();
    h.advance(Duration::from_secs(5));
    assert!(h.push().is_some());
    h.advance(Duration::from_millis(200));
    h.write(B, "2");
    h.committed();
    let second = h.at().now;
    h.advance(Duration::from_millis(300));
    h.input(Input::Pushed(PushReply::Pushed));
    assert!(h.push().is_none(), "a partial batch does not go out on the heels of the last push");
    assert_eq!(h.core.wake_at(h.at().now), Some(second + Duration::from_secs(5)));
}

#[test]
fn the_rest_of_a_capped_push_goes_out_at_once() {
    let mut h = Harness::started(&[]);
    h.write_committed(&[(A, "1"), (B, "2"), (C, "3")]);
    let (_, _, commits) = h.push().expect("a full batch of three goes at once");
    assert_eq!(commits, 3);
    h.input(Input::Pushed(PushReply::Failed { reason: Reason::GitOperationFailed, message: "x".into() }));
    h.advance(Duration::from_secs(5));
    let (_, _, commits) = h.push().expect("retried after the backoff");
    assert_eq!(commits, 1, "half of what failed");
    h.input(Input::Pushed(PushReply::Pushed));
    assert_eq!(h.push().map(|(_, _, n)| n), Some(2), "the two left behind go at once");
}

#[test]
fn a_push_of_the_repository_takes_a_branch_whose_interval_is_not_up() {
    let mut h = Harness::started(&[]);
    h.input(Input::PushRound);
    assert!(h.push().is_none(), "nothing to push");
    h.write(A, "1");
    let c1 = h.committed();
    h.advance(Duration::from_millis(100));
    assert!(h.push().is_none());
    h.input(Input::PushRound);
    assert_eq!(h.push(), Some((c1, Some(oid(1)), 1)), "joins the push");
    h.write(B, "2");
    h.committed();
    h.input(Input::PushRound);
    assert!(h.push().is_none(), "one push at a time");
    h.input(Input::Pushed(PushReply::Failed { reason: Reason::GitOperationFailed, message: "x".into() }));
    h.input(Input::PushRound);
    assert!(h.push().is_none(), "a branch backing off does not join");
    h.advance(Duration::from_secs(5));
    let (_, _, commits) = h.push().expect("retried once the backoff is over");
    assert_eq!(commits, 1, "half of what failed");
    h.input(Input::Pushed(PushReply::Pushed));
    let (local, _, commits) = h.push().expect("the commit left behind goes at once");
    assert_eq!(commits, 1);
    h.input(Input::Pushed(PushReply::Pushed));
    assert_eq!(h.core.state().remote_tip, Some(local.to_string()));
    h.write(C, "3");
    h.committed();
    h.advance(Duration::from_secs(1));
    assert!(h.push().is_none(), "a round joins only while it starts, it leaves no push due behind");
}

#[test]
fn a_standby_does_not_join_a_push_of_the_repository() {
    let mut h = Harness::on_standby();
    h.write_committed(&[(A, "1")]);
    h.input(Input::PushRound);
    assert!(h.push().is_none(), "{:?}", h.out);
}

#[test]
fn a_stale_push_fetches_and_replays_on_the_new_tip() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    let c1 = h.committed();
    h.advance(Duration::from_secs(5));
    h.input(Input::Pushed(PushReply::Stale));
    assert_eq!(h.fetch(), Some(vec![c1]), "asks whether the tip holds our commit");
    let other = vec![("other/x".to_owned(), blob("x"))];
    h.input(Input::Fetched(Ok(Fetched { tip: Some(oid(2)), files: other, ..Fetched::default() })));
    let (parent, changes) = h.commit().expect("replays");
    assert_eq!((parent, bytes(&changes[0]).as_deref()), (Some(oid(2)), Some("1")));
    let c2 = h.committed();
    assert_eq!(h.push(), Some((c2, Some(oid(2)), 1)), "a replay is pushed at once");
}

/// Defect 1: a fetch error after a stale push dropped every pending commit.
#[test]
fn a_failed_fetch_after_a_stale_push_keeps_every_pending_change() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    let c1 = h.committed();
    h.write(B, "2");
    let c2 = h.committed();
    h.advance(Duration::from_secs(5));
    h.input(Input::Pushed(PushReply::Stale));
    h.input(Input::Fetched(Err((Reason::NetworkError, "reset".into()))));
    assert_eq!(h.core.state().unpushed, 2, "nothing pending was dropped");
    h.advance(Duration::from_secs(2));
    assert_eq!(h.fetch(), Some(vec![c1, c2]));
    h.input(Input::Fetched(Ok(Fetched { tip: Some(oid(2)), ..Fetched::default() })));
    assert_eq!(bytes(&h.commit().unwrap().1[0]).as_deref(), Some("1"));
    h.committed();
    assert_eq!(bytes(&h.commit().unwrap().1[0]).as_deref(), Some("2"));
}

/// Defect 6: a push whose answer was lost was replayed on top of itself.
#[test]
fn our_own_commit_at_the_remote_tip_counts_as_pushed() {
    let mut h = Harness::started(&[]);
    h.write(A, "3");
    let c1 = h.committed();
    h.write(A, "4");
    let c2 = h.committed();
    h.advance(Duration::from_secs(5));
    h.input(Input::Pushed(PushReply::Failed { reason: Reason::NetworkError, message: "timed out".into() }));
    h.write(A, "5");
    let c3 = h.committed();
    h.advance(Duration::from_secs(5));
    // A failed push halves what the next one carries.
    assert_eq!(h.push(), Some((c1, Some(oid(1)), 1)), "the retry expects the old tip");
    h.input(Input::Pushed(PushReply::Stale));
    assert_eq!(h.fetch(), Some(vec![c1, c2, c3]));
    let files = vec![(A.to_owned(), blob("4"))];
    h.input(Input::Fetched(Ok(Fetched { tip: Some(c2), files, contains: Some(c2), ..Fetched::default() })));
    assert!(h.notes().iter().any(|n| matches!(n, Note::Acked { sources } if sources.len() == 2)));
    let (parent, changes) = h.commit().expect("only the newer change is written again");
    assert_eq!((parent, bytes(&changes[0]).as_deref()), (Some(c2), Some("5")));
}

/// Defect 2: a failed local commit dropped its change.
#[test]
fn a_failed_commit_is_retried_first_and_keeps_its_place() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    h.input(Input::Committed(Err(CommitFailure {
        conflict: false,
        message: "No space left on device".into(),
    })));
    assert_eq!(h.core.state().local_error.as_deref(), Some("No space left on device"));
    h.write(A, "2");
    assert!(h.commit().is_none(), "waits for the back-off");
    h.advance(Duration::from_secs(2));
    assert_eq!(bytes(&h.commit().unwrap().1[0]).as_deref(), Some("1"), "the failed change goes first");
    h.committed();
    assert_eq!(bytes(&h.commit().unwrap().1[0]).as_deref(), Some("2"));
    assert_eq!(h.core.state().local_error, None);
}

/// Defect 5b: one conflicting path failed a whole batch of resync items.
#[test]
fn a_conflicting_path_is_isolated_and_the_rest_commit() {
    let mut h = Harness::started(&[]);
    for name in ["a", "b", "c", "d"] {
        let path = format!("f/ns/core/configmaps/{name}.yaml");
        let item = WorkItem::Write { path, content: Arc::from(&b"x"[..]), meta: h.meta(true) };
        h.input(Input::Item(item));
    }
    let scope = SweepScope {
        target: TargetKey::new("ns", "t"),
        group: String::new(),
        plural: "configmaps".into(),
        namespace: None,
    };
    h.input(Input::Item(WorkItem::Sweep { scope, live: HashSet::new() }));
    assert_eq!(h.commit().unwrap().1.len(), 4, "the listed objects are one commit");
    let conflict =
        || Input::Committed(Err(CommitFailure { conflict: true, message: "path conflict".into() }));
    h.input(conflict());
    assert_eq!(h.commit().unwrap().1.len(), 2, "split in halves");
    h.committed();
    assert_eq!(h.commit().unwrap().1.len(), 2);
    h.input(conflict());
    assert_eq!(h.commit().unwrap().1.len(), 1);
    h.committed();
    let last = h.commit().unwrap().1;
    assert_eq!(last[0].path, "f/ns/core/configmaps/d.yaml");
    h.input(conflict());
    assert!(h.notes().iter().any(|n| matches!(n, Note::Unwritable { path, .. } if path.ends_with("d.yaml"))));
    assert!(h.core.state().local_error.is_some(), "the status says which file cannot be written");
}

#[test]
fn identical_rejections_quarantine_the_branch_until_a_push_is_accepted() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    h.committed();
    h.advance(Duration::from_secs(5));
    for round in 1..=QUARANTINE_AFTER {
        assert!(h.push().is_some(), "round {round} pushes");
        h.input(Input::Pushed(PushReply::Rejected("pre-receive hook declined".into())));
        assert!(h.fetch().is_none(), "a refusal moved nothing: no rebase");
        if round < QUARANTINE_AFTER {
            h.advance(Duration::from_secs(60));
        }
    }
    assert_eq!(h.core.phase(), Phase::Quarantined);
    assert_eq!(h.core.state().quarantined.as_deref(), Some("pre-receive hook declined"));
    h.write(B, "2");
    assert!(h.commit().is_some(), "commits go on while quarantined");
    h.committed();
    assert!(h.push().is_none(), "waits for the back-off");
    h.advance(Duration::from_secs(60));
    assert!(h.push().is_some(), "retries with back-off");
    h.input(Input::Pushed(PushReply::Pushed));
    assert_eq!(h.core.phase(), Phase::Running);
    assert_eq!(h.core.state().quarantined, None);
}

#[test]
fn different_rejections_do_not_quarantine() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    h.committed();
    h.advance(Duration::from_secs(5));
    for round in 0..QUARANTINE_AFTER * 2 {
        h.input(Input::Pushed(PushReply::Rejected(format!("declined {}", round % 2))));
        h.advance(Duration::from_secs(60));
    }
    assert_eq!(h.core.phase(), Phase::Running);
}

#[test]
fn a_fenced_push_retries_soon_without_counting_a_failure() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    h.committed();
    h.advance(Duration::from_secs(5));
    h.input(Input::Pushed(PushReply::Fenced));
    assert!(h.core.state().error.is_none());
    h.advance(Duration::from_millis(300));
    assert!(h.push().is_some());
}

/// Defect 4: in an outage the pending commits grew without bound.
#[test]
fn past_the_cap_changes_coalesce_in_the_queue() {
    let mut h = Harness::started(&[]);
    for i in 0..MAX_UNPUSHED {
        h.write(A, &i.to_string());
        h.input(Input::Committed(Ok(Some(oid(1)))));
        // Keep the remote away: every push fails.
        if h.push().is_some() {
            h.input(Input::Pushed(PushReply::Failed {
                reason: Reason::NetworkError,
                message: "down".into(),
            }));
        }
    }
    assert!(h.core.state().capped);
    h.write(B, "1");
    assert!(h.commit().is_none(), "no commit past the cap");
    h.write(B, "2");
    assert_eq!(h.core.coalesced(), 1, "the second change merged into the first");
    assert_eq!(h.core.state().unpushed, MAX_UNPUSHED);
}

/// Defects 5c and 5d: a drain read no more items, and a failed drain push
/// discarded the commits.
#[test]
fn a_drain_commits_what_is_queued_and_keeps_pushing_until_acknowledged() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    h.input(Input::Drain);
    assert!(h.core.wants_items(), "items already sent are still read");
    h.write(B, "2");
    let first = h.committed();
    assert!(h.push().is_none(), "a drain commits what it holds before its push");
    let local = h.committed();
    let (pushed, _, commits) = h.push().expect("a drain pushes without waiting for the interval");
    assert_eq!((pushed, commits), (local, 2), "the item read after the drain began is in the push");
    h.input(Input::Pushed(PushReply::Failed { reason: Reason::NetworkError, message: "down".into() }));
    assert!(!h.out.iter().any(|c| matches!(c, Command::Done)), "not done while commits wait");
    h.advance(Duration::from_secs(2));
    assert_eq!(h.push().map(|p| p.0), Some(first), "a failed push halves the next one");
    h.input(Input::Pushed(PushReply::Pushed));
    assert_eq!(h.push().map(|p| p.0), Some(local));
    h.input(Input::Pushed(PushReply::Pushed));
    assert!(h.out.iter().any(|c| matches!(c, Command::Done)));
    assert!(h.push().is_none(), "a single change waits for the interval");
}

/// A slow git server fits one push in the shutdown budget, not three: a
/// drain that takes in more during a push sends it all in the next one.
#[test]
fn a_drain_sends_everything_after_the_push_in_flight_in_one_push() {
    let mut h = Harness::started(&[]);
    for i in 0..3 {
        h.write(A, &i.to_string());
        h.committed();
    }
    assert!(h.push().is_some(), "a full batch (maxCommits 3) goes at once");
    h.input(Input::Drain);
    h.write(B, "1");
    h.committed();
    h.write(C, "1");
    assert!(h.push().is_none(), "a push is in flight");
    h.input(Input::Pushed(PushReply::Pushed));
    assert!(h.push().is_none(), "C is still being committed");
    let last = h.committed();
    assert_eq!(h.push().map(|p| (p.0, p.2)), Some((last, 2)));
}

/// A handover called off (the shard came back) resumes the worker: it
/// keeps what it holds and goes back to pushing on its interval.
#[test]
fn a_resumed_drain_does_not_stop_and_pushes_on_its_interval_again() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    h.input(Input::Drain);
    h.input(Input::Resume);
    assert_eq!(h.core.phase(), Phase::Running);
    h.committed();
    assert!(h.push().is_none(), "no longer draining: the interval applies");
    h.advance(Duration::from_secs(5));
    assert!(h.push().is_some());
    h.input(Input::Pushed(PushReply::Pushed));
    assert!(!h.out.iter().any(|c| matches!(c, Command::Done)), "a resumed worker keeps running");
}

#[test]
fn an_audit_repairs_a_hand_edit_with_the_known_blob() {
    let mut h = Harness::started(&[(A, "1"), ("README.md", "r")]);
    h.advance(Duration::from_secs(601));
    assert_eq!(h.fetch(), Some(vec![]));
    let files = vec![(A.to_owned(), blob("edited")), ("README.md".to_owned(), blob("changed"))];
    h.input(Input::Fetched(Ok(Fetched { tip: Some(oid(3)), files, ..Fetched::default() })));
    assert!(h.notes().iter().any(|n| matches!(n, Note::Drift { paths: 1 })));
    let (parent, changes) = h.commit().expect("one repair commit");
    assert_eq!(parent, Some(oid(3)));
    assert_eq!(changes, vec![Change { path: A.into(), content: Content::Blob(blob("1")) }]);
    h.committed();
    h.advance(Duration::from_secs(6));
    assert!(h.push().is_some());
}

#[test]
fn an_audit_of_an_unchanged_remote_writes_nothing() {
    let mut h = Harness::started(&[(A, "1")]);
    h.advance(Duration::from_secs(601));
    h.input(Input::Fetched(Ok(Fetched {
        tip: Some(oid(1)),
        files: vec![(A.into(), blob("1"))],
        ..Fetched::default()
    })));
    assert!(h.commit().is_none() && h.notes().is_empty());
    assert!(h.core.is_settled());
}

#[test]
fn a_retain_holds_pushes_until_its_sweeps_arrive() {
    let mut h = Harness::started(&[]);
    let target = TargetKey::new("ns", "t");
    let owned = BTreeSet::from([(String::new(), "configmaps".to_owned())]);
    h.input(Input::Item(WorkItem::Retain { target: target.clone(), owned }));
    h.write(A, "1");
    h.committed();
    h.advance(Duration::from_secs(6));
    assert!(h.push().is_none(), "held while the resync runs");
    let scope = SweepScope { target, group: String::new(), plural: "configmaps".into(), namespace: None };
    let live = HashSet::from([A.to_owned()]);
    h.input(Input::Item(WorkItem::Sweep { scope, live }));
    assert!(h.push().is_some(), "the first resync's end publishes at once");
}

#[test]
fn settings_change_folders_and_clear_the_back_off() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    h.committed();
    h.advance(Duration::from_secs(5));
    h.input(Input::Pushed(PushReply::Failed {
        reason: Reason::AuthenticationFailed,
        message: "denied".into(),
    }));
    assert!(h.push().is_none());
    let settings = CoreSettings {
        push: PushPolicy::default(),
        folders: vec![(TargetKey::new("ns", "t"), "f".into())],
        kustomize: Default::default(),
        policies: Default::default(),
        replica: "r1".into(),
        salt: 599_000,
        audit_interval: Duration::from_secs(600),
        first_audit: Duration::from_secs(599),
        standby: false,
    };
    h.input(Input::Settings(settings));
    assert!(h.push().is_some(), "new credentials are tried at once");
}

#[test]
fn replays_are_pushed_together_once_all_are_written() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    h.committed();
    h.write(B, "2");
    h.committed();
    h.advance(Duration::from_secs(5));
    h.input(Input::Pushed(PushReply::Stale));
    h.input(Input::Fetched(Ok(Fetched { tip: Some(oid(2)), ..Fetched::default() })));
    h.committed();
    assert!(h.push().is_none(), "one replay is still to be written");
    let last = h.committed();
    assert_eq!(h.push(), Some((last, Some(oid(2)), 2)));
}

#[test]
fn the_end_of_an_empty_first_resync_does_not_rush_the_next_push() {
    let mut h = Harness::started(&[]);
    let target = TargetKey::new("ns", "t");
    let owned = BTreeSet::from([(String::new(), "configmaps".to_owned())]);
    h.input(Input::Item(WorkItem::Retain { target: target.clone(), owned }));
    let scope = SweepScope { target, group: String::new(), plural: "configmaps".into(), namespace: None };
    h.input(Input::Item(WorkItem::Sweep { scope, live: HashSet::new() }));
    h.write(A, "1");
    h.committed();
    assert!(h.push().is_none(), "a single change waits for the interval");
}

#[test]
fn a_drain_before_the_first_fetch_with_nothing_queued_stops_at_once() {
    let mut h = Harness::new();
    h.input(Input::Tick);
    h.input(Input::Fetched(Err((Reason::NetworkError, "down".into()))));
    h.input(Input::Drain);
    assert!(h.out.iter().any(|c| matches!(c, Command::Done)));
    assert_eq!(h.core.phase(), Phase::Stopped);
    assert!(h.input(Input::Tick).is_empty(), "a stopped core does nothing");
}

#[test]
fn a_drain_before_the_first_fetch_still_writes_what_was_queued() {
    let mut h = Harness::new();
    h.input(Input::Tick);
    h.write(A, "1");
    h.input(Input::Drain);
    assert!(!h.out.iter().any(|c| matches!(c, Command::Done)), "a queued change must not be lost");
    h.input(Input::Fetched(Ok(Fetched { tip: Some(oid(1)), ..Fetched::default() })));
    assert_eq!(h.core.phase(), Phase::Draining);
    let c1 = h.committed();
    assert_eq!(h.push().map(|p| p.0), Some(c1), "a drain pushes without waiting for the interval");
    h.input(Input::Pushed(PushReply::Pushed));
    assert!(h.out.iter().any(|c| matches!(c, Command::Done)));
}

#[test]
fn a_commit_that_changed_nothing_updates_the_view_without_a_commit_to_push() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    h.input(Input::Committed(Ok(None)));
    assert_eq!(h.core.state().unpushed, 0);
    h.write(A, "1");
    assert!(h.commit().is_none(), "the view now knows the file holds it");
}

#[test]
fn a_new_worker_audits_within_a_minute_and_a_quarter() {
    for salt in [0, 1, 59_999, 123_456_789] {
        let first = first_audit(Duration::from_secs(600), salt);
        assert!((Duration::from_secs(15)..Duration::from_secs(75)).contains(&first), "{first:?}");
    }
    assert_eq!(first_audit(Duration::from_secs(5), 3), Duration::from_secs(5), "never after the interval");
}

impl Harness {
    fn settings(&self) -> CoreSettings {
        self.core.settings.clone()
    }

    fn set_standby(&mut self, standby: bool) -> &[Command] {
        let settings = CoreSettings { standby, ..self.settings() };
        self.input(Input::Settings(settings))
    }

    /// A new core on standby that fetched an empty branch.
    fn on_standby() -> Self {
        let mut h = Self::new();
        h.set_standby(true);
        h.input(Input::Tick);
        h.input(Input::Fetched(Ok(Fetched { tip: Some(oid(1)), files: vec![], ..Fetched::default() })));
        h
    }

    /// Writes each change and answers every commit it leads to.
    fn write_committed(&mut self, changes: &[(&str, &str)]) {
        for (path, value) in changes {
            self.write(path, value);
            while self.commit().is_some() {
                self.committed();
            }
        }
    }
}

impl Harness {
    /// The history the last input's fetch asked for.
    fn fetch_history(&self) -> Option<HistoryFrom> {
        self.out.iter().find_map(|c| match c {
            Command::Fetch { history, .. } => *history,
            _ => None,
        })
    }

    /// Answers a fetch with a tip holding `files` and the owner's history.
    fn fetched(&mut self, tip: u8, files: &[(&str, &str)], history: &[(&str, Option<&str>)]) {
        let files = files.iter().map(|(p, c)| (p.to_string(), blob(c))).collect();
        let history = history.iter().map(|(p, c)| (p.to_string(), c.map(blob))).collect();
        let fetched = Fetched { tip: Some(oid(tip)), files, history: Some(history), ..Fetched::default() };
        self.input(Input::Fetched(Ok(fetched)));
    }
}

#[test]
fn a_standby_never_pushes_or_audits_and_fetches_only_to_trim() {
    let mut h = Harness::on_standby();
    h.write_committed(&[(A, "1"), (A, "2"), (A, "3"), (A, "4")]);
    assert_eq!(h.core.state().unpushed, 4, "every change is committed locally");
    assert_eq!(h.core.wake_at(h.at().now), Some(h.at().now + STANDBY_TRIM), "the first trim");
    for _ in 0..20 {
        h.advance(STANDBY_TRIM);
        assert!(h.push().is_none(), "no push: {:?}", h.out);
        assert!(h.fetch_history().is_some(), "a trim asks what the owner wrote: {:?}", h.out);
        // The owner pushed nothing meanwhile.
        h.fetched(1, &[], &[]);
        assert!(h.fetch().is_none() && h.commit().is_none(), "{:?}", h.out);
    }
    assert_eq!(h.core.state().unpushed, 4, "nothing the owner did not write is dropped");
}

#[test]
fn a_trim_drops_only_the_committed_changes_the_owner_pushed() {
    let mut h = Harness::on_standby();
    h.write_committed(&[(A, "1"), (A, "2"), (B, "1"), (A, "3")]);
    h.write(B, "2");
    // Queued behind that commit: the view has not taken it in.
    h.write(B, "3");
    h.advance(STANDBY_TRIM);
    assert!(h.fetch().is_none(), "the trim waits for the commit in flight");
    h.committed();
    assert!(h.commit().is_none(), "a due trim goes before the next commit");
    assert_eq!(
        h.fetch_history(),
        Some(HistoryFrom::Time(SystemTime::UNIX_EPOCH)),
        "from the standby's start"
    );
    let owner = [(A, Some("1")), (A, Some("2")), (B, Some("2")), (B, Some("3"))];
    h.fetched(2, &[(A, "2"), (B, "3")], &owner);
    // A=1, A=2 and B=1 go; B=2 was written too, but is the newest committed
    // B and differs from the tip, so it stays, as a takeover keeps it.
    assert_eq!(h.core.state().unpushed, 2, "A=3 and B=2 stay");
    let (_, changes) = h.commit().expect("the queued B=3 stays, though the owner wrote it");
    assert_eq!(
        changes.iter().map(|c| (c.path.as_str(), bytes(c))).collect::<Vec<_>>(),
        vec![(B, Some("3".into()))]
    );
    h.committed();
    // The takeover writes what is left on the owner's final tip, from the
    // same history start: the oldest pending change is older than the trim.
    h.set_standby(false);
    assert_eq!(h.fetch_history(), Some(HistoryFrom::Time(SystemTime::UNIX_EPOCH)));
    h.fetched(3, &[(A, "2"), (B, "3")], &owner);
    let mut written = Vec::new();
    while let Some((_, changes)) = h.commit() {
        written.extend(changes.iter().map(|c| (c.path.clone(), bytes(c))));
        h.committed();
    }
    assert_eq!(written, vec![(A.to_string(), Some("3".to_string()))], "B=2 and B=3 were written");
}

#[test]
fn a_trim_asks_from_the_newest_tip_fetched_before_the_oldest_pending_change() {
    let mut h = Harness::on_standby();
    h.write_committed(&[(A, "1")]);
    h.advance(STANDBY_TRIM);
    h.fetched(2, &[(A, "1")], &[(A, Some("1"))]);
    assert_eq!(h.core.state().unpushed, 0, "the owner wrote A=1");
    h.advance(Duration::from_secs(10));
    h.write_committed(&[(A, "2")]);
    h.advance(STANDBY_TRIM - Duration::from_secs(10));
    assert_eq!(h.fetch_history(), Some(HistoryFrom::Commit(oid(2))), "after the tip the last trim saw");
    // The owner pushed A=2 in a commit it made before that trim (a push
    // held back by an outage): the walk from the commit still finds it.
    h.fetched(3, &[(A, "2")], &[(A, Some("1")), (A, Some("2"))]);
    assert_eq!(h.core.state().unpushed, 0);
}

#[test]
fn a_takeover_fetches_the_old_owners_tip_and_writes_only_what_it_lacks() {
    let mut h = Harness::on_standby();
    // The standby saw A go 1 → 2 → 3 and B appear; the old owner pushed A=2 last.
    h.write_committed(&[(A, "1"), (A, "2"), (B, "1"), (A, "3")]);
    h.set_standby(false);
    let known = h.fetch().expect("the takeover fetches first");
    assert_eq!(known.len(), 4);
    let old_owner = vec![(A.to_string(), blob("2"))];
    h.input(Input::Fetched(Ok(Fetched { tip: Some(oid(2)), files: old_owner, ..Fetched::default() })));
    let mut written = Vec::new();
    while let Some((parent, changes)) = h.commit() {
        if written.is_empty() {
            assert_eq!(parent, Some(oid(2)), "rebuilt on the old owner's tip");
        }
        written.extend(changes.iter().map(|c| (c.path.clone(), bytes(c))));
        h.committed();
    }
    assert_eq!(
        written,
        vec![(B.to_string(), Some("1".to_string())), (A.to_string(), Some("3".to_string()))],
        "A=1 and A=2 are on the tip; A never goes back"
    );
    let (_, expected, commits) = h.push().expect("the rebuilt commits go out at once");
    assert_eq!((expected, commits), (Some(oid(2)), 2));
}

/// Simulation seed 6652: a file the cluster does not have was added by hand
/// to the tip just before a takeover. The takeover adopted the tip as its
/// view, so no audit ever found the file.
#[test]
fn a_takeover_repairs_a_hand_edit_the_standby_never_saw() {
    let mut h = Harness::on_standby();
    h.write_committed(&[(A, "1")]);
    h.set_standby(false);
    h.fetch().expect("the takeover fetches first");
    let tip = vec![(A.to_string(), blob("1")), (B.to_string(), blob("by hand"))];
    h.input(Input::Fetched(Ok(Fetched { tip: Some(oid(2)), files: tip, ..Fetched::default() })));
    let (parent, changes) = h.commit().expect("a repair");
    assert_eq!(parent, Some(oid(2)));
    assert_eq!(changes.iter().map(|c| (c.path.as_str(), bytes(c))).collect::<Vec<_>>(), vec![(B, None)]);
}

#[test]
fn a_takeover_during_the_first_fetch_fetches_again() {
    let mut h = Harness::new();
    h.set_standby(true);
    assert!(h.fetch().is_some(), "a standby starts by fetching");
    h.set_standby(false);
    assert!(h.fetch().is_none(), "one fetch at a time");
    h.input(Input::Fetched(Ok(Fetched { tip: Some(oid(1)), files: vec![], ..Fetched::default() })));
    assert!(h.fetch().is_some(), "that fetch began before the old owner's last push: {:?}", h.out);
}

#[test]
fn a_standby_that_is_told_to_drain_stops_at_once() {
    let mut h = Harness::started(&[]);
    h.set_standby(true);
    h.write(A, "1");
    h.input(Input::Drain);
    assert!(matches!(h.out.as_slice(), [Command::Done]), "{:?}", h.out);
    assert_eq!(h.core.phase(), Phase::Stopped);
}

#[test]
fn a_worker_is_listed_once_every_retained_resource_was_swept_into_its_queue() {
    let mut h = Harness::new();
    assert!(!h.core.state().listed, "no resync asked for yet");
    let target = TargetKey::new("ns", "t");
    let owned =
        BTreeSet::from([(String::new(), "configmaps".to_string()), ("apps".into(), "deployments".into())]);
    h.input(Input::Item(WorkItem::Retain { target: target.clone(), owned }));
    let sweep = |plural: &str, group: &str| WorkItem::Sweep {
        scope: SweepScope {
            target: target.clone(),
            group: group.into(),
            plural: plural.into(),
            namespace: None,
        },
        live: HashSet::new(),
    };
    h.input(Input::Item(sweep("configmaps", "")));
    assert!(!h.core.state().listed, "deployments are still being listed");
    h.input(Input::Item(sweep("deployments", "apps")));
    assert!(h.core.state().listed, "listed, even before the first fetch answered");
    assert_eq!(h.core.phase(), Phase::Starting);
}

/// The parts of the last input's commit command a message test reads.
struct Written {
    changes: Vec<Change>,
    message: String,
    author: Option<crate::worker::repo::Identity>,
    allow_empty: bool,
}

impl Harness {
    fn written(&self) -> Option<Written> {
        self.out.iter().find_map(|c| match c {
            Command::Commit { changes, message, author, allow_empty, .. } => Some(Written {
                changes: changes.clone(),
                message: message.clone(),
                author: author.clone(),
                allow_empty: *allow_empty,
            }),
            _ => None,
        })
    }

    fn set_policy(&mut self, policy: TargetPolicy) {
        let policies = [(TargetKey::new("ns", "t"), policy)].into();
        let settings = CoreSettings { policies, ..self.settings() };
        self.input(Input::Settings(settings));
    }

    fn item(&mut self, path: &str, content: Option<&str>, meta: ChangeMeta) -> &[Command] {
        let item = match content {
            Some(text) => WorkItem::Write { path: path.into(), content: Arc::from(text.as_bytes()), meta },
            None => WorkItem::Delete { path: path.into(), meta },
        };
        self.input(Input::Item(item))
    }

    fn sweep_all(&mut self, live: &[&str]) -> &[Command] {
        let scope = SweepScope {
            target: TargetKey::new("ns", "t"),
            group: String::new(),
            plural: "configmaps".into(),
            namespace: None,
        };
        let live = live.iter().map(|p| p.to_string()).collect();
        self.input(Input::Item(WorkItem::Sweep { scope, live }))
    }
}

#[test]
fn one_change_by_a_known_manager_is_its_authors_and_a_sync_is_the_operators() {
    let mut h = Harness::started(&[]);
    let meta = ChangeMeta { manager: Some("kubectl-edit".into()), ..h.meta(false) };
    h.item(A, Some("1"), meta);
    let written = h.written().expect("a commit");
    let author = written.author.expect("the manager is the author");
    assert_eq!(
        (author.name.as_str(), author.email.as_str()),
        ("kubectl-edit", "kubectl-edit@gitops-reverser")
    );
    assert!(!written.allow_empty);
    assert_eq!(
        written.message,
        "update configmaps/ns/a\n\nConfigMap ns/a (v1) was changed by kubectl-edit.\n\n\
         GitTarget: ns/t\nManager: kubectl-edit\nReplica: r1\n"
    );
    h.committed();

    // Listed objects (several, or one) are the operator's, whoever last wrote them.
    for paths in [&[B, C][..], &[A][..]] {
        for (n, path) in paths.iter().enumerate() {
            let meta = ChangeMeta { manager: Some("helm".into()), name: format!("x{n}"), ..h.meta(true) };
            h.item(path, Some("2"), meta);
        }
        h.sweep_all(&[A, B, C]);
        let written = h.written().expect("one sync commit");
        assert_eq!(written.changes.len(), paths.len());
        assert_eq!(written.author, None, "{}", written.message);
        h.committed();
    }
}

#[test]
fn a_targets_template_shapes_its_one_object_commits() {
    let mut h = Harness::started(&[]);
    let template =
        crate::worker::message::template::Template::parse("{{ .Kind }} {{ .Name }} by {{ .Manager }}");
    h.set_policy(TargetPolicy { template: Some(Arc::new(template.unwrap())), ..TargetPolicy::default() });
    h.item(A, Some("1"), ChangeMeta { manager: Some("helm".into()), ..h.meta(false) });
    let message = h.written().expect("a commit").message;
    assert_eq!(message, "ConfigMap a by helm\n\nGitTarget: ns/t\nManager: helm\nReplica: r1\n");
}

/// `prune: Never`: a delete keeps the file and writes a commit that says
/// so; sweeps, retains and relists delete none of the target's files.
#[test]
fn a_never_pruning_target_keeps_files_and_marks_deletes() {
    let mut h = Harness::started(&[(A, "1"), (B, "2")]);
    h.set_policy(TargetPolicy { prune: crate::api::Prune::Never, ..TargetPolicy::default() });
    h.advance(Duration::from_secs(7));
    h.item(
        A,
        None,
        ChangeMeta { operation: Operation::Delete, resource_version: Some("9".into()), ..h.meta(false) },
    );
    let marker = h.written().expect("a marker commit");
    assert!(marker.changes.is_empty() && marker.allow_empty, "the file stays");
    assert!(marker.message.starts_with("delete configmaps/ns/a (file kept)\n\n"), "{}", marker.message);
    assert!(
        marker.message.ends_with(
            "\n\nGitTarget: ns/t\nDeleted-At: 1970-01-01T00:00:07Z\nResource-Version: 9\nReplica: r1\n"
        ),
        "{}",
        marker.message
    );
    h.committed();
    assert_eq!(h.core.files.get(A), Some(&blob("1")));

    // A file the branch never had: nothing to mark.
    h.item(C, None, ChangeMeta { operation: Operation::Delete, ..h.meta(false) });
    assert!(h.written().is_none());
    // A relist that finds B gone, its sweep, and a retain of nothing: no file goes.
    h.item(B, None, ChangeMeta { operation: Operation::Delete, ..h.meta(true) });
    h.sweep_all(&[]);
    h.input(Input::Item(WorkItem::Retain { target: TargetKey::new("ns", "t"), owned: BTreeSet::new() }));
    assert!(h.written().is_none());
    assert_eq!((h.core.files.get(A), h.core.files.get(B)), (Some(&blob("1")), Some(&blob("2"))));

    // Back to Always: the next sweep deletes both.
    h.set_policy(TargetPolicy::default());
    h.sweep_all(&[]);
    let swept = h.written().expect("the sweep deletes");
    assert_eq!(swept.changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), [A, B]);
    assert!(swept.changes.iter().all(|c| c.content == Content::Gone) && !swept.allow_empty);
}

/// A marker is written again, like any commit, when the branch moved
/// under it before its push.
#[test]
fn a_marker_survives_a_replay() {
    let mut h = Harness::started(&[(A, "1")]);
    h.set_policy(TargetPolicy { prune: crate::api::Prune::Never, ..TargetPolicy::default() });
    h.item(A, None, ChangeMeta { operation: Operation::Delete, ..h.meta(false) });
    h.committed();
    h.advance(Duration::from_secs(5));
    assert!(h.push().is_some());
    h.input(Input::Pushed(PushReply::Stale));
    assert!(h.fetch().is_some(), "a stale push fetches");
    h.input(Input::Fetched(Ok(Fetched {
        tip: Some(oid(2)),
        files: vec![(A.into(), blob("1")), ("other/x".into(), blob("x"))],
        ..Fetched::default()
    })));
    let replayed = h.written().expect("the marker is written again");
    assert!(replayed.allow_empty && replayed.changes.is_empty(), "{}", replayed.message);
    assert!(replayed.message.starts_with("delete configmaps/ns/a (file kept)"));
}

/// Issue 17: a Secret is sealed afresh on every write, so a resync (a
/// restart, a takeover, a relist) would re-encrypt every Secret. Bytes
/// whose digest equals the tip's file settle to the tip's blob: an
/// unchanged Secret commits nothing, a changed one commits once; and after
/// a fetch the tip's fingerprints come from the shell.
#[test]
fn resyncs_of_an_unchanged_sealed_secret_commit_nothing() {
    let identity = age::x25519::Identity::generate();
    let recipients = crate::sops::Recipients::parse([identity.to_public().to_string()]).unwrap();
    let sealer = crate::sops::Sealer::new(recipients, crate::sops::DigestKey::new(vec![5; 32]).unwrap());
    let seal = |value: &str| -> Arc<[u8]> {
        let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "ns"}, "data": {"password": value}});
        sealer.seal("f/ns/core/secrets/db.sops.yaml", &secret).unwrap().file.into()
    };
    let path = "f/ns/core/secrets/db.sops.yaml".to_owned();
    let mut h = Harness::started(&[]);
    let first = seal("aA==");
    h.input(Input::Item(WorkItem::Write { path: path.clone(), content: first.clone(), meta: h.meta(false) }));
    assert!(h.commit().is_some(), "the first seal is written");
    h.committed();
    // A relist: the listed Secret, then the sweep that ends the list.
    let relist = |h: &mut Harness, content: Arc<[u8]>| {
        h.input(Input::Item(WorkItem::Write { path: path.clone(), content, meta: h.meta(true) }));
        let scope = SweepScope {
            target: TargetKey::new("ns", "t"),
            group: String::new(),
            plural: "secrets".into(),
            namespace: None,
        };
        h.input(Input::Item(WorkItem::Sweep { scope, live: HashSet::from([path.clone()]) }));
    };
    for i in 0..100 {
        if i % 2 == 0 {
            relist(&mut h, seal("aA=="));
        } else {
            h.input(Input::Item(WorkItem::Write {
                path: path.clone(),
                content: seal("aA=="),
                meta: h.meta(false),
            }));
        }
        assert!(h.commit().is_none(), "round {i}: an unchanged Secret is not committed again");
    }
    relist(&mut h, seal("bg=="));
    assert_eq!(h.commit().map(|(_, changes)| changes.len()), Some(1), "a changed Secret is");
    h.committed();

    // A new owner knows the tip's sealed files from its fetch only.
    let mut h = Harness::new();
    h.input(Input::Tick);
    let print = crate::worker::files::fingerprint(&path, &first).unwrap();
    h.input(Input::Fetched(Ok(Fetched {
        tip: Some(oid(7)),
        files: vec![(path.clone(), LocalRepo::blob_id(&first))],
        sealed: vec![(path.clone(), print)],
        ..Fetched::default()
    })));
    assert_eq!(h.core.phase(), Phase::Running);
    h.input(Input::Item(WorkItem::Write { path: path.clone(), content: seal("aA=="), meta: h.meta(true) }));
    assert!(h.commit().is_none(), "the fetched tip already holds this Secret");
}

/// CI's ha_steady: a standby whose first fetch was slow took in two relists
/// of the same Secret (sealed anew each time: other bytes, one digest) and
/// committed both in one commit, where only the last is written. Its
/// takeover settled the second to the first's blob, which no commit ever
/// wrote: the commit failed for good and the branch was never written.
#[test]
fn a_commit_writes_each_file_once_and_restores_only_blobs_that_exist() {
    let path = "f/ns/core/secrets/db.sops.yaml";
    let identity = age::x25519::Identity::generate();
    let recipients = crate::sops::Recipients::parse([identity.to_public().to_string()]).unwrap();
    let sealer = crate::sops::Sealer::new(recipients, crate::sops::DigestKey::new(vec![4; 32]).unwrap());
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "ns"}, "data": {"password": "aA=="}});
    let mut h = Harness::new();
    h.set_standby(true);
    assert!(h.fetch().is_some(), "a standby starts by fetching");
    let target = TargetKey::new("ns", "t");
    let scope = SweepScope { target, group: String::new(), plural: "secrets".into(), namespace: None };
    for _ in 0..2 {
        let content: Arc<[u8]> = sealer.seal(path, &secret).unwrap().file.into();
        let meta =
            ChangeMeta { kind: "Secret".into(), plural: "secrets".into(), name: "db".into(), ..h.meta(true) };
        h.input(Input::Item(WorkItem::Write { path: path.into(), content, meta }));
        let live = HashSet::from(["ns/db".to_owned()]);
        h.input(Input::Item(WorkItem::Sweep { scope: scope.clone(), live }));
    }
    // The branch does not exist yet.
    h.input(Input::Fetched(Ok(Fetched::default())));
    let mut written = HashSet::new();
    let mut check = |h: &Harness| {
        let (_, changes) = h.commit().expect("a commit");
        let paths: HashSet<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        let listed: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths.len(), changes.len(), "one change per file: {listed:?}");
        for change in &changes {
            match &change.content {
                Content::Bytes(bytes) => {
                    written.insert(LocalRepo::blob_id(bytes));
                }
                Content::Blob(id) => assert!(written.contains(id), "a restore of a blob no commit wrote"),
                Content::Gone => {}
            }
        }
    };
    check(&h);
    h.committed();
    h.set_standby(false);
    h.fetch().expect("the takeover fetches first");
    h.input(Input::Fetched(Ok(Fetched::default())));
    check(&h);
}

/// A handover pushes what arrived before it, then the worker stands by
/// with what came since instead of ending: should the new owner die before
/// its first push, this worker, its successor, still writes those changes.
#[test]
fn a_handed_over_worker_stands_by_with_what_came_since_and_writes_it_if_the_new_owner_dies() {
    let mut h = Harness::started(&[]);
    h.write(A, "1");
    h.input(Input::HandOver);
    let before = h.committed();
    assert_eq!(h.push().map(|p| p.0), Some(before), "what came before the handover is pushed");
    let tip = before.as_bytes()[0];
    // Arrives while that push is out: the new owner's standby has it too.
    h.clock += Duration::from_millis(100);
    h.write(A, "2");
    let since = h.committed();
    h.input(Input::Pushed(PushReply::Pushed));
    assert!(!h.out.iter().any(|c| matches!(c, Command::Done)), "it does not end: {:?}", h.out);
    assert!(h.core.state().handed_over, "the controller may release the shard");
    assert!(h.notes().iter().any(|n| matches!(n, Note::HandedOver { pending: 1 })), "{:?}", h.out);
    assert_eq!(h.core.state().unpushed, 1, "A=2 is kept");
    h.write_committed(&[(A, "3")]);
    for _ in 0..2 {
        h.advance(Duration::from_secs(10));
        assert!(h.push().is_none(), "a standby never pushes: {:?}", h.out);
    }
    // The new owner died before it pushed: this replica takes the shard
    // back. What the new owner wrote comes after the tip pushed here.
    h.set_standby(false);
    assert!(!h.core.state().handed_over);
    assert_eq!(h.fetch_history(), Some(HistoryFrom::Commit(before)));
    let known = h.fetch().expect("the takeover fetches first");
    assert!(known.contains(&since), "{known:?}");
    h.fetched(tip, &[(A, "1")], &[(A, Some("1"))]);
    let mut written = Vec::new();
    while let Some((_, changes)) = h.commit() {
        written.extend(changes.iter().map(|c| (c.path.clone(), bytes(c))));
        h.committed();
    }
    let expected = vec![(A.to_string(), Some("2".to_string())), (A.to_string(), Some("3".to_string()))];
    assert_eq!(written, expected, "both values the new owner never pushed");
}
