//! Which branch workers to start, reconfigure and stop (pure).
//!
//! In: the branches that should have a worker now, the workers that run
//! (and whether each has ended), the branches whose previous worker is still
//! draining, and the shard ownership. Out: a [`WorkerPlan`] that the
//! controller carries out. A branch waits for its draining worker first:
//! both would use the same local repository.

use std::collections::{BTreeMap, BTreeSet};

use crate::route::BranchKey;
use crate::shard::Ownership;

/// What the controller knows of one running worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Running {
    /// The task ended (it crashed or finished a drain).
    pub finished: bool,
    /// Its settings differ from the wanted ones (folders, credentials, push).
    pub changed: bool,
    /// It is handing its shard over (pushing what it holds, then standing by).
    pub handing_over: bool,
    /// Its handover pushed what it must: it stands by with what came since.
    pub handed_over: bool,
    /// The shard tenure its pushes are bound to, once bound.
    pub tenure: Option<u64>,
    /// It was kept through a lapse of its shard (see `WorkerPlan::suspend`).
    pub lapsed: bool,
}

impl Running {
    /// Its shard was held by another replica since its tenure: what it
    /// holds may be stale, so it stops, and a fresh worker resyncs.
    fn superseded(&self, ownership: &Ownership, shard: u32) -> bool {
        self.tenure.is_some_and(|t| ownership.tenure(shard) != Some(t))
    }

    /// Its shard lapsed in its own tenure, which may go on.
    fn suspended(&self, ownership: &Ownership, shard: u32) -> bool {
        self.tenure.is_some() && ownership.suspended.get(&shard).copied() == self.tenure
    }
}

/// What to do with the workers this pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerPlan {
    /// Start a worker (new branch, or the old task ended); its targets resync.
    pub start: Vec<BranchKey>,
    /// Send the running worker its new settings.
    pub update: Vec<BranchKey>,
    /// Not started yet: the previous worker is still pushing what it holds.
    pub wait: Vec<BranchKey>,
    /// The shard was lost to another replica, or since its worker's
    /// tenure: stop at once, nothing more may be written. (A shard lost
    /// only because its renewal failed keeps its worker, suspended.)
    pub abort: Vec<BranchKey>,
    /// The shard is being handed over: drain, then report it drained.
    pub hand_over: Vec<(u32, BranchKey)>,
    /// The shard came back while its worker was handing it over, or in
    /// the worker's tenure after a lapse: go on.
    pub resume: Vec<BranchKey>,
    /// Its handover is over, and the branch is wanted here again (this
    /// replica is its successor, or got the shard back): the worker goes on
    /// with what it holds, with fresh settings (a fence not bound to the
    /// tenure it handed over).
    pub adopt: Vec<BranchKey>,
    /// Its shard lapsed (the renewal failed) and nobody else took it: keep
    /// the worker and what it has not pushed, pushing nothing meanwhile.
    pub suspend: Vec<BranchKey>,
    /// Its handover is over (the worker ended): forget it.
    pub finished: Vec<BranchKey>,
    /// No target uses the branch any more: drain.
    pub retire: Vec<BranchKey>,
}

