use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn settings(identity: &str) -> CoreSettings {
    CoreSettings {
        identity: identity.into(),
        shards: 4,
        lease_duration: Duration::from_secs(8),
        renew_deadline: Duration::from_secs(5),
        retry_period: Duration::from_secs(2),
        handover_wait: Duration::from_secs(20),
        warmup: Duration::from_secs(16),
        formation_settle: Duration::ZERO,
    }
}

fn record(version: &str, holder: Option<&str>) -> LeaseRecord {
    let at = Timestamp::UNIX_EPOCH;
    LeaseRecord {
        resource_version: version.into(),
        holder: holder.map(Into::into),
        acquire_time: Some(at),
        renew_time: Some(at),
        duration: Some(Duration::from_secs(8)),
        standby: BTreeSet::new(),
    }
}

/// A member record that joined `age` ago by its holder's clock.
fn member_record(version: &str, holder: &str, age: Duration, standby: &[u32]) -> LeaseRecord {
    let joined = Timestamp::UNIX_EPOCH;
    LeaseRecord {
        renew_time: Some(joined + age),
        standby: standby.iter().copied().collect(),
        ..record(version, Some(holder))
    }
}

fn writes(commands: &[Command]) -> Vec<Write> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Write(w) => Some(w.clone()),
            _ => None,
        })
        .collect()
}

fn events(commands: &[Command]) -> Vec<Event> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn wake(commands: &[Command]) -> Option<Instant> {
    commands.iter().rev().find_map(|c| match c {
        Command::WakeAt(at) => Some(*at),
        _ => None,
    })
}

fn shard_write(lease: u32, precondition: Precondition, action: Action) -> Write {
    Write { lease: LeaseName::Shard(lease), precondition, action }
}

fn version(v: &str) -> Precondition {
    Precondition::Version(v.into())
}

fn written(lease: LeaseName, version: &str) -> Input {
    Input::Written { lease, outcome: WriteOutcome::Written { resource_version: version.into() } }
}

/// A write that got no answer, carrying `renewTime` `at` (seconds).
fn timed_out(at: i64) -> WriteOutcome {
    WriteOutcome::TimedOut { renew_time: Timestamp::from_second(at).unwrap() }
}

/// `holder`'s version `version` with `renewTime` `at` (seconds).
fn renewed(version: &str, holder: &str, at: i64) -> LeaseRecord {
    LeaseRecord { renew_time: Some(Timestamp::from_second(at).unwrap()), ..record(version, Some(holder)) }
}

fn member(name: &str) -> LeaseName {
    LeaseName::Member(name.into())
}

/// A core whose member Lease writes are answered at once ("m1", "m2", ...);
/// shard Lease writes are left to the test.
struct Harness {
    core: ShardCore,
    versions: u64,
    answer_members: bool,
}

impl Harness {
    fn new(identity: &str) -> Self {
        Self { core: ShardCore::new(settings(identity)), versions: 0, answer_members: true }
    }

    /// Feeds `input`; returns every command, the member answers' too.
    fn feed(&mut self, input: Input, now: Instant) -> Vec<Command> {
        let out = self.core.handle(input, now);
        let mut all = out.clone();
        for write in writes(&out) {
            if let LeaseName::Member(_) = write.lease
                && self.answer_members
            {
                self.versions += 1;
                let answer = written(write.lease, &format!("m{}", self.versions));
                all.extend(self.feed(answer, now));
            }
        }
        all
    }

    fn observe(&mut self, lease: LeaseName, record: LeaseRecord, now: Instant) -> Vec<Command> {
        self.feed(Input::Observed { lease, record: Some(Arc::new(record)) }, now)
    }
}

/// A replica "a" that joined alone at `t0` and holds every shard it was
/// given (versions "a0".."a3"), all acquired at `t0`.
fn alone(t0: Instant) -> Harness {
    let mut h = Harness::new("a");
    let out = h.feed(Input::Listed, t0);
    for w in writes(&out) {
        let LeaseName::Shard(shard) = w.lease else { continue };
        h.feed(written(w.lease, &format!("a{shard}")), t0);
    }
    h
}

fn shard_writes(commands: &[Command]) -> Vec<Write> {
    writes(commands).into_iter().filter(|w| matches!(w.lease, LeaseName::Shard(_))).collect()
}

fn held(h: &Harness) -> BTreeSet<u32> {
    h.core.ownership().held.keys().copied().collect()
}

