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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;

/// The folder of the store of `url` below `repos`.
pub fn dir_of(repos: &Path, url: &str) -> PathBuf {
    repos.join(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(url.as_bytes())))
}

type Locks = Mutex<HashMap<PathBuf, Weak<tokio::sync::Mutex<()>>>>;

/// Process-wide, like the lock files it stands in front of.
static LOCKS: LazyLock<Locks> = LazyLock::new(Locks::default);

/// Waits until no other fetch or maintenance runs in the store at `dir`.
pub async fn exclusive(dir: &Path) -> OwnedMutexGuard<()> {
    let lock = {
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
    };
    lock.lock_owned().await
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
}
