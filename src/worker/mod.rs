//! The branch worker: local repository (gix), remote operations (git CLI) and
//! credentials.

pub mod credentials;
pub mod queue;
pub mod remote;
pub mod repo;
