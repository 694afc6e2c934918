//! A seeded, deterministic simulation of many shard coordinator cores
//! (design notes §9).
//!
//! N replicas run the real [`ShardCore`] against a simulated API server
//! with resourceVersion semantics (a write whose precondition is stale gets
//! a conflict, a create of an existing Lease too), driven by one seeded
//! random source and a simulated real time. Each replica has its own
//! monotonic clock (an offset and a rate within 1 ± [`DRIFT`]) and wall
//! clock (skewed by up to ±5 min). The model has:
//! - requests and answers that are delayed (now and then by 1–6 s: a slow
//!   API server applies a write after its client gave up), lost (the client
//!   times out after half a retry period; the write may have been applied) or refused;
//! - a watch per replica that delivers every Lease version in order, late,
//!   and stalls now and then; after a partition it lists again;
//! - partitions of one replica from the API server, freezes (SIGSTOP: its
//!   clock goes on, its inputs wait), crashes and restarts, leaves (a
//!   stop: hand over, drain, release) and joins, and rolling restarts of
//!   all replicas;
//! - a controller per replica that drains releasing shards and reports
//!   standby for incoming ones, each after a while.
//!
//! After every step it checks: at most one replica has an open fence for a
//! shard (a fence is open from the publish that holds the shard until the
//! publish that drops it, the crash of its process, or its expiry less
//! [`START_MARGIN`] on its own clock, whichever comes first: exactly what
//! `Fence::check` lets through); no shard is unowned for longer than
//! 2 × the lease duration while a majority of the replicas can reach the
//! API server; and, whenever the membership has been still for a minute,
//! the shards that changed holder since the last such point are at most
//! 1.25 × the ideal for the membership changes in between (+1 for
//! rounding). It counts Lease writes per renew period.
//!
//! A failing seed prints itself; `SIM_SEED=<n> cargo test --lib
//! shard::sim` replays it exactly (`SIM_TAIL=<lines>` prints more of its
//! log). `cargo test` runs `SEEDS` seeds of `STEPS` steps; `SIM_SEEDS`,
//! `SIM_STEPS`, `SIM_REPLICAS` (the most replicas), `SIM_MIN_REPLICAS`, `SIM_SHARDS`,
//! `SIM_THREADS` (2) and `SIM_KEEP_GOING` make a long run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::balance::{Rankings, ranked_placement};
use super::core::{
    Action, Command, CoreSettings, Event, Input, LeaseName, LeaseRecord, Precondition, ShardCore, Write,
    WriteOutcome, holdings,
};
use super::ownership::{Ownership, START_MARGIN};

/// A deliberate defect, to prove the checks can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sabotage {
    None,
    /// Acquire, renew and release without the resourceVersion
    /// precondition (a plain update, as kube-lease-manager does).
    SkipPreconditions,
    /// Count another replica's record as expired after half its duration.
    TakeOverEarly,
}

/// The bound on clock rates the simulation keeps: every replica's clock
/// runs at 1 ± 2 % of real time (the core is safe below 6.6 %, see
/// `core`); offsets are arbitrary.
const DRIFT: f64 = 0.02;
const LEASE_DURATION: Duration = Duration::from_secs(8);
const RENEW_DEADLINE: Duration = Duration::from_secs(5);
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// The client's timeout for a Lease write: half a retry period, so a
/// write that got lost is tried again well within the renew deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a stopping replica may take before it exits anyway.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(30);
/// Membership this still for this long is a point to count moves at
/// (a warm-up, a standby and a drain fit in it).
const STILL: Duration = Duration::from_secs(40);
/// Replicas that start together hand most shards on once the first has
/// created them all: moves count from the first still point after this.
const FORMATION: Duration = Duration::from_secs(60);
/// Watch deliveries fall on multiples of this.
const WATCH_TICK: Duration = Duration::from_millis(10);

/// SplitMix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Chance in parts per ten thousand.
    fn chance(&mut self, per_10k: u64) -> bool {
        self.below(10_000) < per_10k
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The shape of one run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    pub min_replicas: usize,
    pub max_replicas: usize,
    pub shards: u32,
}

impl Shape {
    /// The product's default of 32 shards.
    pub const DEFAULT: Self = Self { min_replicas: 5, max_replicas: 20, shards: 32 };
}

/// What a replica's process is doing, apart from running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trouble {
    None,
    Frozen { until: Duration },
    Partitioned { until: Duration },
}

struct Process {
    core: ShardCore,
    /// Where this process's inputs go while it is frozen.
    backlog: Vec<Input>,
    stopping_since: Option<Duration>,
    published: Ownership,
    /// When its pending wake-up is due (real time).
    wake: Option<Duration>,
}

struct Replica {
    name: String,
    process: Option<Process>,
    /// Messages to an older process are dropped.
    generation: u64,
    /// Local monotonic seconds = offset + rate × real seconds.
    offset: f64,
    rate: f64,
    /// Wall clock skew against real time, in seconds.
    skew: f64,
    trouble: Trouble,
    /// When a down replica starts again (`None`: it left).
    restart_at: Option<Duration>,
    /// The watch delivers in order: nothing before this.
    watch_clear: Duration,
    /// What the watch has yet to deliver, in order, and the latest time a
    /// delivery of it is scheduled for.
    watch: VecDeque<(Duration, Input)>,
    watch_flush: Option<Duration>,
    /// The shards its last publish held (their fences are in `Sim::fences`).
    open: BTreeSet<u32>,
}

struct Stored {
    record: Arc<LeaseRecord>,
    written_at: Duration,
}

