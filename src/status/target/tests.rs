use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::status::conditions::find;

fn worker(active: bool) -> WorkerState {
    WorkerState {
        active,
        branch_exists: true,
        remote_tip: Some("0123456789abcdef0123".into()),
        last_checked: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(100)),
        ..Default::default()
    }
}

static NONE: BTreeMap<String, String> = BTreeMap::new();

fn observe<'a>(
    problem: Option<&'a Problem>,
    access: &'a Access,
    worker: Option<&'a WorkerState>,
) -> Observation<'a> {
    Observation {
        generation: Some(3),
        problem,
        access,
        worker,
        withheld_secrets: 0,
        unsanitizable: &NONE,
        backlogged: false,
        settings_overridden: None,
        suspended: false,
        url: "ssh://git/x",
        branch: "main",
        owner: Some(("replica-0", 5)),
    }
}

fn condition(status: &GitTargetStatus, type_: ConditionType) -> (String, String) {
    let c = find(&status.conditions, type_).unwrap();
    (c.status.clone(), c.reason.clone())
}

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

#[test]
fn a_configuration_problem_makes_ready_false_with_its_reason() {
    let problem = Problem::new(Reason::InvalidConfiguration, "Secret \"git\" has no key \"identity\"");
    let status = desired(None, &observe(Some(&problem), &Access::Checking, None), at(1));
    assert_eq!(condition(&status, ConditionType::Ready), ("False".into(), "InvalidConfiguration".into()));
    assert!(find(&status.conditions, ConditionType::Ready).unwrap().message.contains("identity"));
    assert_eq!(condition(&status, ConditionType::Active), ("False".into(), "WorkerNotStarted".into()));
    assert!(status.git_status.is_none());
    assert_eq!(status.observed_generation, Some(3));
}

#[test]
fn verified_access_and_an_idle_worker_are_ready_and_synced() {
    let w = worker(true);
    let status = desired(None, &observe(None, &Access::Verified { at: at(50) }, Some(&w)), at(200));
    assert_eq!(condition(&status, ConditionType::Ready), ("True".into(), "Ready".into()));
    assert_eq!(condition(&status, ConditionType::Available), ("True".into(), "Available".into()));
    assert_eq!(condition(&status, ConditionType::Active), ("True".into(), "Idle".into()));
    assert_eq!(condition(&status, ConditionType::Synced), ("True".into(), "Synced".into()));
    let git = status.git_status.unwrap();
    assert!(git.branch_exists);
    assert_eq!(git.last_commit_sha.as_deref(), Some("0123456789abcdef0123"));
    let worker_status = status.worker_status.unwrap();
    assert_eq!(worker_status.queued_events, Some(0));
    assert_eq!((worker_status.replica.as_deref(), worker_status.shard), (Some("replica-0"), Some(5)));
}

#[test]
fn a_failed_check_names_its_reason_in_ready_and_available() {
    let access = Access::Failed {
        at: at(10),
        reason: Reason::AuthenticationFailed,
        message: "no write access".into(),
    };
    let status = desired(None, &observe(None, &access, None), at(20));
    assert_eq!(condition(&status, ConditionType::Available), ("False".into(), "AuthenticationFailed".into()));
    assert_eq!(condition(&status, ConditionType::Ready), ("False".into(), "AuthenticationFailed".into()));
}

#[test]
fn the_newest_observation_of_the_remote_wins() {
    let mut w = worker(true);
    w.error = Some((Reason::NetworkError, "connection refused".into()));
    w.unpushed = 2;
    w.last_push_failed = true;
    w.last_checked = Some(at(300));
    let verified_earlier = Access::Verified { at: at(200) };
    let down = desired(None, &observe(None, &verified_earlier, Some(&w)), at(301));
    assert_eq!(condition(&down, ConditionType::Available), ("False".into(), "NetworkError".into()));
    assert_eq!(condition(&down, ConditionType::Synced), ("False".into(), "SyncFailed".into()));
    assert_eq!(down.worker_status.as_ref().unwrap().last_push_status, Some(PushResult::Failed));

    w.error = None;
    w.unpushed = 0;
    w.last_push_failed = false;
    w.last_push = Some(at(400));
    w.last_checked = Some(at(400));
    let failed_before = Access::Failed { at: at(350), reason: Reason::NetworkError, message: "down".into() };
    let up = desired(Some(&down), &observe(None, &failed_before, Some(&w)), at(401));
    assert_eq!(condition(&up, ConditionType::Available), ("True".into(), "Available".into()));
    assert_eq!(condition(&up, ConditionType::Ready), ("True".into(), "Ready".into()));
}

/// Issue 16: a branch past a limit stays `RemoteTooLarge` though write
/// access is proven again later; it clears when the worker fetches it.
#[test]
fn a_branch_past_a_limit_is_not_cleared_by_proven_write_access() {
    let mut w = worker(false);
    w.error = Some((Reason::RemoteTooLarge, "more than 1 MiB received by one fetch".into()));
    w.last_checked = Some(at(300));
    let verified_later = Access::Verified { at: at(400) };
    let status = desired(None, &observe(None, &verified_later, Some(&w)), at(401));
    let available = status.conditions.iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!((available.status.as_str(), available.reason.as_str()), ("False", "RemoteTooLarge"));
    assert!(available.message.contains("1 MiB"), "{}", available.message);
    assert_eq!(condition(&status, ConditionType::Ready), ("False".into(), "RemoteTooLarge".into()));

    let mut fixed = worker(true);
    fixed.last_checked = Some(at(500));
    let status = desired(Some(&status), &observe(None, &verified_later, Some(&fixed)), at(501));
    assert_eq!(condition(&status, ConditionType::Available), ("True".into(), "Available".into()));
}

