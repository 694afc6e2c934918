//! One gix object store per repository directory in this process.
//!
//! Every branch worker of a repository holds its own handle (its objects in
//! memory, its caches), but the handles share the store: each pack's index
//! and data are mapped once per process, not once per worker. With a store
//! per handle, 1,000 workers of 10 repositories mapped every pack 1,000
//! times and ran out of memory maps (`vm.max_map_count`).
//!
//! A store that failed inside gix (a panic), or missed an object and is
//! older than a second, is replaced for the handles opened after it;
//! handles on the old one keep it until they are reopened.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// A store, and the directory it was opened on: a directory removed and
/// made again at the same path is another repository.
struct Entry {
    repo: gix::ThreadSafeRepository,
    dir: (u64, u64),
    opened: Instant,
}

static STORES: LazyLock<Mutex<HashMap<PathBuf, Entry>>> = LazyLock::new(Mutex::default);

/// A new handle on the store of `path`, opening it first where needed
/// (which creates the repository if it is missing).
pub(super) fn handle(path: &Path) -> Result<gix::Repository, super::RepoError> {
    handle_replacing(path, None)
}

/// As [`handle`], but when the store in use is still `failed` (compared by
/// identity) and at least `min_age` old, it is opened anew from the disk first.
/// A handle that misses an object the disk has (its pack came after a
/// consolidation) misses it again on a fresh handle of the same store; a
/// new store reads the pack directory afresh. The age bounds how many
/// stores a truly missing object, retried, opens.
pub(super) fn renewed_if_older(
    path: &Path,
    failed: &gix::Repository,
    min_age: Duration,
) -> Result<gix::Repository, super::RepoError> {
    handle_replacing(path, Some((failed.objects.store_ref(), min_age)))
}

fn handle_replacing(
    path: &Path,
    failed: Option<(&gix::odb::Store, Duration)>,
) -> Result<gix::Repository, super::RepoError> {
    // Held while opening, so two workers of a new store open it once.
    let mut stores = STORES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = identity(path);
    if let Some(entry) = stores.get(path)
        && Some(entry.dir) == dir
        && !failed.is_some_and(|(failed, min_age)| {
            std::ptr::eq(failed, &*entry.repo.objects) && entry.opened.elapsed() >= min_age
        })
    {
        return Ok(entry.repo.to_thread_local());
    }
    let repo = super::open_store(path)?;
    // `open_store` made the directory where it was missing.
    let dir = identity(path).unwrap_or_default();
    let handle = repo.to_thread_local();
    stores.insert(path.to_owned(), Entry { repo, dir, opened: Instant::now() });
    Ok(handle)
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::super::LocalRepo;

    fn store(repo: &LocalRepo) -> *const gix::odb::Store {
        repo.repo.objects.store_ref()
    }

    #[test]
    fn handles_of_one_path_share_a_store_and_a_store_that_panicked_is_replaced_once() {
        let home = tempfile::tempdir().unwrap();
        let (a, b) = (home.path().join("a.git"), home.path().join("b.git"));
        let first = LocalRepo::open_shared(&a).unwrap();
        let second = LocalRepo::open_shared(&a).unwrap();
        let other = LocalRepo::open_shared(&b).unwrap();
        assert_eq!(store(&first), store(&second));
        assert_ne!(store(&first), store(&other));
        // A handle of its own never joins the shared store.
        assert_ne!(store(&LocalRepo::open_or_init(&a).unwrap()), store(&first));

        // After a miss the fresh handle stays on a store younger than the
        // bound; after a panic the store is opened anew, once.
        assert_eq!(store(&first.reopen(std::time::Duration::MAX).unwrap()), store(&first));
        let renewed = first.reopened_on_new_store().unwrap();
        assert_ne!(store(&renewed), store(&first));
        assert_eq!(store(&LocalRepo::open_shared(&a).unwrap()), store(&renewed));
        // The second handle failing on the old store does not replace the new one.
        assert_eq!(store(&second.reopened_on_new_store().unwrap()), store(&renewed));
    }

    #[test]
    fn a_directory_made_again_at_the_same_path_gets_a_new_store() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("r.git");
        let before = LocalRepo::open_shared(&path).unwrap();
        let old = store(&before);
        std::fs::rename(&path, home.path().join("moved.git")).unwrap();
        let after = LocalRepo::open_shared(&path).unwrap();
        assert!(after.git_dir().join("HEAD").exists());
        assert_ne!(store(&after), old);
    }

    /// Workers of one store write a pack each per round and record their
    /// tip, while packs are merged (as the pushers do) and everything is
    /// repacked (as maintenance does) beside them: a read that misses
    /// finds its object on a handle reopened once, on the same store.
    #[test]
    fn shared_handles_find_their_objects_while_packs_are_merged_under_them() {
        use super::super::tests::commit;
        use super::super::{FileChange, RepoError};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        let home = tempfile::tempdir().unwrap();
        let path = Arc::new(home.path().join("r.git"));
        LocalRepo::open_shared(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let merger = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut merges = 0;
                while !stop.load(Ordering::SeqCst) {
                    if crate::worker::store::pack_count(&path) > 8 {
                        let args: &[&str] = if merges % 2 == 0 {
                            &["repack", "-d", "-l", "-q", "--geometric=2"]
                        } else {
                            &["repack", "-A", "-d", "-l", "-q"]
                        };
                        let status = std::process::Command::new("git")
                            .arg("--git-dir")
                            .arg(&*path)
                            .args(["-c", "repack.writeBitmaps=false"])
                            .args(args)
                            .status()
                            .unwrap();
                        assert!(status.success());
                        merges += 1;
                    }
                    std::thread::yield_now();
                }
                merges
            })
        };
        let workers: Vec<_> = (0..6)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut repo = LocalRepo::open_shared(&path).unwrap();
                    repo.hold_objects_in_memory();
                    let (file, refname) = (format!("w{w}.yaml"), format!("refs/heads/w{w}"));
                    let mut tip = None;
                    let mut reopened = 0;
                    for i in 0..150 {
                        let content = format!("v: {i}\n").into_bytes();
                        let change = FileChange::Write { path: file.clone(), content: content.clone() };
                        let commit = commit(&repo, tip, &[change]).unwrap();
                        tip = Some(commit);
                        repo.persist_objects().unwrap();
                        let record = |r: &LocalRepo| {
                            let read = r.read_file(commit, &file)?;
                            r.set_ref(&refname, commit).map(|()| read)
                        };
                        let read = match record(&repo) {
                            Err(RepoError::MissingObject { .. }) => {
                                repo = repo.reopened().unwrap();
                                reopened += 1;
                                record(&repo)
                            }
                            other => other,
                        };
                        assert_eq!(read.unwrap(), Some(content), "worker {w}, round {i}");
                    }
                    reopened
                })
            })
            .collect();
        let reopened: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        stop.store(true, Ordering::SeqCst);
        let merges = merger.join().unwrap();
        assert!(merges > 0, "the packs were never merged");
        eprintln!("{merges} merges, {reopened} handles reopened after a miss");
    }
}