#[test]
fn nothing_is_written_before_the_first_list() {
    let t0 = Instant::now();
    let mut core = ShardCore::new(settings("a"));
    let out = core.handle(Input::Tick, t0);
    assert!(writes(&out).is_empty());
    assert!(wake(&out).is_some(), "it still asks to be woken");
}

#[test]
fn a_lone_replica_joins_then_creates_every_shard_lease() {
    let t0 = Instant::now();
    let mut core = ShardCore::new(settings("a"));
    let out = core.handle(Input::Listed, t0);
    let join = Write { lease: member("a"), precondition: Precondition::Absent, action: Action::Acquire };
    assert_eq!(writes(&out), [join]);
    let out = core.handle(written(member("a"), "m1"), t0 + SECOND);
    assert_eq!(events(&out), [Event::Joined { rejoined: false }]);
    let acquire: Vec<Write> = (0..4).map(|s| shard_write(s, Precondition::Absent, Action::Acquire)).collect();
    assert_eq!(writes(&out), acquire, "a fresh installation: no warm-up");
    assert_eq!(core.ownership().incoming, BTreeSet::from([0, 1, 2, 3]));
    let out = core.handle(written(LeaseName::Shard(2), "s2"), t0 + 2 * SECOND);
    let Some(Command::Publish(ownership)) = out.iter().find(|c| matches!(c, Command::Publish(_))) else {
        panic!("no publish: {out:?}")
    };
    let shard = ownership.held[&2];
    assert_eq!(shard.expires, t0 + SECOND + Duration::from_secs(8), "from when the write was sent");
    assert_eq!(shard.tenure, 1);
    assert!(!ownership.incoming.contains(&2));
}

#[test]
fn held_leases_are_renewed_every_retry_period_with_their_version() {
    let t0 = Instant::now();
    let mut h = alone(t0);
    let out = h.feed(Input::Tick, t0 + SECOND);
    assert!(writes(&out).is_empty());
    assert_eq!(wake(&out), Some(t0 + 2 * SECOND));
    let out = h.feed(Input::Tick, t0 + 2 * SECOND);
    let expected: Vec<Write> =
        (0..4).map(|s| shard_write(s, version(&format!("a{s}")), Action::Renew { standby: None })).collect();
    assert_eq!(shard_writes(&out), expected);
    let out = h.feed(Input::Tick, t0 + 3 * SECOND);
    assert!(shard_writes(&out).is_empty(), "one write per Lease in flight");
}

#[test]
fn a_shard_not_renewed_within_the_deadline_is_dropped() {
    let t0 = Instant::now();
    let mut h = alone(t0);
    h.feed(Input::Tick, t0 + 2 * SECOND);
    for s in [0, 2, 3] {
        h.feed(written(LeaseName::Shard(s), &format!("b{s}")), t0 + 2 * SECOND);
    }
    let lease = LeaseName::Shard(1);
    let out = h.feed(Input::Written { lease: lease.clone(), outcome: timed_out(9) }, t0 + 3 * SECOND);
    let again = shard_write(1, version("a1"), Action::Renew { standby: None });
    assert_eq!(shard_writes(&out), [again], "a timeout waited long enough: at once");
    let out = h.feed(Input::Tick, t0 + Duration::from_millis(4_900));
    assert!(held(&h).contains(&1), "no answer yet, but within the deadline");
    assert!(!shard_writes(&out).iter().any(|w| w.lease == lease));
    let out = h.feed(Input::Tick, t0 + 5 * SECOND);
    assert!(events(&out).contains(&Event::Lost { shard: 1, why: "not renewed within the renew deadline" }));
    assert_eq!(held(&h), BTreeSet::from([0, 2, 3]), "its fence shuts, the others stay");
}

#[test]
fn a_renewal_that_conflicts_loses_the_shard() {
    let t0 = Instant::now();
    let mut h = alone(t0);
    h.observe(LeaseName::Shard(3), record("a3", Some("a")), t0);
    h.feed(Input::Tick, t0 + 2 * SECOND);
    let conflict = Input::Written { lease: LeaseName::Shard(3), outcome: WriteOutcome::Conflict };
    let out = h.feed(conflict, t0 + 2 * SECOND);
    assert!(events(&out).contains(&Event::Lost { shard: 3, why: "another replica wrote the Lease" }));
    assert!(!held(&h).contains(&3));
    assert!(!shard_writes(&out).iter().any(|w| w.lease == LeaseName::Shard(3)), "a3 is spent");
}

