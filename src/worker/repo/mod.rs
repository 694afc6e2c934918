//! The local bare repository of one branch worker; objects are written with
//! gix, there is no worktree.
//!
//! In: file changes ("path has these bytes" / "path is gone") on top of a
//! parent commit, and ref updates. Out: commit ids, refs, and reads of single
//! files or of a folder listing (ids only, never all blobs) at a commit.
//!
//! The git CLI fetches into and pushes from the same directory, so it stays a
//! plain bare repository that both tools read and write. A commit needs only
//! its parent commit and the trees on the changed paths, which is exactly
//! what a shallow `--depth 1` fetch provides; history is walked only to tell
//! which local commits a tip holds, and what a previous owner wrote.

mod commit;
mod error;
mod history;
mod pack;
mod path;
mod read;
mod shared;
#[cfg(test)]
mod signed_tests;
#[cfg(test)]
mod tests;

use std::path::Path;

use error::Context;
pub use error::RepoError;
pub use gix::ObjectId;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::{FullName, Target};
pub use history::HistoryFrom;
pub use pack::TMP_PREFIX as TMP_PACK_PREFIX;

/// Objects a handle holds in memory (see [`LocalRepo::hold_objects_in_memory`]).
pub type HeldObjects = gix::odb::memory::Storage;

/// Writes the objects of several handles of the store at `git_dir` as one
/// pack (an object held by several is written once); returns how many.
pub fn write_held(git_dir: &Path, held: &[&HeldObjects]) -> Result<usize, RepoError> {
    let mut objects = std::collections::BTreeMap::new();
    for (id, object) in held.iter().flat_map(|h| h.iter()) {
        objects.entry(id).or_insert(object);
    }
    let dir = git_dir.join("objects").join("pack");
    pack::write(&dir, objects.iter().map(|(id, object)| (*id, *object)))
        .map_err(|source| RepoError::WritePack { dir, source })?;
    Ok(objects.len())
}

use crate::worker::limits::Limits;
use crate::worker::signing::SigningKey;

/// One file-level change; paths are '/'-separated and repository-relative.
#[derive(Clone, PartialEq, Eq)]
pub enum FileChange {
    Write {
        path: String,
        content: Vec<u8>,
    },
    /// The file holds a blob the repository already has (a repair).
    Restore {
        path: String,
        id: ObjectId,
    },
    Delete {
        path: String,
    },
}

// Content stays out of logs: it can be large, and it is user data.
impl std::fmt::Debug for FileChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileChange::Write { path, content } => {
                f.debug_struct("Write").field("path", path).field("bytes", &content.len()).finish()
            }
            FileChange::Restore { path, id } => {
                f.debug_struct("Restore").field("path", path).field("id", id).finish()
            }
            FileChange::Delete { path } => f.debug_struct("Delete").field("path", path).finish(),
        }
    }
}

/// Name and email of an author or committer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

/// A point in time as git records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitTime {
    /// Seconds since the Unix epoch (UTC).
    pub seconds: i64,
    /// Offset of the local time zone east of UTC, in seconds.
    pub offset_seconds: i32,
}

/// Everything about a commit except its tree and parent.
#[derive(Debug, Clone, Copy)]
pub struct CommitSpec<'a> {
    pub message: &'a str,
    pub author: &'a Identity,
    pub committer: &'a Identity,
    /// Used for author and committer; `None` means now.
    pub time: Option<CommitTime>,
    /// Signs the commit (a `gpgsig` header); `None` writes it unsigned.
    pub signer: Option<&'a SigningKey>,
    /// Write the commit even if its tree equals the parent's (a marker
    /// whose message is the point).
    pub allow_empty: bool,
}

/// A bare repository on disk. `Send`, not `Sync`: one worker owns it and
/// moves it into `spawn_blocking`.
pub struct LocalRepo {
    repo: gix::Repository,
    /// Bounds on every walk of a branch's trees (`read`).
    limits: Limits,
    /// Whether the object store is the process's one for this path.
    shared: bool,
}

// Trees on the changed path are read twice per commit (check, then edit),
// and the upper trees again by the next commit; a small cache keeps those
// reads off the disk (no-op checks: ~100 µs uncached, ~5 µs cached). It is
// per worker and grows on demand up to this cap.
const OBJECT_CACHE_BYTES: usize = 1024 * 1024;

// Only for the reflog, which bare repositories normally don't keep.
const REFLOG_NAME: &str = "gitops-reverser";

