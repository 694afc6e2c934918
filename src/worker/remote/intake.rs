//! Bounds what one fetch receives: bytes and objects.
//!
//! git has no client-side bound on a fetch (`receive.maxInputSize` is the
//! server's; `index-pack --max-input-size` is not reachable from `fetch`).
//! So fetches run with `transfer.unpackLimit=1`: whatever a server sends
//! then goes through one `index-pack`, into one file,
//! `objects/pack/tmp_pack_*`, until the pack is complete. That file's size is
//! the bytes received so far, and its header (`PACK`, version, object count)
//! says how many objects are coming before they are read. [`watch`] looks at
//! it every [`POLL`] and answers once a limit is passed; the caller then
//! kills git's process group and [`remove_partial`] deletes the file.
//!
//! The size is also held exactly by the kernel: the fetch runs with
//! `RLIMIT_FSIZE` at the size limit (`run`), so the pack stops at that many
//! bytes and `index-pack` dies of SIGXFSZ even between two polls;
//! [`cut_off`] then tells that failure apart. The object count can pass
//! unseen only by a pack that arrives whole within one poll, so small.
//! Only one fetch or maintenance runs in a store at a time
//! (`store::exclusive`), so every `tmp_pack_*` there is this fetch's, or a
//! killed one's.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::worker::limits::{Limit, Limits, TooLarge};

/// How often the pack being received is looked at.
pub(super) const POLL: Duration = Duration::from_millis(50);

/// The `-c` options that send every fetched object through one pack file.
pub(super) const ONE_PACK: [&str; 2] = ["-c", "transfer.unpackLimit=1"];

const TMP_PACK: &str = "tmp_pack_";

/// The pack folder of the bare repository `git_dir`.
pub(super) fn pack_dir(git_dir: &Path) -> PathBuf {
    git_dir.join("objects").join("pack")
}

/// Resolves once a pack being received in `pack_dir` passes `limits`;
/// never otherwise (the caller drops it when git is done).
pub(super) async fn watch(pack_dir: PathBuf, limits: Limits) -> TooLarge {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dir = pack_dir.clone();
        // A few syscalls on a small folder; off the async threads all the same.
        match tokio::task::spawn_blocking(move || check(&dir, &limits)).await {
            Ok(Err(too_large)) => return too_large,
            Ok(Ok(())) => {}
            Err(join) if join.is_cancelled() => std::future::pending::<()>().await,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
}

/// One look at the packs being received in `pack_dir`.
fn check(pack_dir: &Path, limits: &Limits) -> Result<(), TooLarge> {
    // No folder yet, or a file gone between listing and opening (git renames
    // the finished pack): nothing over a limit.
    let Ok(entries) = std::fs::read_dir(pack_dir) else { return Ok(()) };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(TMP_PACK) {
            continue;
        }
        let Ok(mut file) = std::fs::File::open(entry.path()) else { continue };
        let Ok(meta) = file.metadata() else { continue };
        limits.check(Limit::FetchSize, meta.len())?;
        if let Some(objects) = object_count(&mut file) {
            limits.check(Limit::PackObjects, objects)?;
        }
    }
    Ok(())
}

/// After a failed fetch: whether its pack reached the size limit, i.e. the
/// kernel stopped it there (`RLIMIT_FSIZE`).
pub(super) fn cut_off(pack_dir: &Path, limits: &Limits) -> Option<TooLarge> {
    let entries = std::fs::read_dir(pack_dir).ok()?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TMP_PACK)
            && entry.metadata().is_ok_and(|meta| meta.len() >= limits.fetch_size)
        {
            return Some(TooLarge { limit: Limit::FetchSize, max: limits.fetch_size, at: None });
        }
    }
    None
}

/// The object count of a pack's header, once git has written it.
fn object_count(file: &mut impl Read) -> Option<u64> {
    let mut header = [0u8; 12];
    file.read_exact(&mut header).ok()?;
    if &header[..4] != b"PACK" {
        return None;
    }
    Some(u64::from(u32::from_be_bytes(header[8..12].try_into().expect("four bytes"))))
}

