//! A branch worker's gix handle on its repository store, and how calls on
//! it run.
//!
//! Every call runs on a blocking thread. Packs leave the store under live
//! handles (the pushers consolidate them, maintenance repacks), and gix's
//! object store is not built for that: a handle may miss an object that
//! moved to a new pack, or panic on the slots it remembers (gitoxide issue
//! 2723). Such a call runs once more at once on a fresh handle, which reads
//! the disk as it is now and carries the objects held in memory over, so
//! one bad handle neither stops the worker nor poisons its lock.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::limits::Limits;
use super::repo::{LocalRepo, RepoError};
use super::store;

/// A worker's handle, empty until its first fetch opens it.
pub type RepoSlot = Arc<Mutex<Option<LocalRepo>>>;

/// An empty slot.
pub fn empty() -> RepoSlot {
    Arc::new(Mutex::new(None))
}

/// Opens (or creates) the repository at `dir` once; its objects are held
/// in memory and written as one pack before each push.
pub async fn ensure_open(slot: &RepoSlot, dir: &Path, limits: Limits) -> Result<(), RepoError> {
    // Not on the runtime's threads: a call may hold the slot for long.
    let probe = slot.clone();
    if tokio::task::spawn_blocking(move || lock(&probe).is_some()).await.unwrap_or(false) {
        return Ok(());
    }
    // Two workers of one store may open it first at once: one creates it.
    let _store = store::exclusive(dir).await;
    let (slot, dir) = (slot.clone(), dir.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut slot = lock(&slot);
        if slot.is_none() {
            let mut repo = LocalRepo::open_shared(&dir)?;
            repo.set_limits(limits);
            repo.hold_objects_in_memory();
            *slot = Some(repo);
        }
        Ok(())
    })
    .await
    .expect("opening the repository does not panic")
}

/// Runs `f` on the repository on a blocking thread (see the module).
pub async fn with_repo<T: Send + 'static>(
    slot: RepoSlot,
    mut f: impl FnMut(&mut LocalRepo) -> Result<T, RepoError> + Send + 'static,
) -> Result<T, RepoError> {
    let joined = tokio::task::spawn_blocking(move || {
        let mut slot = lock(&slot);
        let Some(repo) = slot.as_mut() else { return Err(RepoError::NotOpen) };
        let mut result = guarded(repo, &mut f);
        // The handle's view of the disk is gone or bad (see the module).
        if matches!(result, Err(RepoError::MissingObject { .. } | RepoError::Panicked { .. }))
            && let Ok(fresh) = reopened(repo, &result)
        {
            *repo = fresh;
            result = guarded(repo, &mut f);
        }
        // A handle can go bad for good (see `LocalRepo::reopened`); the
        // retry after the back-off then runs on a fresh one.
        if matches!(result, Err(RepoError::Git { .. } | RepoError::Panicked { .. }))
            && let Ok(fresh) = reopened(repo, &result)
        {
            *repo = fresh;
        }
        result
    })
    .await;
    match joined {
        Ok(result) => result,
        // Only a runtime shutting down cancels it; this task ends with it.
        Err(join) if join.is_cancelled() => std::future::pending().await,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

/// A fresh handle after `failed`; on a new store only after a panic.
fn reopened<T>(repo: &LocalRepo, failed: &Result<T, RepoError>) -> Result<LocalRepo, RepoError> {
    match failed {
        Err(RepoError::Panicked { .. }) => repo.reopened_on_new_store(),
        _ => repo.reopened(),
    }
}

/// `f(repo)`, with a panic inside it turned into an error.
fn guarded<T>(
    repo: &mut LocalRepo,
    f: &mut impl FnMut(&mut LocalRepo) -> Result<T, RepoError>,
) -> Result<T, RepoError> {
    catch_unwind(AssertUnwindSafe(|| f(repo))).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Err(RepoError::Panicked { message })
    })
}

fn lock(slot: &RepoSlot) -> std::sync::MutexGuard<'_, Option<LocalRepo>> {
    // Panics inside calls are caught, so the lock is never poisoned by them.
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::repo::{CommitSpec, FileChange, Identity};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn commit(repo: &mut LocalRepo, content: &str) -> Result<gix::ObjectId, RepoError> {
        let who = Identity { name: "T".into(), email: "t@example.com".into() };
        let spec = CommitSpec {
            message: "one",
            author: &who,
            committer: &who,
            time: None,
            signer: None,
            allow_empty: false,
        };
        let change = FileChange::Write { path: "a.yaml".into(), content: content.as_bytes().to_vec() };
        Ok(repo.commit(None, &[change], &spec)?.expect("a new tree"))
    }

    #[tokio::test]
    async fn a_panic_inside_a_call_is_an_error_and_the_call_runs_once_more_on_a_fresh_handle() {
        let dir = tempfile::tempdir().unwrap();
        let slot = empty();
        ensure_open(&slot, dir.path(), Limits::default()).await.unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let result = with_repo(slot.clone(), move |_| match counted.fetch_add(1, Ordering::SeqCst) {
            0 => panic!("the first call panics"),
            n => Ok(n),
        })
        .await;
        assert_eq!(result.unwrap(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let always =
            with_repo(slot.clone(), |_| -> Result<(), RepoError> { panic!("every call panics") }).await;
        match always {
            Err(RepoError::Panicked { message }) => assert_eq!(message, "every call panics"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        // The worker goes on: its lock is not poisoned and its handle works.
        assert!(!slot.is_poisoned());
        with_repo(slot, |r| commit(r, "a: 1\n")).await.unwrap();
    }

    #[tokio::test]
    async fn a_handle_whose_packs_were_merged_under_it_reads_on_and_keeps_its_objects() {
        let dir = tempfile::tempdir().unwrap();
        let slot = empty();
        ensure_open(&slot, dir.path(), Limits::default()).await.unwrap();
        let first = with_repo(slot.clone(), |r| commit(r, "a: 1\n")).await.unwrap();
        with_repo(slot.clone(), |r| r.persist_objects()).await.unwrap();
        let second = with_repo(slot.clone(), |r| commit(r, "a: 2\n")).await.unwrap();
        with_repo(slot.clone(), |r| r.persist_objects()).await.unwrap();
        let held = with_repo(slot.clone(), |r| commit(r, "a: 3\n")).await.unwrap();
        let read = move |r: &mut LocalRepo| -> Result<Vec<Option<Vec<u8>>>, RepoError> {
            [first, second, held].iter().map(|c| r.read_file(*c, "a.yaml")).collect()
        };
        let expected = vec![Some(b"a: 1\n".to_vec()), Some(b"a: 2\n".to_vec()), Some(b"a: 3\n".to_vec())];
        assert_eq!(with_repo(slot.clone(), read).await.unwrap(), expected);

        // A consolidation (`pushers`): the two packs the handle has loaded
        // are merged into a new one, keeping every object.
        let repacked = std::process::Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args(["repack", "-d", "-q", "--geometric=2"])
            .status()
            .unwrap();
        assert!(repacked.success());
        assert_eq!(store::pack_count(dir.path()), 1);
        assert_eq!(with_repo(slot.clone(), read).await.unwrap(), expected);
    }
}
