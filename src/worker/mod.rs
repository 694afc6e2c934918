//! The branch worker: intake queue, local repository (gix), remote
//! operations (git CLI), credentials, commit signing keys, and the task that
//! ties them together.

pub mod author;
pub mod branch;
pub mod core;
pub mod credentials;
pub mod fetches;
pub mod files;
pub mod handle;
pub mod kustomization;
pub mod limits;
pub mod message;
pub mod observe;
pub mod policy;
pub mod push_slots;
pub mod pushers;
pub mod queue;
pub mod remote;
pub mod repo;
pub mod signing;
pub mod store;