/// Deletes the partial packs a killed fetch left in the bare repository
/// `git_dir` (a timeout, a replica killed mid-fetch); call only while no
/// fetch or maintenance runs there.
pub fn remove_partial_packs(git_dir: &Path) -> io::Result<usize> {
    remove_partial(&pack_dir(git_dir))
}

/// Deletes the partial packs in `pack_dir` a stopped or killed fetch left
/// (and their `.idx`/`.keep` companions, had `index-pack` got that far);
/// how many files went.
pub(super) fn remove_partial(pack_dir: &Path) -> io::Result<usize> {
    let entries = match std::fs::read_dir(pack_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if [TMP_PACK, "tmp_idx_", "tmp_rev_"].iter().any(|prefix| name.starts_with(prefix)) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { fetch_size: 100, pack_objects: 3, ..Limits::default() }
    }

    fn pack(objects: u32, len: usize) -> Vec<u8> {
        let mut bytes = b"PACK\0\0\0\x02".to_vec();
        bytes.extend(objects.to_be_bytes());
        bytes.resize(len.max(12), 0);
        bytes
    }

    #[test]
    fn a_pack_being_received_is_held_to_both_limits() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(&dir.path().join("absent"), &limits()), Ok(()));
        std::fs::write(dir.path().join("pack-1.pack"), pack(9, 500)).unwrap();
        assert_eq!(check(dir.path(), &limits()), Ok(()), "finished packs are not this fetch's");
        let tmp = dir.path().join("tmp_pack_abc");
        std::fs::write(&tmp, b"PA").unwrap();
        assert_eq!(check(dir.path(), &limits()), Ok(()), "no header yet");
        std::fs::write(&tmp, pack(3, 100)).unwrap();
        assert_eq!(check(dir.path(), &limits()), Ok(()));
        std::fs::write(&tmp, pack(3, 101)).unwrap();
        assert_eq!(check(dir.path(), &limits()).unwrap_err().limit, Limit::FetchSize);
        std::fs::write(&tmp, pack(4, 20)).unwrap();
        assert_eq!(check(dir.path(), &limits()).unwrap_err().limit, Limit::PackObjects);
    }

    #[test]
    fn a_pack_stopped_at_the_size_limit_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cut_off(dir.path(), &limits()), None);
        std::fs::write(dir.path().join("tmp_pack_x"), pack(1, 99)).unwrap();
        assert_eq!(cut_off(dir.path(), &limits()), None, "failed for another reason");
        std::fs::write(dir.path().join("tmp_pack_x"), pack(1, 100)).unwrap();
        assert_eq!(cut_off(dir.path(), &limits()).unwrap().limit, Limit::FetchSize);
    }

    #[test]
    fn partial_packs_are_removed_and_finished_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["tmp_pack_a", "tmp_pack_b", "tmp_idx_c", "pack-1.pack", "pack-1.idx"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_partial(dir.path()).unwrap(), 3);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["pack-1.idx", "pack-1.pack"]);
        assert_eq!(remove_partial(&dir.path().join("absent")).unwrap(), 0);
    }

    #[tokio::test]
    async fn the_watch_answers_once_a_limit_is_passed() {
        let dir = tempfile::tempdir().unwrap();
        let watching = tokio::spawn(watch(dir.path().to_owned(), limits()));
        std::fs::write(dir.path().join("tmp_pack_x"), pack(1, 50)).unwrap();
        std::fs::write(dir.path().join("tmp_pack_x"), pack(1, 5000)).unwrap();
        let too_large = tokio::time::timeout(Duration::from_secs(5), watching).await.unwrap().unwrap();
        assert_eq!((too_large.limit, too_large.max), (Limit::FetchSize, 100));
    }
}
