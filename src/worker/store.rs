//! The local object store of a repository, shared by every branch worker of
//! that repository on this replica.
//!
//! One store per repository lets one `git push` carry many branches without
//! borrowing objects from a store per branch (see `pushers`). Workers write
//! packs of their commits and their own branch's refs, which git and gix
//! allow concurrently. A fetch rewrites the store's `shallow` file and git's
//! maintenance rewrites packs and `packed-refs`; git guards both with lock
//! files and fails rather than waits, so those operations take
//! [`exclusive`] first.
//!
//! A git process killed mid-way leaves its lock files behind, and every
//! later fetch or ref update in the store fails on them ("File exists"):
//! a fetch killed by its worker's abort (its shard went to another
//! replica) or by the timeout, or a whole replica killed with its git
//! processes (SIGKILL, the OOM killer). The data dir belongs to this
//! replica alone, so what [`exclusive`] guards is stale whenever it is
//! taken: every take removes the lock files only fetches and maintenance
//! make. The first take in a process, before any git command of its own
//! ran there (every worker starts with a fetch, under [`exclusive`]),
//! removes every lock file.

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

/// Where only fetches and maintenance take locks: the `shallow` file,
/// `packed-refs`, the config, the remote-tracking refs, and the object
/// store's packs and indexes. Commits lock their own `refs/heads/` entry,
/// concurrently and outside [`exclusive`], so those are left alone.
const EXCLUSIVE_LOCKS: [&str; 6] =
    ["shallow.lock", "packed-refs.lock", "config.lock", "refs/remotes", "objects/info", "objects/pack"];

/// Waits until no other fetch or maintenance runs in the store at `dir`,
/// then removes the lock files a killed one left behind (see above).
pub async fn exclusive(dir: &Path) -> OwnedMutexGuard<()> {
    let guard = lock_of(dir).lock_owned().await;
    let first = TAKEN.lock().expect("the store set is never poisoned").insert(dir.to_owned());
    let owned = dir.to_owned();
    let (removed, packs) = tokio::task::spawn_blocking(move || {
        let locks = if first {
            // Before any worker of this process wrote a pack of its own.
            let mut removed = remove_unfinished_packs(&owned);
            removed.extend(remove_lock_files(&owned, &owned));
            removed
        } else {
            EXCLUSIVE_LOCKS.iter().flat_map(|under| remove_lock_files(&owned, &owned.join(under))).collect()
        };
        // A fetch killed by its timeout leaves the pack it was receiving.
        (locks, crate::worker::remote::remove_partial_packs(&owned).unwrap_or(0))
    })
    .await
    .unwrap_or_default();
    if !removed.is_empty() {
        warn!(store = %dir.display(), files = ?removed, "removed lock files left by a killed git process");
    }
    if packs > 0 {
        warn!(store = %dir.display(), files = packs, "removed partial packs left by a killed fetch");
    }
    guard
}

/// Removes every `*.lock` file at or below `path` (recursively, not
/// following links); returns their paths relative to `dir`.
fn remove_lock_files(dir: &Path, path: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    if path.extension().is_some_and(|e| e == "lock") && std::fs::remove_file(path).is_ok() {
        removed.push(path.strip_prefix(dir).unwrap_or(path).display().to_string());
    }
    let mut pending = vec![path.to_owned()];
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

/// The packs of the store at `dir` (each fetch and each push adds one
/// until they are consolidated).
pub fn pack_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("objects/pack")).map_or(0, |entries| {
        entries.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".idx")).count()
    })
}

/// Removes the files of packs a killed worker was writing (`repo::pack`).
fn remove_unfinished_packs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("objects/pack")) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(crate::worker::repo::TMP_PACK_PREFIX))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .map(|e| format!("objects/pack/{}", e.file_name().to_string_lossy()))
        .collect()
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
    /// ha_apiserver_restart: a worker aborted during its first fetch did the
    /// same within one process, for every branch of the repository.
    #[tokio::test]
    async fn every_take_of_a_store_removes_lock_files_left_behind() {
        let store = tempfile::tempdir().unwrap();
        let dir = store.path();
        for folder in ["refs/heads", "objects/info", "objects/ab", "objects/pack"] {
            std::fs::create_dir_all(dir.join(folder)).unwrap();
        }
        let unfinished = format!("objects/pack/{}1234", crate::worker::repo::TMP_PACK_PREFIX);
        for file in ["shallow.lock", "refs/heads/b1.lock", "objects/info/commit-graph.lock", &unfinished] {
            std::fs::write(dir.join(file), "").unwrap();
        }
        for file in ["shallow", "refs/heads/b1", "objects/ab/cdef"] {
            std::fs::write(dir.join(file), "kept").unwrap();
        }
        drop(exclusive(dir).await);
        for file in ["shallow.lock", "refs/heads/b1.lock", "objects/info/commit-graph.lock", &unfinished] {
            assert!(!dir.join(file).exists(), "{file} was left behind");
        }
        for file in ["shallow", "refs/heads/b1", "objects/ab/cdef"] {
            assert_eq!(std::fs::read_to_string(dir.join(file)).unwrap(), "kept");
        }
        // Later, only what fetches and maintenance lock is stale: a commit's
        // ref lock may be this process's own commit at work.
        std::fs::create_dir_all(dir.join("refs/remotes/origin")).unwrap();
        for file in ["shallow.lock", "refs/remotes/origin/b1.lock", "refs/heads/b1.lock", &unfinished] {
            std::fs::write(dir.join(file), "").unwrap();
        }
        drop(exclusive(dir).await);
        assert!(!dir.join("shallow.lock").exists() && !dir.join("refs/remotes/origin/b1.lock").exists());
        assert!(dir.join("refs/heads/b1.lock").exists(), "a commit may hold it");
        assert!(dir.join(&unfinished).exists(), "a worker may be writing it");
    }
}