/// `alone`, whose renewal of shard 1 sent at t0 + 2 s (`renewTime` 100)
/// got no answer, and whose retry at t0 + 3 s conflicted.
fn conflict_after_an_unanswered_renewal(t0: Instant) -> (Harness, Vec<Command>) {
    let mut h = alone(t0);
    let lease = LeaseName::Shard(1);
    h.feed(Input::Tick, t0 + 2 * SECOND);
    let out = h.feed(Input::Written { lease: lease.clone(), outcome: timed_out(100) }, t0 + 3 * SECOND);
    let again = shard_write(1, version("a1"), Action::Renew { standby: None });
    assert_eq!(shard_writes(&out), [again], "the retry requires the version known");
    let out = h.feed(Input::Written { lease, outcome: WriteOutcome::Conflict }, t0 + 3 * SECOND);
    (h, out)
}

#[test]
fn a_renewal_applied_without_an_answer_is_adopted_from_the_watch() {
    // The API server applied a renewal but its answer was lost; the retry,
    // with the old version, conflicts. The Lease still names "a" with the
    // lost write's renewTime: that is "a"'s own write, not a takeover.
    let t0 = Instant::now();
    let (mut h, out) = conflict_after_an_unanswered_renewal(t0);
    let lease = LeaseName::Shard(1);
    assert!(!events(&out).iter().any(|e| matches!(e, Event::Lost { .. })), "{out:?}");
    assert!(held(&h).contains(&1), "the fence stays open while the watch is awaited");
    let out = h.feed(Input::Tick, t0 + Duration::from_millis(3_500));
    assert!(!shard_writes(&out).iter().any(|w| w.lease == lease), "no renewal bound to conflict again");
    h.observe(lease.clone(), renewed("a1-other", "a", 99), t0 + 4 * SECOND);
    assert!(held(&h).contains(&1), "another renewTime of a's proves nothing yet");
    h.observe(lease.clone(), renewed("a1+", "a", 100), t0 + 4 * SECOND);
    let shard = h.core.ownership().held[&1];
    assert_eq!(
        shard.expires,
        t0 + 2 * SECOND + Duration::from_secs(8),
        "renewed when the lost write was sent"
    );
    assert_eq!(shard.tenure, 2, "the same tenure: the branch worker goes on");
    let out = h.feed(Input::Tick, t0 + 6 * SECOND);
    assert!(shard_writes(&out).contains(&shard_write(1, version("a1+"), Action::Renew { standby: None })));
    assert!(!events(&out).iter().any(|e| matches!(e, Event::Lost { shard: 1, .. })), "{out:?}");
}

#[test]
fn a_retry_whose_conflict_comes_after_the_watch_showed_the_lost_renewal_keeps_the_shard() {
    // As above, but the watch shows the lost write applied before the
    // retry's conflict comes (seen under load: the shard was given up and
    // its workers stopped, then taken again 0.1 s later).
    let t0 = Instant::now();
    let mut h = alone(t0);
    let lease = LeaseName::Shard(1);
    h.feed(Input::Tick, t0 + 2 * SECOND);
    h.feed(Input::Written { lease: lease.clone(), outcome: timed_out(100) }, t0 + 3 * SECOND);
    h.observe(lease.clone(), renewed("a1+", "a", 100), t0 + 3 * SECOND);
    let out =
        h.feed(Input::Written { lease: lease.clone(), outcome: WriteOutcome::Conflict }, t0 + 3 * SECOND);
    assert!(!events(&out).iter().any(|e| matches!(e, Event::Lost { .. })), "{out:?}");
    assert_eq!(h.core.ownership().held[&1].tenure, 2, "the same tenure: the branch worker goes on");
    let out = h.feed(Input::Tick, t0 + 5 * SECOND);
    assert!(shard_writes(&out).contains(&shard_write(1, version("a1+"), Action::Renew { standby: None })));
    // A conflict of that renewal is another holder's doing.
    let out = h.feed(Input::Written { lease, outcome: WriteOutcome::Conflict }, t0 + 5 * SECOND);
    assert!(events(&out).contains(&Event::Lost { shard: 1, why: "another replica wrote the Lease" }));
}

#[test]
fn a_conflict_after_an_unanswered_renewal_loses_when_the_watch_shows_another_holder() {
    let t0 = Instant::now();
    let (mut h, _) = conflict_after_an_unanswered_renewal(t0);
    let out = h.observe(LeaseName::Shard(1), renewed("b1", "b", 100), t0 + 4 * SECOND);
    assert!(
        events(&out).contains(&Event::Lost { shard: 1, why: "another replica wrote the Lease" }),
        "{out:?}"
    );
    assert!(!held(&h).contains(&1));
}