/// Plans one pass. `wanted` is every branch with a target this replica may
/// write (its shard active); `shard_of` maps a branch to its shard.
pub fn plan(
    wanted: &BTreeSet<BranchKey>,
    running: &BTreeMap<BranchKey, Running>,
    draining: &BTreeSet<BranchKey>,
    ownership: &Ownership,
    shard_of: impl Fn(&BranchKey) -> u32,
) -> WorkerPlan {
    let mut plan = WorkerPlan::default();
    for branch in wanted {
        if draining.contains(branch) {
            plan.wait.push(branch.clone());
            continue;
        }
        match running.get(branch) {
            // Before `superseded`: its fence is bound to the tenure it handed over.
            Some(worker) if worker.handed_over && !worker.finished => plan.adopt.push(branch.clone()),
            Some(worker) if worker.superseded(ownership, shard_of(branch)) => {
                // Started again in the next pass, once this one is gone.
                plan.abort.push(branch.clone());
            }
            Some(worker) if !worker.finished => {
                if worker.handing_over || worker.lapsed {
                    plan.resume.push(branch.clone());
                }
                if worker.changed {
                    plan.update.push(branch.clone());
                }
            }
            _ => plan.start.push(branch.clone()),
        }
    }
    // A worker is never running and draining at once: draining ones were removed.
    for (branch, worker) in running.iter().filter(|(b, _)| !wanted.contains(*b)) {
        let shard = shard_of(branch);
        if worker.handing_over && worker.finished {
            plan.finished.push(branch.clone());
        } else if worker.suspended(ownership, shard) && !worker.finished {
            if !worker.lapsed {
                plan.suspend.push(branch.clone());
            }
        } else if !ownership.is_held(shard) || worker.superseded(ownership, shard) {
            plan.abort.push(branch.clone());
        } else if worker.handing_over {
            // It ends by itself once it pushed what it holds.
        } else if ownership.is_releasing(shard) {
            plan.hand_over.push((shard, branch.clone()));
        } else {
            plan.retire.push(branch.clone());
        }
    }
    plan
}

/// The releasing shards whose handed-over branches all finished draining:
/// their Leases may go. `finished` says whether a branch's drain is over.
pub fn drained_shards(
    ownership: &Ownership,
    handing_over: &BTreeMap<u32, Vec<BranchKey>>,
    finished: impl Fn(&BranchKey) -> bool,
) -> Vec<u32> {
    ownership
        .held
        .iter()
        .filter(|(_, held)| held.releasing)
        .map(|(shard, _)| *shard)
        .filter(|shard| handing_over.get(shard).is_none_or(|branches| branches.iter().all(&finished)))
        .collect()
}