/// Pack index slots of one handle. gix sizes them once, at open, from the
/// packs on disk then (default: 10% spare, at least 32), and every fetch adds
/// a pack (`transfer.unpackLimit=1`), also those of other workers sharing the
/// repository: a long-lived handle then fails every read with "too few index
/// slots" until it is reopened. Maintenance consolidates packs well below this
/// (`PACK_LIMIT` in `worker::remote`); a slot costs a few dozen bytes.
const INDEX_SLOTS: gix::odb::store::init::Slots =
    gix::odb::store::init::Slots::AsNeededByDiskState { multiplier: 2.0, minimum: 512 };

/// A miss opens the shared store anew once the store is at least this old
/// (see `shared::renewed_if_older`).
const MISS_RENEWS_STORE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

fn open_options() -> gix::open::Options {
    gix::open::Options::isolated().object_store_slots(INDEX_SLOTS)
}

/// Opens the bare repository at `path`, or creates it where `path` is
/// missing or an empty directory.
fn open_store(path: &Path) -> Result<gix::ThreadSafeRepository, RepoError> {
    let has_content = std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some());
    if has_content {
        gix::ThreadSafeRepository::open_opts(path, open_options())
            .context(|| format!("open repository {}", path.display()))
    } else {
        gix::ThreadSafeRepository::init_opts(
            path,
            gix::create::Kind::Bare,
            gix::create::Options::default(),
            open_options(),
        )
        .context(|| format!("init bare repository {}", path.display()))
    }
}

impl LocalRepo {
    /// Opens the bare repository at `path`, or creates one if `path` is
    /// missing or an empty directory. Neither reads user or system git config.
    /// The handle has an object store of its own.
    pub fn open_or_init(path: &Path) -> Result<Self, RepoError> {
        Self::from_handle(open_store(path)?.to_thread_local(), false)
    }

    /// As [`open_or_init`](Self::open_or_init), but on the object store that
    /// every shared handle of `path` in this process uses (see `shared`).
    pub fn open_shared(path: &Path) -> Result<Self, RepoError> {
        Self::from_handle(shared::handle(path)?, true)
    }

    fn from_handle(mut repo: gix::Repository, shared: bool) -> Result<Self, RepoError> {
        if !repo.is_bare() {
            return Err(RepoError::NotBare { path: repo.git_dir().to_owned() });
        }
        repo.object_cache_size_if_unset(OBJECT_CACHE_BYTES);
        Ok(LocalRepo { repo, limits: Limits::default(), shared })
    }

    /// A fresh handle on the same repository, with the same limits and the
    /// objects this one holds in memory: after a gix failure, the next try
    /// starts from the disk's state, not from what this handle loaded (its
    /// pack indices and slots). After a miss: a shared handle's store is
    /// opened anew if it is older than [`MISS_RENEWS_STORE_AFTER`], else
    /// the handle stays on it (a truly missing object, retried, must not
    /// open a store per retry).
    pub fn reopened(&self) -> Result<Self, RepoError> {
        self.reopen(MISS_RENEWS_STORE_AFTER)
    }

    /// As [`reopened`](Self::reopened), but after a panic inside gix: the
    /// shared store itself is suspect, so where this handle still uses it,
    /// it is opened anew for every handle that comes after.
    pub fn reopened_on_new_store(&self) -> Result<Self, RepoError> {
        self.reopen(std::time::Duration::ZERO)
    }

    /// A fresh handle; a shared one on a new store if its store is at
    /// least `renew_after` old.
    fn reopen(&self, renew_after: std::time::Duration) -> Result<Self, RepoError> {
        let path = self.git_dir();
        let mut fresh = if self.shared {
            Self::from_handle(shared::renewed_if_older(path, &self.repo, renew_after)?, true)?
        } else {
            Self::open_or_init(path)?
        };
        fresh.limits = self.limits;
        if let Some(held) = self.repo.objects.reset_object_memory() {
            fresh.repo.objects.set_object_memory(held);
        }
        Ok(fresh)
    }

    /// From now on, objects this handle writes stay in its memory until
    /// [`persist_objects`](Self::persist_objects); it reads them from there.
    /// git and other handles see them only once persisted.
    pub fn hold_objects_in_memory(&mut self) {
        self.repo.objects.enable_object_memory();
    }