#[test]
fn an_unanswered_renewal_the_watch_never_settles_ends_at_the_renew_deadline() {
    let t0 = Instant::now();
    let (mut h, _) = conflict_after_an_unanswered_renewal(t0);
    let out = h.feed(Input::Tick, t0 + 5 * SECOND);
    assert!(events(&out).contains(&Event::Lost { shard: 1, why: "not renewed within the renew deadline" }));
}

#[test]
fn a_member_renewal_applied_without_an_answer_keeps_the_membership() {
    let t0 = Instant::now();
    let mut h = alone(t0);
    h.answer_members = false;
    let out = h.feed(Input::Tick, t0 + 2 * SECOND);
    let renewal = writes(&out).into_iter().find(|w| w.lease == member("a")).expect("a member renewal");
    let out = h.feed(Input::Written { lease: member("a"), outcome: timed_out(100) }, t0 + 3 * SECOND);
    assert!(writes(&out).iter().any(|w| w.lease == member("a") && w.precondition == renewal.precondition));
    h.feed(Input::Written { lease: member("a"), outcome: WriteOutcome::Conflict }, t0 + 3 * SECOND);
    assert!(h.core.is_member(), "awaiting the watch, still a member");
    h.observe(member("a"), renewed("m9", "a", 100), t0 + 4 * SECOND);
    h.answer_members = true;
    let out = h.feed(Input::Tick, t0 + 6 * SECOND);
    assert!(h.core.is_member());
    assert!(!events(&out).iter().any(|e| matches!(e, Event::Joined { .. })), "no rejoin: {out:?}");
    assert!(
        writes(&out).iter().any(|w| w.lease == member("a") && w.precondition == version("m9")),
        "{out:?}"
    );
}

#[test]
fn another_holder_expires_only_after_a_full_duration_unchanged_by_the_local_clock() {
    let t0 = Instant::now();
    let mut h = Harness::new("a");
    // "b" holds shard 0 but is not a member: "a" is given every shard.
    h.observe(LeaseName::Shard(0), record("b1", Some("b")), t0);
    let out = h.feed(Input::Listed, t0);
    assert_eq!(shard_writes(&out).len(), 3, "shard 0 is b's: {out:?}");
    assert!(h.core.ownership().incoming.contains(&0));
    // "b" renews at 4 s: the clock starts again.
    h.observe(LeaseName::Shard(0), record("b2", Some("b")), t0 + 4 * SECOND);
    let mut now = t0;
    while now < t0 + Duration::from_millis(11_900) {
        now += Duration::from_millis(100);
        let out = h.feed(Input::Tick, now);
        assert!(!out.iter().any(|c| matches!(c, Command::Write(w) if w.lease == LeaseName::Shard(0) && w.action == Action::Acquire)));
    }
    let out = h.feed(Input::Tick, t0 + 12 * SECOND);
    assert!(shard_writes(&out).contains(&shard_write(0, version("b2"), Action::Acquire)));
    let out = h.feed(written(LeaseName::Shard(0), "a0"), t0 + 12 * SECOND);
    assert!(events(&out).contains(&Event::TakenOver { shard: 0, previous: "b".into() }));
}

#[test]
fn the_wake_up_comes_at_the_expiry_of_a_desired_shard() {
    let t0 = Instant::now();
    let mut h = Harness::new("a");
    h.observe(LeaseName::Shard(0), record("b1", Some("b")), t0);
    h.feed(Input::Listed, t0);
    for s in 1..4 {
        h.feed(written(LeaseName::Shard(s), "x"), t0 + Duration::from_millis(6_100));
    }
    let out = h.feed(Input::Tick, t0 + Duration::from_millis(7_000));
    assert_eq!(wake(&out), Some(t0 + Duration::from_millis(8_050)));
}

#[test]
fn a_lost_race_is_not_run_again_on_the_same_version() {
    let t0 = Instant::now();
    let mut h = Harness::new("a");
    h.observe(LeaseName::Shard(0), record("r1", None), t0);
    let out = h.feed(Input::Listed, t0);
    assert!(shard_writes(&out).contains(&shard_write(0, version("r1"), Action::Acquire)));
    h.feed(Input::Written { lease: LeaseName::Shard(0), outcome: WriteOutcome::Conflict }, t0);
    let out = h.feed(Input::Tick, t0 + 3 * SECOND);
    assert!(!shard_writes(&out).iter().any(|w| w.lease == LeaseName::Shard(0)), "r1 is stale");
    let out = h.observe(LeaseName::Shard(0), record("r2", None), t0 + 3 * SECOND);
    assert_eq!(wake(&out), Some(t0 + 3 * SECOND + SETTLE), "a desired shard's new version is looked at soon");
    let out = h.feed(Input::Tick, t0 + 3 * SECOND + SETTLE);
    assert!(shard_writes(&out).contains(&shard_write(0, version("r2"), Action::Acquire)));
}