/// What happens at a point of simulated real time.
enum Happening {
    /// An input reaches a replica's process.
    Deliver { replica: usize, generation: u64, input: Input },
    /// A write reaches the API server.
    /// `stamp`: the wall-clock time the write carries (the shell's `now`).
    Arrive {
        replica: usize,
        generation: u64,
        write: Write,
        sent: Duration,
        stamp: Timestamp,
        answer_lost: bool,
    },
    /// A replica's process asked to be woken.
    Wake { replica: usize, generation: u64 },
    /// A replica's watch delivers what is due.
    Watch { replica: usize, generation: u64 },
}

struct Rolling {
    /// The replicas still to restart, in order.
    left: VecDeque<usize>,
    /// The next one stops then.
    next_at: Duration,
}

pub(super) struct Sim {
    seed: u64,
    shape: Shape,
    rng: Rng,
    sabotage: Sabotage,
    epoch: Instant,
    /// The members' weights for the placement `faulted` computes.
    rankings: Rankings,
    now: Duration,
    seq: u64,
    /// Boxed: moving large values about in the tree costs more than the box.
    queue: BTreeMap<(Duration, u64), Box<Happening>>,
    replicas: Vec<Replica>,
    leases: BTreeMap<LeaseName, Stored>,
    version: u64,
    rolling: Option<Rolling>,
    /// Per shard: each replica's fence horizon (real time), while its
    /// last publish holds the shard.
    fences: Vec<BTreeMap<usize, Duration>>,
    /// Per shard: how long it has been without an open fence while a
    /// majority could reach the API server.
    unowned_for: Vec<Duration>,
    /// The last holder each shard Lease named.
    last_holder: Vec<Option<String>>,
    members: BTreeSet<String>,
    still_since: Duration,
    /// The installation formed: moves count from here.
    formed: bool,
    moves_in_window: u64,
    ideal_in_window: f64,
    pub steps: u64,
    pub stats: BTreeMap<&'static str, u64>,
    pub worst_unowned: Duration,
    /// Which shard, and when (simulated seconds), for the report.
    pub worst_unowned_at: (u32, f64),
    pub moves: u64,
    pub ideal_moves: f64,
    /// Still points at which moves were checked.
    pub windows: u64,
    /// The largest moves / ideal of a window (its moves, its ideal).
    pub worst_window: (u64, f64),
    pub writes: u64,
    pub replica_seconds: f64,
    log: VecDeque<String>,
    /// Lines of the log kept for a failure report (`SIM_TAIL`, at least 400).
    log_keep: usize,
    log_lines: u64,
    digest: std::collections::hash_map::DefaultHasher,
    problem: Option<String>,
    /// The shard a problem is about, to describe in the report.
    focus: Option<u32>,
    trace: Option<u64>,
    /// Per 10,000 watch deliveries, how many stall for 1–5 s: 20 at the
    /// default 32 shards and 20 replicas, fewer for more Leases, so a watch
    /// stalls about as often per second at any size (once in about 20 s).
    stall_chance: u64,
}

const LOG_KEEP: usize = 400;

impl Sim {
    pub(super) fn new(seed: u64, shape: Shape, sabotage: Sabotage) -> Self {
        let mut rng = Rng::new(seed);
        let count =
            shape.min_replicas + rng.below((shape.max_replicas - shape.min_replicas + 1) as u64) as usize;
        let mut sim = Self {
            seed,
            shape,
            rng,
            sabotage,
            epoch: Instant::now(),
            rankings: Rankings::new(shape.shards),
            now: Duration::ZERO,
            seq: 0,
            queue: BTreeMap::new(),
            replicas: Vec::new(),
            leases: BTreeMap::new(),
            version: 0,
            rolling: None,
            fences: vec![BTreeMap::new(); shape.shards as usize],
            unowned_for: vec![Duration::ZERO; shape.shards as usize],
            last_holder: vec![None; shape.shards as usize],
            members: BTreeSet::new(),
            still_since: Duration::ZERO,
            formed: false,
            moves_in_window: 0,
            ideal_in_window: 0.0,
            steps: 0,
            stats: BTreeMap::new(),
            worst_unowned: Duration::ZERO,
            worst_unowned_at: (0, 0.0),
            moves: 0,
            ideal_moves: 0.0,
            windows: 0,
            worst_window: (0, 0.0),
            writes: 0,
            replica_seconds: 0.0,
            log: VecDeque::new(),
            log_keep: env("SIM_TAIL").map_or(LOG_KEEP, |t| (t as usize).max(LOG_KEEP)),
            log_lines: 0,
            digest: Default::default(),
            problem: None,
            focus: None,
            trace: env("SIM_TRACE"),
            stall_chance: (20 * 52 / (u64::from(shape.shards) + shape.max_replicas as u64)).clamp(1, 20),
        };
        for _ in 0..count {
            sim.add_replica();
        }
        sim
    }