/// The incoming shards whose standby may be announced now. `branches`
/// gives (shard, listed) for every branch of an incoming shard with a
/// worker; `waiting` are shards with a branch that has no standby yet.
/// All at once: while any standby still lists, its resync may restart a
/// shared watch, and a restart turns the changes in between into the
/// list's final state for every standby on that watch. Until then only
/// what was announced before (`announced`) stays announced.
pub fn standby_ready(
    incoming: &BTreeSet<u32>,
    branches: impl IntoIterator<Item = (u32, bool)>,
    waiting: &BTreeSet<u32>,
    announced: &BTreeSet<u32>,
) -> BTreeSet<u32> {
    let all_listed = waiting.is_empty() && branches.into_iter().all(|(_, listed)| listed);
    if all_listed { incoming.clone() } else { announced.intersection(incoming).copied().collect() }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::shard::ownership::HeldShard;

    fn key(branch: &str) -> BranchKey {
        BranchKey::new("ssh://git/repo.git", branch)
    }

    /// Shard n is the number in the branch name ("b1" → 1).
    fn shard_of(branch: &BranchKey) -> u32 {
        branch.branch[1..].parse().unwrap()
    }

    fn ownership(active: &[u32], releasing: &[u32]) -> Ownership {
        let expires = Instant::now() + Duration::from_secs(10);
        let held = active
            .iter()
            .map(|s| (*s, HeldShard { expires, releasing: false, tenure: 1 }))
            .chain(releasing.iter().map(|s| (*s, HeldShard { expires, releasing: true, tenure: 1 })))
            .collect();
        Ownership { held, ..Ownership::default() }
    }

    fn set(branches: &[&str]) -> BTreeSet<BranchKey> {
        branches.iter().map(|b| key(b)).collect()
    }

    fn run(entries: &[(&str, bool, bool)]) -> BTreeMap<BranchKey, Running> {
        entries
            .iter()
            .map(|(b, finished, changed)| {
                (
                    key(b),
                    Running {
                        finished: *finished,
                        changed: *changed,
                        handing_over: false,
                        handed_over: false,
                        tenure: None,
                        lapsed: false,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn new_branches_start_and_changed_ones_are_updated() {
        let plan = plan(
            &set(&["b1", "b2", "b3"]),
            &run(&[("b2", false, true), ("b3", false, false)]),
            &BTreeSet::new(),
            &ownership(&[1, 2, 3], &[]),
            shard_of,
        );
        assert_eq!(
            plan,
            WorkerPlan { start: vec![key("b1")], update: vec![key("b2")], ..WorkerPlan::default() }
        );
    }

    #[test]
    fn an_ended_worker_is_started_again() {
        let plan = plan(
            &set(&["b1"]),
            &run(&[("b1", true, false)]),
            &BTreeSet::new(),
            &ownership(&[1], &[]),
            shard_of,
        );
        assert_eq!(plan.start, vec![key("b1")]);
    }

    #[test]
    fn a_branch_waits_for_its_draining_worker() {
        let plan = plan(&set(&["b1"]), &BTreeMap::new(), &set(&["b1"]), &ownership(&[1], &[]), shard_of);
        assert_eq!(plan, WorkerPlan { wait: vec![key("b1")], ..WorkerPlan::default() });
    }

    #[test]
    fn unwanted_workers_stop_by_how_their_shard_is_held() {
        let plan = plan(
            &BTreeSet::new(),
            &run(&[("b1", false, false), ("b2", false, false), ("b3", false, false)]),
            &BTreeSet::new(),
            &ownership(&[3], &[2]),
            shard_of,
        );
        assert_eq!(plan.abort, vec![key("b1")], "shard 1 is not held: lost");
        assert_eq!(plan.hand_over, vec![(2, key("b2"))], "shard 2 is releasing");
        assert_eq!(plan.retire, vec![key("b3")], "shard 3 is active: no target uses it");
        assert!(plan.start.is_empty() && plan.update.is_empty());
    }

    /// A member left and rejoined: the shard came back while its worker
    /// was handing it over. It goes on (it never stopped taking changes in)
    /// instead of a new worker waiting for the old one and resyncing.
    #[test]
    fn a_handover_called_off_resumes_and_a_finished_one_is_forgotten() {
        let handing = |finished| Running {
            finished,
            changed: false,
            handing_over: true,
            handed_over: false,
            tenure: None,
            lapsed: false,
        };
        let running = BTreeMap::from([
            (key("b1"), handing(false)),
            (key("b2"), handing(false)),
            (key("b3"), handing(true)),
        ]);
        let back = plan(&set(&["b1"]), &running, &BTreeSet::new(), &ownership(&[1], &[2, 3]), shard_of);
        assert_eq!(back.resume, vec![key("b1")], "shard 1 is active again");
        assert_eq!(back.finished, vec![key("b3")], "b3 pushed what it held");
        assert!(back.hand_over.is_empty() && back.abort.is_empty() && back.start.is_empty(), "{back:?}");
        let released = plan(&BTreeSet::new(), &running, &BTreeSet::new(), &ownership(&[], &[]), shard_of);
        assert_eq!(released.finished, vec![key("b3")], "a finished handover is not a lost shard");
        assert_eq!(released.abort, vec![key("b1"), key("b2")], "a shard lost mid-handover stops at once");
    }

    /// A handover's drain is over and its worker stands by with what came
    /// since. While the shard is still being released it waits; once
    /// released, a replica that is the shard's successor keeps it (its
    /// fence bound to the old tenure does not make it superseded), and one
    /// that is not stops it.
    #[test]
    fn a_handed_over_worker_stays_on_where_the_branch_is_wanted() {
        let handed = Running {
            finished: false,
            changed: true,
            handing_over: true,
            handed_over: true,
            tenure: Some(1),
            lapsed: false,
        };
        let running = BTreeMap::from([(key("b1"), handed), (key("b2"), handed)]);
        let releasing =
            plan(&BTreeSet::new(), &running, &BTreeSet::new(), &ownership(&[], &[1, 2]), shard_of);
        assert_eq!(releasing, WorkerPlan::default(), "both wait for their shard's release");
        let released = plan(&set(&["b1"]), &running, &BTreeSet::new(), &ownership(&[], &[]), shard_of);
        assert_eq!(
            released,
            WorkerPlan { adopt: vec![key("b1")], abort: vec![key("b2")], ..WorkerPlan::default() },
            "b1's replica is its successor; b2's is not"
        );
    }

    /// The API server went away: the Lease of shard 1 lapsed, and nobody
    /// else has held it since. Its worker keeps its unpushed commits; when
    /// the Lease comes back in the same tenure it goes on, and if anyone
    /// else held it meanwhile it stops and a fresh worker resyncs.
    #[test]
    fn a_worker_outlives_a_lapse_of_its_tenure_but_not_another_tenure() {
        let bound = |tenure, lapsed| Running {
            finished: false,
            changed: false,
            handing_over: false,
            handed_over: false,
            tenure,
            lapsed,
        };
        let running = BTreeMap::from([(key("b1"), bound(Some(1), false)), (key("b2"), bound(None, false))]);
        let lapsed = Ownership { suspended: BTreeMap::from([(1, 1), (2, 1)]), ..Ownership::default() };
        let during = plan(&BTreeSet::new(), &running, &BTreeSet::new(), &lapsed, shard_of);
        assert_eq!(
            during,
            WorkerPlan { abort: vec![key("b2")], suspend: vec![key("b1")], ..WorkerPlan::default() },
            "b2 never pushed: nothing to keep"
        );
        let running = BTreeMap::from([(key("b1"), bound(Some(1), true))]);
        let still = plan(&BTreeSet::new(), &running, &BTreeSet::new(), &lapsed, shard_of);
        assert_eq!(still, WorkerPlan::default(), "suspended once");

        let back = plan(&set(&["b1"]), &running, &BTreeSet::new(), &ownership(&[1], &[]), shard_of);
        assert_eq!(
            back,
            WorkerPlan { resume: vec![key("b1")], ..WorkerPlan::default() },
            "the same tenure: b1 goes on, and audits soon"
        );

        let mut taken = ownership(&[1], &[]);
        taken.held.get_mut(&1).unwrap().tenure = 2;
        let after = plan(&set(&["b1"]), &running, &BTreeSet::new(), &taken, shard_of);
        assert_eq!(after, WorkerPlan { abort: vec![key("b1")], ..WorkerPlan::default() });
        let gone = plan(&BTreeSet::new(), &running, &BTreeSet::new(), &Ownership::default(), shard_of);
        assert_eq!(gone.abort, vec![key("b1")], "the tenure ended: stop");
    }

    #[test]
    fn standbys_are_announced_together_once_all_are_listed() {
        let incoming = BTreeSet::from([1, 2, 3]);
        let none = BTreeSet::new();
        assert_eq!(standby_ready(&incoming, [(1, true), (2, false)], &none, &none), none, "2 still lists");
        assert_eq!(
            standby_ready(&incoming, [(1, true), (2, false)], &none, &BTreeSet::from([1, 9])),
            BTreeSet::from([1]),
            "what was announced stays, what left incoming goes"
        );
        assert_eq!(
            standby_ready(&incoming, [(1, true)], &BTreeSet::from([2]), &none),
            none,
            "2 has no standby"
        );
        assert_eq!(
            standby_ready(&incoming, [(1, true), (2, true)], &none, &none),
            incoming,
            "3 has no branch"
        );
    }

    #[test]
    fn a_releasing_shard_is_drained_once_every_branch_finished() {
        let own = ownership(&[1], &[2, 3, 4]);
        let handing_over = BTreeMap::from([(2, vec![key("b2"), key("b22")]), (3, vec![key("b3")])]);
        let finished = |b: &BranchKey| b.branch != "b22";
        assert_eq!(drained_shards(&own, &handing_over, finished), vec![3, 4], "4 had no worker to drain");
    }
}