#[test]
fn a_failed_write_is_tried_again_after_a_pause() {
    let t0 = Instant::now();
    let mut core = ShardCore::new(settings("a"));
    core.handle(Input::Listed, t0);
    let failed = Input::Written { lease: member("a"), outcome: WriteOutcome::Failed("500".into()) };
    let out = core.handle(failed, t0);
    assert!(events(&out).iter().any(|e| matches!(e, Event::WriteFailed { .. })));
    assert!(writes(&out).is_empty());
    assert_eq!(wake(&out), Some(t0 + Duration::from_millis(500)), "a quarter of a retry period");
    let out = core.handle(Input::Tick, t0 + Duration::from_millis(499));
    assert!(writes(&out).is_empty());
    let out = core.handle(Input::Tick, t0 + Duration::from_millis(500));
    assert_eq!(writes(&out).len(), 1, "tried again");
}

/// "a" holds every shard; "b" joins it at once (neither is settled: both
/// are given shards).
fn joined_by_b(t0: Instant) -> (Harness, Instant) {
    let mut h = alone(t0);
    let mut now = t0;
    while now < t0 + Duration::from_secs(3) {
        now += SECOND;
        let age = now.duration_since(t0);
        let version = format!("mb{}", now.duration_since(t0).as_secs());
        h.observe(member("b"), member_record(&version, "b", age, &[]), now);
        let out = h.feed(Input::Tick, now);
        for w in shard_writes(&out) {
            h.feed(written(w.lease, &format!("{version}-renewed")), now);
        }
    }
    (h, now)
}

#[test]
fn a_shard_handed_over_is_written_until_announced_then_drained_then_released_with_its_fence_shut() {
    let t0 = Instant::now();
    let (mut h, now) = joined_by_b(t0);
    let ownership = h.core.ownership().clone();
    assert_eq!(ownership.held.len(), 4, "nothing released before an announcement: {ownership:?}");
    assert!(ownership.held.values().all(|s| !s.releasing), "and nothing stopped");
    let desired = h.core.assigned.clone().expect("assigned").1;
    let moving: Vec<u32> = (0..4).filter(|s| !desired.contains(s)).collect();
    assert!(!moving.is_empty(), "b is given some shards");
    h.observe(member("b"), member_record("mb-announce", "b", Duration::from_secs(4), &moving), now);
    let out = h.feed(Input::Tick, now + SETTLE);
    assert!(moving.iter().all(|s| h.core.ownership().is_releasing(*s)), "{:?}", h.core.ownership());
    assert!(!writes(&out).iter().any(|w| w.action == Action::Release), "not drained yet");
    let shard = moving[0];
    let out = h.feed(Input::Drained(shard), now + SETTLE);
    let releases: Vec<Write> = writes(&out).into_iter().filter(|w| w.action == Action::Release).collect();
    assert_eq!(releases.len(), 1, "{out:?}");
    assert_eq!(releases[0].lease, LeaseName::Shard(shard));
    assert!(matches!(releases[0].precondition, Precondition::Version(_)));
    assert!(!held(&h).contains(&shard), "the fence shut before the release was sent");
}

