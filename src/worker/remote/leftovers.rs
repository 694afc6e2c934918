//! Removal of sandbox directories that a killed process left behind.
//!
//! In: the temp directory (`TMPDIR`, as `tempfile` uses it). Out: every
//! stale sandbox in it removed, with the count. A sandbox is removed on drop,
//! but a process killed by SIGKILL (OOM, a liveness probe) never drops it,
//! and the chart's `/tmp` is an emptyDir that outlives container restarts:
//! credentials would pile up there in files.
//!
//! A sandbox's name carries the pid of its process
//! (`gitops-reverser-remote-<pid>-<random>`). At start-up we have none yet, so
//! every one is stale except those of another live process (a second
//! operator sharing the temp directory, as in tests). After a container
//! restart the new process often has the old one's pid: ours, so removed.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The prefix of every sandbox directory's name.
pub(super) const SANDBOX_PREFIX: &str = "gitops-reverser-remote-";

/// The name prefix of this process's sandboxes.
pub(super) fn own_prefix() -> String {
    format!("{SANDBOX_PREFIX}{}-", std::process::id())
}

/// Removes stale sandboxes from the temp directory; how many were removed.
/// Call before any [`super::Remote`] exists.
pub fn remove_stale_sandboxes() -> io::Result<usize> {
    remove_stale_in(&std::env::temp_dir())
}

fn remove_stale_in(dir: &Path) -> io::Result<usize> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SANDBOX_PREFIX)) else { continue };
        // Not followed if a link: only real directories of our own user.
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        if !meta.is_dir() || meta.uid() != uid || owner_is_alive(rest) {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(io::Error::new(
                    error.kind(),
                    format!("remove {}: {error}", entry.path().display()),
                ));
            }
        }
    }
    Ok(removed)
}

/// Whether `<pid>-...` names a live process other than this one.
fn owner_is_alive(rest: &str) -> bool {
    let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<libc::pid_t>().ok()) else { return false };
    if pid <= 0 || pid as u32 == std::process::id() {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let status = unsafe { libc::kill(pid, 0) };
    status == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_sandboxes_go_and_live_ones_and_others_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let path = tmp.path().join(name);
            std::fs::create_dir(&path).unwrap();
            std::fs::write(path.join("password"), "pw").unwrap();
            path
        };
        let planted = dir("gitops-reverser-remote-xyz");
        let ours = dir(&format!("{}abc", own_prefix()));
        // pid 1 is alive (init) and is not this test.
        let live = dir("gitops-reverser-remote-1-abc");
        let dead = dir(&format!("gitops-reverser-remote-{}-abc", libc::pid_t::MAX));
        let other = dir("something-else");
        let file = tmp.path().join("gitops-reverser-remote-file");
        std::fs::write(&file, "not a directory").unwrap();
        let link = tmp.path().join("gitops-reverser-remote-link");
        std::os::unix::fs::symlink(&other, &link).unwrap();

        assert_eq!(remove_stale_in(tmp.path()).unwrap(), 3);
        for gone in [&planted, &ours, &dead] {
            assert!(!gone.exists(), "{} should be gone", gone.display());
        }
        for kept in [&live, &other, &file, &link] {
            assert!(kept.symlink_metadata().is_ok(), "{} should stay", kept.display());
        }
        assert!(other.join("password").exists(), "a link is not followed");
    }
}