#[test]
fn unchecked_access_is_validating() {
    let w = worker(true);
    let status = desired(None, &observe(None, &Access::Checking, Some(&w)), at(1));
    assert_eq!(condition(&status, ConditionType::Ready), ("False".into(), "Validating".into()));
    assert_eq!(condition(&status, ConditionType::Available), ("Unknown".into(), "Checking".into()));
}

#[test]
fn withheld_secrets_are_mentioned_in_ready() {
    let w = worker(true);
    let access = Access::Verified { at: at(50) };
    let mut obs = observe(None, &access, Some(&w));
    obs.withheld_secrets = 2;
    let status = desired(None, &obs, at(60));
    let ready = find(&status.conditions, ConditionType::Ready).unwrap();
    assert!(ready.message.contains("2 Secrets were not written"), "{}", ready.message);
}

#[test]
fn objects_that_do_not_sanitize_make_synced_false_and_are_named() {
    let w = worker(true);
    let access = Access::Verified { at: at(50) };
    let failing: BTreeMap<String, String> = (0..5)
        .map(|i| {
            (
                format!("Widget ns/w{i}"),
                "object \"w\" says kind: \"Gadget\", but was watched as \"Widget\"".to_owned(),
            )
        })
        .collect();
    let mut obs = observe(None, &access, Some(&w));
    obs.unsanitizable = &failing;
    let status = desired(None, &obs, at(60));
    assert_eq!(condition(&status, ConditionType::Synced), ("False".into(), "SyncFailed".into()));
    let synced = find(&status.conditions, ConditionType::Synced).unwrap();
    assert!(synced.message.starts_with("5 selected objects cannot be written"), "{}", synced.message);
    assert!(synced.message.contains("Widget ns/w0: object \"w\" says kind"), "{}", synced.message);
    assert!(synced.message.ends_with("; and 2 more"), "{}", synced.message);
    // Ready stays true: the target works, some objects are skipped.
    assert_eq!(condition(&status, ConditionType::Ready), ("True".into(), "Ready".into()));
}

#[test]
fn a_backlogged_target_is_not_synced_until_its_resync() {
    let mut w = worker(true);
    w.queued = 3;
    let access = Access::Verified { at: at(50) };
    let mut obs = observe(None, &access, Some(&w));
    obs.backlogged = true;
    let status = desired(None, &obs, at(60));
    assert_eq!(condition(&status, ConditionType::Synced), ("False".into(), "Backlogged".into()));
    let synced = find(&status.conditions, ConditionType::Synced).unwrap();
    assert!(synced.message.contains("resynced from the cluster"), "{}", synced.message);
}

#[test]
fn overridden_push_settings_are_mentioned_in_ready() {
    let w = worker(true);
    let access = Access::Verified { at: at(50) };
    let mut obs = observe(None, &access, Some(&w));
    obs.settings_overridden = Some("its provider's push settings do not apply");
    let status = desired(None, &obs, at(60));
    let ready = find(&status.conditions, ConditionType::Ready).unwrap();
    assert_eq!(ready.status, "True");
    assert!(ready.message.ends_with("; its provider's push settings do not apply"), "{}", ready.message);
}

#[test]
fn a_suspended_target_says_so_in_every_condition_but_available() {
    let access = Access::Verified { at: at(50) };
    let mut obs = observe(None, &access, None);
    obs.suspended = true;
    let status = desired(None, &obs, at(60));
    assert_eq!(condition(&status, ConditionType::Ready), ("False".into(), "Suspended".into()));
    assert_eq!(condition(&status, ConditionType::Active), ("False".into(), "WorkerStopped".into()));
    for type_ in [ConditionType::Ready, ConditionType::Active, ConditionType::Synced] {
        let message = &find(&status.conditions, type_).unwrap().message;
        assert!(message.starts_with("suspended"), "{type_}: {message}");
    }
    assert_eq!(condition(&status, ConditionType::Available), ("True".into(), "Available".into()));
}

#[test]
fn a_quarantined_branch_says_the_server_refuses_pushes() {
    let access = Access::Verified { at: at(50) };
    let mut w = worker(true);
    w.unpushed = 4;
    w.last_push_failed = true;
    w.quarantined = Some("pre-receive hook declined".into());
    let status = desired(None, &observe(None, &access, Some(&w)), at(200));
    assert_eq!(condition(&status, ConditionType::Synced), ("False".into(), "PushRejected".into()));
    let message = &find(&status.conditions, ConditionType::Synced).unwrap().message;
    assert!(message.contains("pre-receive hook declined") && message.contains("4 commits"), "{message}");
}

#[test]
fn a_failing_local_commit_and_a_full_backlog_are_reported() {
    let access = Access::Verified { at: at(50) };
    let mut w = worker(true);
    w.local_error = Some("No space left on device".into());
    let status = desired(None, &observe(None, &access, Some(&w)), at(200));
    assert_eq!(condition(&status, ConditionType::Synced), ("False".into(), "SyncFailed".into()));
    w.local_error = None;
    w.capped = true;
    w.unpushed = 10_000;
    let status = desired(None, &observe(None, &access, Some(&w)), at(200));
    assert_eq!(condition(&status, ConditionType::Synced), ("False".into(), "EventsQueued".into()));
    let message = &find(&status.conditions, ConditionType::Synced).unwrap().message;
    assert!(message.contains("merged"), "{message}");
}