#[test]
fn a_replica_stands_by_warm_for_the_shards_it_is_next_in_line_for() {
    let t0 = Instant::now();
    let (mut h, now) = joined_by_b(t0);
    let desired = h.core.assigned.clone().expect("assigned").1;
    let moving: BTreeSet<u32> = (0..4).filter(|s| !desired.contains(s)).collect();
    assert!(h.core.ownership().successor.is_empty(), "held here still: it hands them over first");
    let announced: Vec<u32> = moving.iter().copied().collect();
    h.observe(member("b"), member_record("mb-announce", "b", Duration::from_secs(4), &announced), now);
    h.feed(Input::Tick, now + SETTLE);
    for shard in &moving {
        let out = h.feed(Input::Drained(*shard), now + SETTLE);
        for w in shard_writes(&out) {
            h.feed(written(w.lease, &format!("released-{shard}")), now + SETTLE);
        }
    }
    // Of two members, each is next in line for all the other's shards.
    assert_eq!(h.core.ownership().successor, moving, "{:?}", h.core.ownership());
    assert!(desired.iter().all(|s| !h.core.ownership().is_successor(*s)), "never for its own");

    // b takes them, then is killed: its member Lease lapses first, and its
    // shards are desired here seconds before they are free. Their standby
    // must not stop in between, or it would take what b lost with it.
    for shard in &moving {
        h.observe(
            LeaseName::Shard(*shard),
            member_record(&format!("b{shard}"), "b", Duration::from_secs(5), &[]),
            now,
        );
    }
    let mut t = now;
    while t < now + Duration::from_secs(20) && !moving.iter().all(|s| h.core.ownership().is_held(*s)) {
        t += Duration::from_millis(500);
        let out = h.feed(Input::Tick, t);
        for w in shard_writes(&out) {
            h.feed(written(w.lease, &format!("a-{}", t.duration_since(now).as_millis())), t);
        }
        let ownership = h.core.ownership();
        for shard in &moving {
            let covered =
                ownership.is_successor(*shard) || ownership.is_incoming(*shard) || ownership.is_held(*shard);
            assert!(covered, "shard {shard} without a standby at {:?}: {ownership:?}", t.duration_since(now));
        }
    }
    assert!(moving.iter().all(|s| h.core.ownership().is_held(*s)), "taken over: {:?}", h.core.ownership());
}

#[test]
fn without_an_announcement_a_handover_starts_after_the_wait() {
    let t0 = Instant::now();
    let (mut h, mut now) = joined_by_b(t0);
    let desired = h.core.assigned.clone().expect("assigned").1;
    let moving: Vec<u32> = (0..4).filter(|s| !desired.contains(s)).collect();
    assert!(!moving.is_empty());
    // The handover began with b's first observation, at t0 + 1 s.
    while now < t0 + Duration::from_secs(22) {
        now += SECOND;
        let age = now.duration_since(t0);
        let version = format!("mb{}", age.as_secs());
        h.observe(member("b"), member_record(&version, "b", age, &[]), now);
        let out = h.feed(Input::Tick, now);
        for w in shard_writes(&out) {
            h.feed(written(w.lease, &format!("{version}-renewed")), now);
        }
        let releasing = moving.iter().all(|s| h.core.ownership().is_releasing(*s));
        assert_eq!(releasing, now >= t0 + Duration::from_secs(21), "at {age:?}: {:?}", h.core.ownership());
    }
}

#[test]
fn stopping_leaves_the_membership_and_releases_drained_shards() {
    let t0 = Instant::now();
    let mut h = alone(t0);
    let out = h.feed(Input::Stop, t0 + SECOND);
    let leave = Write { lease: member("a"), precondition: version("m1"), action: Action::Release };
    assert!(writes(&out).contains(&leave), "{out:?}");
    assert!(!h.core.is_member());
    assert!((0..4).all(|s| h.core.ownership().is_releasing(s)), "no other member: no wait");
    assert!(!h.core.is_done());
    for s in 0..4 {
        let out = h.feed(Input::Drained(s), t0 + SECOND);
        assert_eq!(shard_writes(&out), [shard_write(s, version(&format!("a{s}")), Action::Release)]);
    }
    assert!(!h.core.is_done(), "the releases are in flight");
    for s in 0..4 {
        h.feed(written(LeaseName::Shard(s), "free"), t0 + SECOND);
    }
    assert!(h.core.is_done());
}

#[test]
fn leases_still_naming_this_replica_are_taken_back_if_desired_else_released() {
    let t0 = Instant::now();
    let mut h = Harness::new("a");
    h.observe(member("b"), member_record("mb", "b", Duration::from_secs(100), &[]), t0);
    h.observe(member("a"), member_record("ma", "a", Duration::from_secs(100), &[]), t0);
    for s in 0..4 {
        h.observe(LeaseName::Shard(s), record(&format!("v{s}"), Some("a")), t0);
    }
    let out = h.feed(Input::Listed, t0);
    let ws = shard_writes(&out);
    let desired = h.core.assigned.clone().expect("assigned").1;
    assert!(!desired.is_empty() && desired.len() < 4, "a replica that joined long ago is settled at once");
    for s in 0..4 {
        let action = if desired.contains(&s) { Action::Acquire } else { Action::Release };
        assert!(ws.contains(&shard_write(s, version(&format!("v{s}")), action)), "shard {s}: {ws:?}");
    }
}