    fn log(&mut self, line: String) {
        let line = format!("{:>9.3} {line}", self.now.as_secs_f64());
        line.hash(&mut self.digest);
        self.log_lines += 1;
        if self.log.len() >= self.log_keep {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    /// `SIM_TRACE=<shard>` logs every write and observation of that shard.
    fn traced(&self, lease: &LeaseName) -> bool {
        matches!(lease, LeaseName::Shard(shard) if Some(u64::from(*shard)) == self.trace)
    }

    fn count(&mut self, kind: &'static str) {
        *self.stats.entry(kind).or_default() += 1;
    }

    /// A digest of everything logged: equal runs, equal digests.
    pub(super) fn digest(&self) -> (u64, u64) {
        (self.digest.finish(), self.log_lines)
    }

    fn schedule(&mut self, at: Duration, happening: Happening) {
        self.seq += 1;
        self.queue.insert((at, self.seq), Box::new(happening));
    }

    // ---- clocks ----

    fn local(&self, replica: usize) -> Instant {
        let r = &self.replicas[replica];
        self.epoch + Duration::from_secs_f64(r.offset + r.rate * self.now.as_secs_f64())
    }

    /// The real time at which `replica`'s clock reads `at`.
    fn real(&self, replica: usize, at: Instant) -> Duration {
        let r = &self.replicas[replica];
        let local = at.saturating_duration_since(self.epoch).as_secs_f64();
        Duration::from_secs_f64(((local - r.offset) / r.rate).max(0.0))
    }

    fn wall(&self, replica: usize) -> Timestamp {
        let r = &self.replicas[replica];
        let seconds = 1_700_000_000.0 + r.skew + r.rate * self.now.as_secs_f64();
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs_f64(seconds)
    }

    // ---- replicas ----

    fn add_replica(&mut self) {
        let index = self.replicas.len();
        let rate = 1.0 + DRIFT * (2.0 * self.rng.unit() - 1.0);
        let offset = 1.0 + self.rng.unit() * 10_000.0;
        let skew = 600.0 * (self.rng.unit() - 0.5);
        self.replicas.push(Replica {
            name: format!("replica-{index}"),
            process: None,
            generation: 0,
            offset,
            rate,
            skew,
            trouble: Trouble::None,
            restart_at: None,
            watch_clear: Duration::ZERO,
            watch: VecDeque::new(),
            watch_flush: None,
            open: BTreeSet::new(),
        });
        self.start(index);
    }

    fn start(&mut self, replica: usize) {
        let settings = CoreSettings {
            identity: self.replicas[replica].name.clone(),
            shards: self.shape.shards,
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
            handover_wait: Duration::from_secs(20),
            warmup: crate::shard::settings::warmup(LEASE_DURATION),
            formation_settle: super::core::FORMATION_SETTLE,
        };
        let r = &mut self.replicas[replica];
        r.generation += 1;
        r.restart_at = None;
        r.trouble = Trouble::None;
        r.process = Some(Process {
            core: ShardCore::new(settings).sabotaged(self.sabotage),
            backlog: Vec::new(),
            stopping_since: None,
            published: Ownership::default(),
            wake: None,
        });
        let name = r.name.clone();
        self.log(format!("{name}: starts"));
        self.list(replica);
        let at = self.replicas[replica].watch_clear;
        self.watch_push(replica, at, Input::Listed);
    }

    /// The watch lists every Lease (a start, or after a partition).
    fn list(&mut self, replica: usize) {
        let observed: Vec<Input> = self
            .leases
            .iter()
            .map(|(lease, stored)| Input::Observed {
                lease: lease.clone(),
                record: Some(stored.record.clone()),
            })
            .collect();
        for input in observed {
            self.watch_deliver(replica, input);
        }
    }

    fn watch_deliver(&mut self, replica: usize, input: Input) {
        let delay = if self.rng.chance(self.stall_chance) {
            self.rng.millis(1_000, 5_000)
        } else {
            self.rng.millis(1, 100)
        };
        let r = &mut self.replicas[replica];
        let at = r.watch_clear.max(self.now + delay);
        // Versions due within one tick go in one delivery: at 100
        // replicas a happening per version was most of the run's time.
        let tick = WATCH_TICK.as_millis();
        let at = Duration::from_millis((at.as_millis().div_ceil(tick) * tick) as u64);
        r.watch_clear = at;
        self.watch_push(replica, at, input);
    }

    fn watch_push(&mut self, replica: usize, at: Duration, input: Input) {
        let r = &mut self.replicas[replica];
        r.watch.push_back((at, input));
        if r.watch_flush.is_none_or(|flush| flush < at) {
            r.watch_flush = Some(at);
            let generation = r.generation;
            self.schedule(at, Happening::Watch { replica, generation });
        }
    }

    /// The process ends (a crash, or the end of a stop).
    fn end(&mut self, replica: usize, why: &str) {
        let r = &mut self.replicas[replica];
        r.process = None;
        r.generation += 1;
        r.trouble = Trouble::None;
        r.watch.clear();
        r.watch_flush = None;
        let open = std::mem::take(&mut r.open);
        let name = r.name.clone();
        // A process that is gone pushes nothing.
        for shard in open {
            self.fences[shard as usize].remove(&replica);
        }
        self.log(format!("{name}: ends ({why})"));
    }

    fn reachable(&self, replica: usize) -> bool {
        let r = &self.replicas[replica];
        r.process.as_ref().is_some_and(|p| p.stopping_since.is_none()) && r.trouble == Trouble::None
    }

    // ---- running the cores ----

    fn feed(&mut self, replica: usize, input: Input) {
        let now = self.local(replica);
        let Some(process) = self.replicas[replica].process.as_mut() else { return };
        if process.stopping_since.is_none() && matches!(input, Input::Stop) {
            process.stopping_since = Some(self.now);
        }
        let wanted = |p: &Process, shard: u64| {
            p.core.assigned().map(|(m, d)| (m.clone(), d.contains(&(shard as u32))))
        };
        let before = self.trace.and_then(|shard| wanted(process, shard));
        let out = process.core.handle(input, now);
        if let Some(shard) = self.trace
            && let Some(after) = wanted(process, shard)
            && before.as_ref() != Some(&after)
        {
            let name = self.replicas[replica].name.clone();
            self.log(format!("{name}: members {:?}, shard {shard} desired: {}", after.0, after.1));
        }
        for command in out {
            self.carry(replica, command);
        }
    }

    fn carry(&mut self, replica: usize, command: Command) {
        let generation = self.replicas[replica].generation;
        match command {
            Command::Write(write) => {
                self.writes += 1;
                if self.traced(&write.lease) {
                    let name = self.replicas[replica].name.clone();
                    self.log(format!("{name}: sends {write:?}"));
                }
                let stamp = self.wall(replica);
                let timed_out = WriteOutcome::TimedOut { renew_time: stamp };
                let partitioned = matches!(self.replicas[replica].trouble, Trouble::Partitioned { .. });
                if partitioned || self.rng.chance(100) {
                    let input = Input::Written { lease: write.lease, outcome: timed_out };
                    self.schedule(
                        self.now + REQUEST_TIMEOUT,
                        Happening::Deliver { replica, generation, input },
                    );
                    return;
                }
                let sent = self.now;
                // A slow API server applies some writes after their client
                // gave up on them.
                let slow = self.rng.chance(300);
                let delay = if slow { self.rng.millis(1_000, 6_000) } else { self.rng.millis(1, 50) };
                let answer_lost = slow || self.rng.chance(100);
                if slow {
                    let input = Input::Written { lease: write.lease.clone(), outcome: timed_out };
                    self.schedule(sent + REQUEST_TIMEOUT, Happening::Deliver { replica, generation, input });
                }
                self.schedule(
                    sent + delay,
                    Happening::Arrive { replica, generation, write, sent, stamp, answer_lost },
                );
            }
            Command::Publish(ownership) => self.published(replica, ownership),
            Command::Event(event) => self.event(replica, event),
            Command::WakeAt(at) => {
                let at = self.real(replica, at).max(self.now);
                if let Some(process) = self.replicas[replica].process.as_mut() {
                    process.wake = Some(at);
                    self.schedule(at, Happening::Wake { replica, generation });
                }
            }
        }
    }

    fn event(&mut self, replica: usize, event: Event) {
        let kind = match &event {
            Event::Joined { rejoined: false } => "joined",
            Event::Joined { rejoined: true } => "rejoined",
            Event::MembershipLapsed => "membership lapsed",
            Event::DuplicateIdentity { .. } => "duplicate identity",
            Event::Announced(_) => "announced",
            // A shard the placement gives another member: taken as a backup.
            Event::Acquired { shard, .. } if !self.desires(replica, *shard) => "acquired as backup",
            Event::Acquired { .. } => "acquired",
            Event::TakenOver { .. } => "taken over",
            Event::Released(_) => "released",
            Event::Lost { .. } => "lost",
            Event::WriteFailed { .. } => "write failed",
        };
        self.count(kind);
        if !matches!(event, Event::WriteFailed { .. }) {
            let name = self.replicas[replica].name.clone();
            self.log(format!("{name}: {event:?}"));
        }
    }

    fn desires(&self, replica: usize, shard: u32) -> bool {
        let process = self.replicas[replica].process.as_ref();
        process.and_then(|p| p.core.assigned()).is_some_and(|(_, desired)| desired.contains(&shard))
    }

    /// A publish opens, extends and shuts fences; the controller reacts.
    fn published(&mut self, replica: usize, ownership: Ownership) {
        let now = self.now;
        let horizons: BTreeMap<u32, Duration> = ownership
            .held
            .iter()
            .map(|(shard, held)| {
                (*shard, self.real(replica, held.expires.checked_sub(START_MARGIN).unwrap_or(held.expires)))
            })
            .collect();
        for shard in std::mem::take(&mut self.replicas[replica].open) {
            self.fences[shard as usize].remove(&replica);
        }
        for (shard, until) in &horizons {
            let fences = &mut self.fences[*shard as usize];
            fences.retain(|_, open| *open > now);
            if *until <= now {
                continue;
            }
            if let Some((other, open)) = fences.iter().next() {
                self.focus.get_or_insert(*shard);
                let problem = format!(
                    "two open fences for shard {shard}: {} until {:.3}, {} from {:.3} until {:.3}",
                    self.replicas[*other].name,
                    open.as_secs_f64(),
                    self.replicas[replica].name,
                    now.as_secs_f64(),
                    until.as_secs_f64()
                );
                self.problem.get_or_insert(problem);
            }
            fences.insert(replica, *until);
        }
        self.replicas[replica].open = horizons.keys().copied().collect();
        // The controller drains what is releasing and reports standby for
        // what is incoming, each after a while.
        let Some(process) = self.replicas[replica].process.as_mut() else { return };
        let before = std::mem::replace(&mut process.published, ownership.clone());
        let generation = self.replicas[replica].generation;
        for shard in
            ownership.held.keys().filter(|s| ownership.is_releasing(**s) && !before.is_releasing(**s))
        {
            let at = now + self.rng.millis(200, 3_000);
            self.schedule(at, Happening::Deliver { replica, generation, input: Input::Drained(*shard) });
        }
        if ownership.incoming != before.incoming {
            let at = now + self.rng.millis(500, 4_000);
            let input = Input::Standby(ownership.incoming.clone());
            self.schedule(at, Happening::Deliver { replica, generation, input });
        }
    }

    /// The API server applies a write, if its precondition holds.
    fn apply(&mut self, replica: usize, write: &Write, wall: Timestamp) -> WriteOutcome {
        if self.rng.chance(100) {
            return WriteOutcome::Failed("500 Internal Server Error".into());
        }
        let current = self.leases.get(&write.lease);
        let holds = match (&write.precondition, current) {
            (Precondition::Absent, None) => true,
            (Precondition::Absent, Some(_)) => false,
            (Precondition::Version(v), Some(stored)) => stored.record.resource_version == *v,
            (Precondition::Version(_), None) => false,
            (Precondition::Unconditional, _) => true,
        };
        if !holds {
            self.count("conflict");
            return WriteOutcome::Conflict;
        }
        let me = self.replicas[replica].name.clone();
        let old = current.map(|s| (*s.record).clone());
        let same_holder = old.as_ref().and_then(|o| o.holder.clone()).as_deref() == Some(me.as_str());
        self.version += 1;
        let mut record = old.clone().unwrap_or(LeaseRecord {
            resource_version: String::new(),
            holder: None,
            acquire_time: None,
            renew_time: None,
            duration: None,
            standby: BTreeSet::new(),
        });
        record.resource_version = self.version.to_string();
        match &write.action {
            Action::Acquire => {
                if !same_holder {
                    record.acquire_time = Some(wall);
                    record.standby.clear();
                }
                record.holder = Some(me.clone());
                record.renew_time = Some(wall);
                record.duration = Some(LEASE_DURATION);
            }
            Action::Renew { standby } => {
                record.holder = Some(me.clone());
                record.renew_time = Some(wall);
                record.duration = Some(LEASE_DURATION);
                if let Some(standby) = standby {
                    record.standby = standby.clone();
                }
            }
            Action::Release => {
                record.holder = None;
                record.renew_time = Some(wall);
            }
        }
        if let LeaseName::Shard(shard) = write.lease
            && record.holder.is_some()
        {
            let last = &mut self.last_holder[shard as usize];
            let moved = last.as_ref().is_some_and(|l| *l != me);
            let from = last.replace(me.clone());
            if moved && self.formed {
                self.moves += 1;
                self.moves_in_window += 1;
                self.log(format!("server: shard {shard} moves from {} to {me}", from.unwrap_or_default()));
            }
        }
        let resource_version = record.resource_version.clone();
        let record = Arc::new(record);
        self.leases.insert(write.lease.clone(), Stored { record: record.clone(), written_at: self.now });
        for other in 0..self.replicas.len() {
            let r = &self.replicas[other];
            if r.process.is_some() && !matches!(r.trouble, Trouble::Partitioned { .. }) {
                let input = Input::Observed { lease: write.lease.clone(), record: Some(record.clone()) };
                self.watch_deliver(other, input);
            }
        }
        WriteOutcome::Written { resource_version }
    }

    fn deliver(&mut self, replica: usize, input: Input) {
        if let Input::Written { lease, .. } | Input::Observed { lease, .. } = &input
            && self.traced(lease)
        {
            let name = self.replicas[replica].name.clone();
            self.log(format!("{name}: gets {input:?}"));
        }
        let r = &mut self.replicas[replica];
        match (&mut r.process, r.trouble) {
            (Some(process), Trouble::Frozen { .. }) => process.backlog.push(input),
            (Some(_), _) => self.feed(replica, input),
            (None, _) => {}
        }
    }

    fn happen(&mut self, happening: Happening) {
        match happening {
            Happening::Deliver { replica, generation, input } => {
                if self.replicas[replica].generation == generation {
                    self.deliver(replica, input);
                }
            }
            Happening::Watch { replica, generation } => {
                if self.replicas[replica].generation != generation {
                    return;
                }
                let now = self.now;
                while let Some((at, _)) = self.replicas[replica].watch.front()
                    && *at <= now
                {
                    let Some((_, input)) = self.replicas[replica].watch.pop_front() else { break };
                    self.deliver(replica, input);
                }
            }
            Happening::Arrive { replica, generation, write, sent, stamp, answer_lost } => {
                let outcome = self.apply(replica, &write, stamp);
                if answer_lost && sent + REQUEST_TIMEOUT <= self.now {
                    return; // its timeout was delivered already
                }
                let answer_at = self.now + self.rng.millis(1, 50);
                let partitioned = matches!(self.replicas[replica].trouble, Trouble::Partitioned { .. });
                let (at, outcome) = if answer_lost || partitioned || answer_at > sent + REQUEST_TIMEOUT {
                    (sent + REQUEST_TIMEOUT, WriteOutcome::TimedOut { renew_time: stamp })
                } else {
                    (answer_at, outcome)
                };
                let input = Input::Written { lease: write.lease, outcome };
                self.schedule(at.max(self.now), Happening::Deliver { replica, generation, input });
            }
            Happening::Wake { replica, generation } => {
                let r = &self.replicas[replica];
                if r.generation != generation {
                    return;
                }
                let due = r.process.as_ref().is_some_and(|p| p.wake == Some(self.now));
                if due {
                    if let Some(p) = self.replicas[replica].process.as_mut() {
                        p.wake = None;
                    }
                    self.happen(Happening::Deliver { replica, generation, input: Input::Tick });
                }
            }
        }
    }

    // ---- faults and life ----

    /// A fault of `replica` starts the clock again for the shards it held
    /// or was given: each failure may cost up to a lease duration (a
    /// replica that restarts counts every record it lists as live for one),
    /// and the bound is per failure.
    fn faulted(&mut self, replica: usize) {
        let r = &self.replicas[replica];
        let mut shards = r.open.clone();
        if let Some((_, desired)) = r.process.as_ref().and_then(|p| p.core.assigned()) {
            shards.extend(desired);
        }
        // And what the others are about to give it.
        let members: Vec<String> = self.server_members().into_iter().collect();
        if let Some(given) = ranked_placement(
            &mut self.rankings,
            &members,
            &holdings(self.leases.iter().map(|(l, s)| (l, &*s.record))),
        )
        .get(&r.name)
        {
            shards.extend(given);
        }
        for shard in shards {
            self.unowned_for[shard as usize] = Duration::ZERO;
        }
    }

    fn faults(&mut self) {
        let n = self.replicas.len();
        let replica = self.rng.below(n as u64) as usize;
        let troubled = self.replicas[replica].trouble != Trouble::None;
        let up = self.replicas[replica].process.as_ref().is_some_and(|p| p.stopping_since.is_none());
        let name = self.replicas[replica].name.clone();
        if up && !troubled && self.rolling.is_none() {
            self.faulted(replica);
            if self.rng.chance(30) {
                self.end(replica, "crash");
                self.count("crash");
                self.replicas[replica].restart_at = Some(self.now + self.rng.millis(1_000, 20_000));
            } else if self.rng.chance(30) {
                let until = self.now + self.rng.millis(1_000, 15_000);
                self.replicas[replica].trouble = Trouble::Frozen { until };
                self.count("freeze");
                self.log(format!("{name}: frozen until {:.3}", until.as_secs_f64()));
            } else if self.rng.chance(30) {
                let until = self.now + self.rng.millis(1_000, 20_000);
                self.replicas[replica].trouble = Trouble::Partitioned { until };
                self.count("partition");
                self.log(format!("{name}: cut off until {:.3}", until.as_secs_f64()));
            } else if self.rng.chance(15) && self.running() > self.shape.min_replicas {
                self.count("leave");
                self.log(format!("{name}: leaves"));
                self.feed(replica, Input::Stop);
            }
        }
        let down_for_good =
            (0..n).find(|r| self.replicas[*r].process.is_none() && self.replicas[*r].restart_at.is_none());
        if self.rolling.is_none() && self.rng.chance(15) {
            match down_for_good {
                Some(replica) => {
                    self.count("join");
                    self.start(replica);
                }
                None if n < self.shape.max_replicas => {
                    self.count("join");
                    self.add_replica();
                }
                None => {}
            }
        }
        if self.rolling.is_none() && self.rng.chance(3) {
            let left: VecDeque<usize> = (0..n).filter(|r| self.replicas[*r].process.is_some()).collect();
            self.count("rolling restart");
            self.log(format!("rolling restart of {} replicas", left.len()));
            self.rolling = Some(Rolling { left, next_at: self.now });
        }
    }

    fn running(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.process.as_ref().is_some_and(|p| p.stopping_since.is_none()))
            .count()
    }

    /// Ends troubles, restarts, exits stopped processes, rolls on.
    fn life(&mut self) {
        for replica in 0..self.replicas.len() {
            match self.replicas[replica].trouble {
                Trouble::Frozen { until } if until <= self.now => {
                    self.replicas[replica].trouble = Trouble::None;
                    let backlog =
                        self.replicas[replica].process.as_mut().map(|p| std::mem::take(&mut p.backlog));
                    for input in backlog.unwrap_or_default() {
                        self.feed(replica, input);
                    }
                    self.feed(replica, Input::Tick);
                }
                Trouble::Partitioned { until } if until <= self.now => {
                    self.replicas[replica].trouble = Trouble::None;
                    self.list(replica);
                }
                _ => {}
            }
            if self.replicas[replica].restart_at.is_some_and(|at| at <= self.now) {
                self.start(replica);
            }
            let exit = self.replicas[replica].process.as_ref().and_then(|p| {
                let since = p.stopping_since?;
                (p.core.is_done() || self.now >= since + SHUTDOWN_BUDGET).then_some(p.core.is_done())
            });
            if let Some(done) = exit {
                self.end(replica, if done { "stopped" } else { "stop timed out" });
                if let Some(rolling) = &mut self.rolling
                    && rolling.left.front() == Some(&replica)
                {
                    rolling.left.pop_front();
                    let restart = self.now + self.rng.millis(1_000, 3_000);
                    self.replicas[replica].restart_at = Some(restart);
                    if let Some(rolling) = &mut self.rolling {
                        rolling.next_at = restart + self.rng.millis(5_000, 10_000);
                    }
                }
            }
        }
        let Some(rolling) = &self.rolling else { return };
        if rolling.next_at > self.now {
            return;
        }
        match rolling.left.front().copied() {
            None => self.rolling = None,
            Some(replica) => {
                let stopping = self.replicas[replica].process.as_ref().map(|p| p.stopping_since.is_some());
                match stopping {
                    Some(false) => self.feed(replica, Input::Stop),
                    Some(true) => {}
                    None => {
                        if let Some(rolling) = &mut self.rolling {
                            rolling.left.pop_front();
                        }
                    }
                }
            }
        }
    }

    // ---- checks ----

    fn check(&mut self, elapsed: Duration) -> Result<(), String> {
        let now = self.now;
        let population =
            self.replicas.iter().filter(|r| r.process.is_some() || r.restart_at.is_some()).count();
        let reachable = (0..self.replicas.len()).filter(|r| self.reachable(*r)).count();
        let majority = reachable * 2 > population;
        for shard in 0..self.shape.shards {
            let owned = self.fences[shard as usize].values().any(|until| *until > now);
            let unowned = &mut self.unowned_for[shard as usize];
            if owned {
                *unowned = Duration::ZERO;
            } else if majority {
                *unowned += elapsed;
                if *unowned > self.worst_unowned {
                    self.worst_unowned = *unowned;
                    self.worst_unowned_at = (shard, now.as_secs_f64());
                }
                if *unowned > 2 * LEASE_DURATION {
                    self.focus.get_or_insert(shard);
                    self.problem.get_or_insert(format!(
                        "shard {shard} unowned for {:.3} s while {reachable} of {population} replicas reach the API server",
                        unowned.as_secs_f64()
                    ));
                }
            }
        }
        self.count_moves();
        if let Some(problem) = self.problem.take() {
            return Err(self.report(&problem));
        }
        Ok(())
    }

    /// The live members by the API server's records and real time. A
    /// record counts as expired as soon as the fastest clock could say so.
    fn server_members(&self) -> BTreeSet<String> {
        let live = RENEW_DEADLINE.div_f64(1.0 + DRIFT);
        // Member Leases sort before shard Leases.
        self.leases
            .iter()
            .take_while(|(lease, _)| matches!(lease, LeaseName::Member(_)))
            .filter(|(_, s)| s.record.holder().is_some() && s.written_at + live > self.now)
            .filter_map(|(_, s)| s.record.holder.clone())
            .collect()
    }

    fn count_moves(&mut self) {
        let members = self.server_members();
        if members != self.members {
            let (before, after) = (self.members.len(), members.len());
            let kept = self.members.intersection(&members).count();
            if before > 0 && after > 0 && self.formed {
                let ideal = f64::from(self.shape.shards) * (1.0 - kept as f64 / before.max(after) as f64);
                self.ideal_in_window += ideal;
                self.ideal_moves += ideal;
            }
            let joined: Vec<&String> = members.difference(&self.members).collect();
            let left: Vec<&String> = self.members.difference(&members).collect();
            let line = format!("server: members {after}, joined {joined:?}, left {left:?}");
            self.log(line);
            self.members = members;
            self.still_since = self.now;
            return;
        }
        if self.now < self.still_since + STILL {
            return;
        }
        if !self.formed {
            // Moves count from the first still point after the formation.
            if self.now >= FORMATION {
                self.formed = true;
                self.moves_in_window = 0;
            }
            return;
        }
        let (moves, ideal) = (self.moves_in_window, self.ideal_in_window);
        if moves == 0 && ideal == 0.0 {
            return;
        }
        self.log(format!("server: {moves} moves, ideal {ideal:.1}"));
        self.windows += 1;
        if ideal > 0.0 && moves as f64 / ideal > self.worst_window.0 as f64 / self.worst_window.1.max(1e-9) {
            self.worst_window = (moves, ideal);
        }
        if moves as f64 > 1.25 * ideal + 1.0 {
            self.problem.get_or_insert(format!(
                "{moves} shards changed holder for membership changes whose ideal is {ideal:.1} moves"
            ));
        }
        self.moves_in_window = 0;
        self.ideal_in_window = 0.0;
    }

    fn report(&self, problem: &str) -> String {
        let mut views = String::new();
        for (index, r) in self.replicas.iter().enumerate() {
            let Some(process) = &r.process else { continue };
            let (members, desired) = process.core.assigned().cloned().unwrap_or_default();
            views.push_str(&format!(
                "\n  {} ({:?}{}): members {members:?}, desired {desired:?}",
                r.name,
                r.trouble,
                if process.stopping_since.is_some() { ", stopping" } else { "" }
            ));
            if let Some(shard) = self.focus {
                views.push_str(&format!(
                    "\n    shard {shard}: {}",
                    process.core.describe(shard, self.local(index))
                ));
            }
        }
        if let Some(shard) = self.focus {
            let stored = self.leases.get(&LeaseName::Shard(shard));
            let record =
                stored.map(|s| (s.record.holder.clone(), s.record.resource_version.clone(), s.written_at));
            views.push_str(&format!("\n  server: shard {shard}: {record:?}"));
        }
        let problem = format!("{problem}\nviews:{views}");
        let tail = std::env::var("SIM_TAIL").ok().and_then(|t| t.parse().ok()).unwrap_or(60);
        let lines: Vec<&str> = self.log.iter().rev().take(tail).map(String::as_str).collect();
        let lines: Vec<&str> = lines.into_iter().rev().collect();
        format!(
            "seed {} failed after {} steps at {:.3} s (replay: SIM_SEED={} cargo test --lib shard::sim):\n  {problem}\nlog tail:\n{}",
            self.seed,
            self.steps,
            self.now.as_secs_f64(),
            self.seed,
            lines.join("\n")
        )
    }

    /// One step: maybe a fault, then everything due within 50–300 ms, then
    /// the checks.
    pub(super) fn step(&mut self) -> Result<(), String> {
        self.steps += 1;
        self.faults();
        let elapsed = self.rng.millis(50, 300);
        let end = self.now + elapsed;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > end {
                break;
            }
            let ((at, _), happening) = entry.remove_entry();
            self.now = at;
            self.happen(*happening);
            if self.problem.is_some() {
                return self.check(Duration::ZERO);
            }
        }
        self.now = end;
        self.life();
        let running = self.replicas.iter().filter(|r| r.process.is_some()).count();
        self.replica_seconds += running as f64 * elapsed.as_secs_f64();
        self.check(elapsed)
    }

