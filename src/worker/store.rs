//! The local object store of a repository, shared by every branch worker of
//! that repository on this replica.
//!
//! One store per repository lets one `git push` carry many branches without
//! borrowing objects from a store per branch (see `pushers`). Commits write
//! loose objects and their own branch's refs, which git and gix allow
//! concurrently. A fetch rewrites the store's `shallow` file and git's
//! maintenance rewrites packs and `packed-refs`; git guards both with lock
//! files and fails rather than waits, so those operations take
//! [`exclusive`] first.
//!
//! A replica killed with its git processes (SIGKILL, the OOM killer) leaves
//! their lock files behind, and every later fetch or ref update in the
//! store fails on them ("File exists"). The data dir belongs to this
//! replica alone, so the first time this process takes a store, before any
//! git command of its own runs there (every worker starts with a fetch,
//! under [`exclusive`]), it removes them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;
use tracing::warn;

/// The folder of the store of `url` below `repos`.
pub fn dir_of(repos: &Path, url: &str) -> PathBuf {
    repos.join(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(url.as_bytes())))
}

type Locks = Mutex<HashMap<PathBuf, Weak<tokio::sync::Mutex<()>>>>;

/// Process-wide, like the lock files it stands in front of.
static LOCKS: LazyLock<Locks> = LazyLock::new(Locks::default);

/// The stores this process has taken, so cleaned of stale lock files.
static TAKEN: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Mutex::default);

/// Waits until no other fetch or maintenance runs in the store at `dir`.
/// The first time in this process, it removes lock files left there by a
/// killed predecessor.
pub async fn exclusive(dir: &Path) -> OwnedMutexGuard<()> {
    let guard = lock_of(dir).lock_owned().await;
    let first = TAKEN.lock().expect("the store set is never poisoned").insert(dir.to_owned());
    if first {
        let owned = dir.to_owned();
        let removed =
            tokio::task::spawn_blocking(move || remove_lock_files(&owned)).await.unwrap_or_default();
        if !removed.is_empty() {
            warn!(
                store = %dir.display(),
                files = ?removed,
                "removed lock files left by a previous process of this replica"
            );
        }
    }
    guard
}

/// Removes every `*.lock` file below `dir` (recursively, not following
/// links); returns their paths relative to `dir`.
fn remove_lock_files(dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file()
                && path.extension().is_some_and(|e| e == "lock")
                && std::fs::remove_file(&path).is_ok()
            {
                removed.push(path.strip_prefix(dir).unwrap_or(&path).display().to_string());
            }
        }
    }
    removed.sort();
    removed
}

fn lock_of(dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
    {
        let mut locks = LOCKS.lock().expect("the store locks are never poisoned");
        locks.retain(|_, lock| lock.strong_count() > 0);
        match locks.get(dir).and_then(Weak::upgrade) {
            Some(lock) => lock,
            None => {
                let lock = Arc::new(tokio::sync::Mutex::new(()));
                locks.insert(dir.to_owned(), Arc::downgrade(&lock));
                lock
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_folder_per_repository() {
        let repos = Path::new("/data/repos");
        assert_eq!(dir_of(repos, "ssh://h/r"), dir_of(repos, "ssh://h/r"));
        assert_ne!(dir_of(repos, "ssh://h/r"), dir_of(repos, "ssh://h/s"));
        assert!(dir_of(repos, "ssh://h/r").starts_with(repos));
    }

    #[tokio::test]
    async fn one_holder_per_store_and_none_across_stores() {
        let held = exclusive(Path::new("/store/a")).await;
        // Another store is free.
        let other = tokio::time::timeout(Duration::from_secs(5), exclusive(Path::new("/store/b"))).await;
        assert!(other.is_ok());
        // The same store waits until the holder lets go.
        let waiting = tokio::spawn(exclusive(Path::new("/store/a")));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("released").expect("joined");
    }

    /// ha_crash: a replica killed with its git processes left a lock file in
    /// its store, and every fetch of its next incarnation failed on it.
    #[tokio::test]
    async fn the_first_take_of_a_store_removes_lock_files_left_behind() {
        let store = tempfile::tempdir().unwrap();
        let dir = store.path();
        for folder in ["refs/heads", "objects/info", "objects/ab"] {
            std::fs::create_dir_all(dir.join(folder)).unwrap();
        }
        for file in ["shallow.lock", "refs/heads/b1.lock", "objects/info/commit-graph.lock"] {
            std::fs::write(dir.join(file), "").unwrap();
        }
        for file in ["shallow", "refs/heads/b1", "objects/ab/cdef"] {
            std::fs::write(dir.join(file), "kept").unwrap();
        }
        drop(exclusive(dir).await);
        for file in ["shallow.lock", "refs/heads/b1.lock", "objects/info/commit-graph.lock"] {
            assert!(!dir.join(file).exists(), "{file} was left behind");
        }
        for file in ["shallow", "refs/heads/b1", "objects/ab/cdef"] {
            assert_eq!(std::fs::read_to_string(dir.join(file)).unwrap(), "kept");
        }
        // Later, a lock file is this process's own git at work: left alone.
        std::fs::write(dir.join("shallow.lock"), "").unwrap();
        drop(exclusive(dir).await);
        assert!(dir.join("shallow.lock").exists());
    }
}