#[test]
fn a_joining_replica_gets_no_shards_during_its_warm_up() {
    let t0 = Instant::now();
    let mut h = Harness::new("a");
    h.observe(member("b"), member_record("mb", "b", Duration::from_secs(100), &[]), t0);
    let out = h.feed(Input::Listed, t0);
    assert!(shard_writes(&out).is_empty());
    assert!(h.core.ownership().incoming.is_empty());
    let mut now = t0;
    while now < t0 + Duration::from_secs(16) {
        now += SECOND;
        let age = Duration::from_secs(100) + now.duration_since(t0);
        h.observe(
            member("b"),
            member_record(&format!("mb{}", now.duration_since(t0).as_secs()), "b", age, &[]),
            now,
        );
        h.feed(Input::Tick, now);
        if now < t0 + Duration::from_secs(16) {
            assert!(h.core.ownership().incoming.is_empty(), "warming up at {:?}", now.duration_since(t0));
        }
    }
    assert!(!h.core.ownership().incoming.is_empty(), "settled after 16 s");
    assert!(held(&h).is_empty(), "b's records are absent here, but none was live to take");
}

#[test]
fn after_a_lapse_shards_last_held_by_others_are_left_to_them_for_a_lease_duration() {
    let t0 = Instant::now();
    let mut h = Harness::new("a");
    h.observe(LeaseName::Shard(0), record("b1", Some("b")), t0);
    h.feed(Input::Listed, t0);
    h.answer_members = false;
    let out = h.feed(Input::Tick, t0 + 2 * SECOND);
    assert!(writes(&out).iter().any(|w| w.lease == member("a")), "a renewal that hangs");
    let out = h.feed(Input::Tick, t0 + 5 * SECOND);
    assert!(events(&out).contains(&Event::MembershipLapsed), "{out:?}");
    assert!(!h.core.is_member());
    h.answer_members = true;
    let out = h.feed(Input::Written { lease: member("a"), outcome: timed_out(9) }, t0 + 7 * SECOND);
    assert!(events(&out).contains(&Event::Joined { rejoined: true }), "{out:?}");
    let mut now = t0 + 7 * SECOND;
    while now < t0 + 15 * SECOND {
        let out = h.feed(Input::Tick, now);
        assert!(
            !shard_writes(&out).iter().any(|w| w.lease == LeaseName::Shard(0)),
            "b1 expired, but b may come back"
        );
        now += Duration::from_millis(500);
    }
    let out = h.feed(Input::Tick, t0 + 15 * SECOND);
    assert!(shard_writes(&out).contains(&shard_write(0, version("b1"), Action::Acquire)), "{out:?}");
}

#[test]
fn the_member_lease_announces_the_standby_of_incoming_shards() {
    let t0 = Instant::now();
    let mut h = Harness::new("a");
    h.observe(LeaseName::Shard(0), record("b1", Some("b")), t0);
    h.feed(Input::Listed, t0);
    let out = h.feed(Input::Standby(BTreeSet::from([0, 7])), t0 + SECOND);
    let announce = Write {
        lease: member("a"),
        precondition: version("m1"),
        action: Action::Renew { standby: Some(BTreeSet::from([0])) },
    };
    assert!(writes(&out).contains(&announce), "only what is incoming: {out:?}");
    assert!(events(&out).contains(&Event::Announced(BTreeSet::from([0]))));
}

#[test]
fn a_rebalancing_move_waits_for_the_view_to_settle_and_a_rescue_does_not() {
    let t0 = Instant::now();
    let mut h = Harness::new("a");
    // "b", a member for long, holds every shard and renews them.
    let b_renews = |h: &mut Harness, now: Instant| {
        let at = now.duration_since(t0);
        let age = Duration::from_secs(100) + at;
        h.observe(member("b"), member_record(&format!("mb{}", at.as_millis()), "b", age, &[]), now);
        for shard in 0..4 {
            h.observe(
                LeaseName::Shard(shard),
                record(&format!("b{shard}-{}", at.as_millis()), Some("b")),
                now,
            );
        }
    };
    let mut now = t0;
    b_renews(&mut h, now);
    h.feed(Input::Listed, now);
    let mut wanted_at = None;
    while now < t0 + Duration::from_secs(30) && h.core.ownership().incoming.is_empty() {
        now += Duration::from_millis(250);
        b_renews(&mut h, now);
        let out = h.feed(Input::Tick, now);
        assert!(shard_writes(&out).is_empty(), "b's shards are live: {out:?}");
        if wanted_at.is_none() && h.core.assigned().is_some_and(|(_, desired)| !desired.is_empty()) {
            wanted_at = Some(now);
        }
    }
    let wanted_at = wanted_at.expect("a is given shards after its warm-up");
    // Equal acquire times: b keeps its lowest shards, a is given the rest.
    assert_eq!(h.core.ownership().incoming, BTreeSet::from([2, 3]));
    let waited = now.duration_since(wanted_at);
    assert!(waited >= MOVE_SETTLE && waited < MOVE_SETTLE + SECOND / 2, "prepared after {waited:?}");

    // b stops: it gives up its member Lease first. Its shards are rescued
    // without a settle.
    h.observe(member("b"), record("mb-stopping", None), now);
    h.feed(Input::Tick, now + SETTLE);
    assert_eq!(h.core.ownership().incoming, BTreeSet::from([0, 1, 2, 3]));
}