    /// Lease writes per renew period, per (shards + replicas).
    pub(super) fn write_load(&self) -> f64 {
        let periods = self.now.as_secs_f64() / RETRY_PERIOD.as_secs_f64();
        let replicas = self.replica_seconds / self.now.as_secs_f64().max(1e-9);
        self.writes as f64 / periods.max(1.0) / (f64::from(self.shape.shards) + replicas)
    }

    pub(super) fn seconds(&self) -> f64 {
        self.now.as_secs_f64()
    }
}

/// Runs one seed for `steps` steps.
pub(super) fn run_seed(seed: u64, steps: u64, shape: Shape, sabotage: Sabotage) -> Result<Sim, String> {
    let mut sim = Sim::new(seed, shape, sabotage);
    for _ in 0..steps {
        sim.step()?;
    }
    Ok(sim)
}

/// Runs `seeds` on `SIM_THREADS` threads (2 unless set); results in seed
/// order. Without `keep_going`, stops starting seeds after a failure.
fn run_seeds(seeds: &[u64], steps: u64, shape: Shape, keep_going: bool) -> Vec<(u64, Result<Sim, String>)> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let threads = env("SIM_THREADS").unwrap_or(2).max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(seed) = seeds.get(index).copied() else { break };
                    if failed.load(Ordering::Relaxed) && !keep_going {
                        break;
                    }
                    let mut result = run_seed(seed, steps, shape, Sabotage::None);
                    if let Ok(sim) = &mut result {
                        // Only the figures are kept: 130 finished runs of
                        // 100 cores each held 14 GiB.
                        sim.log.clear();
                        sim.replicas.clear();
                        sim.leases.clear();
                        sim.queue.clear();
                    }
                    failed.fetch_or(result.is_err(), Ordering::Relaxed);
                    results.lock().expect("no thread panics holding it").push((seed, result));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("no thread panicked holding it");
    results.sort_by_key(|(seed, _)| *seed);
    results
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// `cargo test`'s run: 200 seeds × 2,000 steps (about 350 s of simulated
/// time each), as issue 18 asks. A seed takes about 0.19 s of CPU with the
/// crate built at `opt-level = 1` (Cargo.toml; 1.1 s unoptimised), so this
/// is about 23 s on two cores. Every step is checked. The long run is
/// `SIM_KEEP_GOING=1 SIM_SEEDS=10000`, and `SIM_REPLICAS`/`SIM_SHARDS` for a
/// large cluster, after a change to `core` and before a release.
const SEEDS: u64 = 200;
const STEPS: u64 = 2_000;

