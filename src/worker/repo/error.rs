//! The one error type of the local-repository layer.
//!
//! In: failures from gix, path validation and tree inspection. Out: a
//! [`RepoError`] whose message names the path, ref or operation that failed,
//! so a log line or condition message is useful without the source chain.

use gix::ObjectId;

/// Everything that can go wrong while reading or writing the local repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A repository-relative path broke the path rules (see `path.rs`).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    /// Not a full ref name such as `refs/heads/main` or `HEAD`.
    #[error("invalid ref name {name:?}")]
    InvalidRefName {
        name: String,
        #[source]
        source: gix::validate::reference::name::Error,
    },

    /// The repository was not opened yet (the first fetch opens it).
    #[error("the local repository is not open yet")]
    NotOpen,

    /// A change would replace a folder by a file or the other way round, or two
    /// changes in one commit overlap. Refused so no folder is ever wiped implicitly.
    #[error("path conflict at {path:?}: {reason}")]
    PathConflict { path: String, reason: String },

    /// A name or email that would corrupt the commit header.
    #[error("invalid identity {value:?}: {reason}")]
    InvalidIdentity { value: String, reason: &'static str },

    /// An object the operation needs is not in the local object database,
    /// e.g. a parent commit that was never fetched.
    #[error("{kind} {id} not found in the local repository")]
    MissingObject { kind: &'static str, id: ObjectId },

    /// The branch is past one of the limits (entries, a path's length, a
    /// file's size): a hostile or misused remote must not exhaust the
    /// replica's memory or time.
    #[error(transparent)]
    TooLarge(#[from] crate::worker::limits::TooLarge),

    /// An object exists but has another kind than the operation expects.
    #[error("object {id} is a {actual}, expected a {expected}")]
    WrongKind { id: ObjectId, expected: &'static str, actual: String },

    /// The directory holds a repository with a worktree; the worker needs a bare one.
    #[error("{} is not a bare repository", path.display())]
    NotBare { path: std::path::PathBuf },

    /// A commit could not be signed, or what was written does not carry a
    /// signature that verifies: it is not used, so it is never pushed.
    #[error("{op} failed: {source}")]
    Signing {
        op: String,
        #[source]
        source: crate::worker::signing::SigningError,
    },

    /// The objects held in memory could not be written as a pack.
    #[error("write the committed objects as a pack in {}: {source}", dir.display())]
    WritePack {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// gix panicked inside a call (a bug there); the handle is replaced.
    #[error("the git library failed unexpectedly: {message}")]
    Panicked { message: String },

    /// Any gix failure, with the operation and its subject. The cause is in
    /// the message too, since conditions and logs usually show only that.
    #[error("{op} failed: {source}")]
    Git {
        op: String,
        #[source]
        source: gix::Error,
    },
}

/// Attaches "what we were doing" to a gix result.
pub(crate) trait Context<T> {
    fn context(self, op: impl FnOnce() -> String) -> Result<T, RepoError>;
}

impl<T, E: Into<gix::Error>> Context<T> for Result<T, E> {
    fn context(self, op: impl FnOnce() -> String) -> Result<T, RepoError> {
        self.map_err(|e| RepoError::Git { op: op(), source: e.into() })
    }
}