#[test]
fn a_forming_installation_takes_free_shards_only_once_the_members_seen_stay_the_same() {
    let t0 = Instant::now();
    let settings = CoreSettings { formation_settle: 2 * SECOND, ..settings("a") };
    let mut h = Harness { core: ShardCore::new(settings), versions: 0, answer_members: true };
    let out = h.feed(Input::Listed, t0);
    assert_eq!(
        writes(&out),
        [Write { lease: member("a"), precondition: Precondition::Absent, action: Action::Acquire }]
    );
    assert!(shard_writes(&out).is_empty(), "just joined: the members seen may still grow");
    h.observe(member("b"), member_record("b1", "b", Duration::ZERO, &[]), t0 + SECOND);
    let out = h.feed(Input::Tick, t0 + 2 * SECOND);
    assert!(shard_writes(&out).is_empty(), "this pass is the first to count b");
    assert!(wake(&out).is_some_and(|at| at <= t0 + 4 * SECOND), "it looks again when the view settled");
    let out = h.feed(Input::Tick, t0 + 4 * SECOND);
    let taken: BTreeSet<u32> = shard_writes(&out)
        .iter()
        .filter_map(|w| match w.lease {
            LeaseName::Shard(s) => Some(s),
            LeaseName::Member(_) => None,
        })
        .collect();
    assert_eq!(taken.len(), 2, "its half of the two members' shards, not all four: {taken:?}");
}

#[test]
fn a_shard_its_desired_owner_leaves_free_is_taken_by_the_others_in_rendezvous_order() {
    let t0 = Instant::now();
    let mut h = Harness::new("a");
    // a and b are members for long; c, gone, holds every shard. b never
    // takes its half (it restarted: it waits a lease on what it listed).
    let old = Duration::from_secs(100);
    h.observe(member("a"), member_record("ma", "a", old, &[]), t0);
    for shard in 0..4 {
        h.observe(LeaseName::Shard(shard), record(&format!("c{shard}"), Some("c")), t0);
    }
    let mut taken_at = BTreeMap::new();
    let mut now = t0;
    while now < t0 + 15 * SECOND {
        if now.duration_since(t0).subsec_millis() == 0 {
            let age = old + now.duration_since(t0);
            h.observe(member("b"), member_record(&format!("mb{}", age.as_secs()), "b", age, &[]), now);
        }
        let out = if now == t0 { h.feed(Input::Listed, now) } else { h.feed(Input::Tick, now) };
        for w in shard_writes(&out) {
            let LeaseName::Shard(shard) = w.lease else { continue };
            if w.action == Action::Acquire {
                taken_at.insert(shard, now.duration_since(t0));
            }
            h.feed(written(w.lease, &format!("a{shard}-{}", now.duration_since(t0).as_millis())), now);
        }
        now += Duration::from_millis(50);
    }
    let (_, desired) = h.core.assigned().cloned().expect("assigned");
    assert_eq!(desired.len(), 2, "a and b are given half each");
    let expiry = Duration::from_secs(8);
    for shard in 0..4 {
        let at = taken_at.get(&shard).copied();
        if desired.contains(&shard) {
            assert!(
                at.is_some_and(|at| at >= expiry && at <= expiry + EXPIRY_SLACK + SETTLE),
                "{shard}: {at:?}"
            );
        } else {
            let rank = rank_among(shard, "a", ["a", "b"].into_iter()) as u32;
            assert_eq!(
                at,
                Some(expiry + BACKUP_DELAY + BACKUP_STEP * rank),
                "b's shard {shard} waits its turn"
            );
        }
    }
}