    /// Objects written and not yet persisted.
    pub fn objects_in_memory(&self) -> usize {
        self.repo.objects.num_objects_in_memory()
    }

    /// A copy of the objects held in memory, for a pack written elsewhere:
    /// the repository's pusher writes one for every branch of a push. They
    /// stay held until [`forget_written`](Self::forget_written).
    pub fn held_objects(&mut self) -> HeldObjects {
        let Some(held) = self.repo.objects.take_object_memory() else { return HeldObjects::default() };
        let copy = held.clone();
        self.repo.objects.set_object_memory(held);
        copy
    }

    /// Stops holding `written` in memory: they are in a pack on disk now
    /// (objects written since the copy stay held).
    pub fn forget_written(&mut self, written: &HeldObjects) {
        let Some(mut held) = self.repo.objects.take_object_memory() else { return };
        held.retain(|id, _| !written.contains_key(id));
        self.repo.objects.set_object_memory(held);
    }

    /// Writes the objects held in memory as one pack into the object store;
    /// returns how many. On failure they stay in memory for the next try.
    pub fn persist_objects(&mut self) -> Result<usize, RepoError> {
        let Some(held) = self.repo.objects.take_object_memory() else { return Ok(0) };
        match write_held(self.git_dir(), &[&held]) {
            Ok(written) => {
                self.repo.objects.enable_object_memory();
                Ok(written)
            }
            Err(error) => {
                self.repo.objects.set_object_memory(held);
                Err(error)
            }
        }
    }

    /// Bounds the walks of branches' trees (default: [`Limits::default`]).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The repository directory, for the git CLI (`--git-dir`).
    pub fn git_dir(&self) -> &Path {
        self.repo.git_dir()
    }

    /// The object a full ref name (`refs/heads/main`, `HEAD`) points to,
    /// following symbolic refs; `None` if it (or its referent) does not exist.
    pub fn resolve(&self, refname: &str) -> Result<Option<ObjectId>, RepoError> {
        let op = || format!("resolve ref {refname}");
        let mut name = full_name(refname)?;
        // Bounded like git's own symref depth limit.
        for _ in 0..5 {
            let found = self.repo.refs.try_find(name.as_ref().as_partial_name()).context(op)?;
            // `try_find` takes partial names and may try other prefixes too;
            // only the exact ref counts.
            match found.filter(|r| r.name == name).map(|r| r.target) {
                None => return Ok(None),
                Some(Target::Object(id)) => return Ok(Some(id)),
                Some(Target::Symbolic(next)) => name = next,
            }
        }
        Err(RepoError::Git {
            op: op(),
            source: gix::Error::from_error(std::io::Error::other("symbolic ref chain too deep")),
        })
    }

    /// Points `refname` at `id` unconditionally. The object must exist, so a
    /// ref can never dangle.
    pub fn set_ref(&self, refname: &str, id: ObjectId) -> Result<(), RepoError> {
        let name = full_name(refname)?;
        if !self.repo.has_object(id) {
            return Err(RepoError::MissingObject { kind: "object", id });
        }
        let edit = RefEdit {
            change: Change::Update {
                log: LogChange {
                    mode: RefLog::AndReference,
                    force_create_reflog: false,
                    message: "gitops-reverser: set ref".into(),
                },
                expected: PreviousValue::Any,
                new: Target::Object(id),
            },
            name,
            deref: false,
        };
        let signature = gix::actor::Signature {
            name: REFLOG_NAME.into(),
            email: REFLOG_NAME.into(),
            time: gix::date::Time::now_utc(),
        };
        let mut time_buf = Default::default();
        self.repo
            .edit_references_as([edit], Some(signature.to_ref(&mut time_buf)))
            .context(|| format!("update ref {refname} to {id}"))?;
        Ok(())
    }

    /// The blob id `content` would get, without writing it.
    ///
    /// SHA-1 collision detection may refuse crafted input; that yields the
    /// null id, which matches no tree entry, and `commit` then reports the error.
    pub fn blob_id(content: &[u8]) -> ObjectId {
        gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, content)
            .unwrap_or_else(|_| ObjectId::null(gix::hash::Kind::Sha1))
    }
}

fn full_name(refname: &str) -> Result<FullName, RepoError> {
    FullName::try_from(refname)
        .map_err(|source| RepoError::InvalidRefName { name: refname.to_owned(), source })
}

// `LocalRepo` crosses into `spawn_blocking`; keep that a compile-time fact.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<LocalRepo>();
};