#[test]
fn sim_seeds_keep_every_invariant() {
    let steps = env("SIM_STEPS").unwrap_or(STEPS);
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        // SIM_FIRST_SEED: a long run in parts.
        None => {
            let first = env("SIM_FIRST_SEED").unwrap_or(0);
            (first..first + env("SIM_SEEDS").unwrap_or(SEEDS)).collect()
        }
    };
    let mut shape = Shape::DEFAULT;
    if let Some(max) = env("SIM_REPLICAS") {
        shape.max_replicas = max as usize;
        shape.min_replicas = shape.min_replicas.min(shape.max_replicas);
    }
    if let Some(min) = env("SIM_MIN_REPLICAS") {
        shape.min_replicas = (min as usize).min(shape.max_replicas);
    }
    if let Some(shards) = env("SIM_SHARDS") {
        shape.shards = shards as u32;
    }
    let keep_going = std::env::var_os("SIM_KEEP_GOING").is_some();
    let started = Instant::now();
    let results = run_seeds(&seeds, steps, shape, keep_going);
    let mut failed = Vec::new();
    let (mut total_steps, mut seconds, mut moves, mut ideal, mut windows) = (0, 0.0, 0, 0.0, 0);
    let (mut worst_unowned, mut worst_load, mut worst_window) = (Duration::ZERO, 0.0f64, (0, 0.0));
    let mut worst_at = (0, 0, 0.0);
    let mut stats: BTreeMap<&str, u64> = BTreeMap::new();
    for (seed, result) in results {
        match result {
            Ok(sim) => {
                total_steps += sim.steps;
                seconds += sim.seconds();
                moves += sim.moves;
                ideal += sim.ideal_moves;
                windows += sim.windows;
                if sim.worst_unowned > worst_unowned {
                    worst_unowned = sim.worst_unowned;
                    worst_at = (seed, sim.worst_unowned_at.0, sim.worst_unowned_at.1);
                }
                worst_load = worst_load.max(sim.write_load());
                let (m, i) = sim.worst_window;
                if i > 0.0 && m as f64 / i > worst_window.0 as f64 / f64::max(worst_window.1, 1e-9) {
                    worst_window = (m, i);
                }
                for (kind, n) in sim.stats {
                    *stats.entry(kind).or_default() += n;
                }
            }
            Err(report) if keep_going => {
                eprintln!("{report}");
                failed.push(seed);
            }
            Err(report) => panic!("{report}"),
        }
    }
    eprintln!(
        "simulated {total_steps} steps ({seconds:.0} s) of {shape:?} in {:?}: worst unowned {worst_unowned:?} \
         (seed {}, shard {} at {:.3} s), \
         {moves} moves, the ideal {ideal:.0} ({windows} windows checked, worst {} moves for an ideal {:.1}), \
         at most {worst_load:.2} Lease writes per renew period per (shards + replicas)",
        started.elapsed(),
        worst_at.0,
        worst_at.1,
        worst_at.2,
        worst_window.0,
        worst_window.1
    );
    eprintln!("events: {stats:?}");
    assert!(failed.is_empty(), "{} seeds failed: {failed:?}", failed.len());
    assert!(worst_load <= 2.0, "Lease traffic is not O(shards + replicas): {worst_load:.2}");
    if env("SIM_SEED").is_some() {
        return; // a replay: one seed need not have every kind of fault
    }
    for kind in [
        "crash",
        "freeze",
        "partition",
        "leave",
        "join",
        "rolling restart",
        "taken over",
        "released",
        "lost",
        "conflict",
    ] {
        assert!(stats.get(kind).is_some_and(|n| *n > 0), "no {kind:?} happened: {stats:?}");
    }
}

#[test]
fn sim_replays_a_seed_exactly() {
    let first = run_seed(7, 1_000, Shape::DEFAULT, Sabotage::None).expect("seed 7 passes");
    let second = run_seed(7, 1_000, Shape::DEFAULT, Sabotage::None).expect("seed 7 passes");
    assert_eq!(first.digest(), second.digest(), "the same seed must take the same steps");
    assert_eq!(first.stats, second.stats);
}

/// The checks can fail: each deliberate defect is found by some seed.
#[test]
fn sim_finds_deliberate_defects() {
    for sabotage in [Sabotage::SkipPreconditions, Sabotage::TakeOverEarly] {
        // Other checks may fail first (a takeover too early is also a
        // move nobody asked for): the fences must fail for some seed.
        let found = (0..200).find_map(|seed| {
            run_seed(seed, 2_000, Shape::DEFAULT, sabotage).err().filter(|r| r.contains("two open fences"))
        });
        let report = found.unwrap_or_else(|| panic!("no seed found two open fences under {sabotage:?}"));
        eprintln!("{sabotage:?} found: {}", report.lines().take(2).collect::<Vec<_>>().join(" | "));
    }
}
