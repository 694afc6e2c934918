//! gitops-reverser: mirrors selected live Kubernetes objects into a Git
//! branch as clean YAML, one commit per change.
//!
//! The data path reads top-down through the modules:
//! `watch` → `route` → `sanitize` → `worker` → `status`, wired by
//! `controller` and started by `run`. `sops` seals Secrets for git.

pub mod api;
pub mod cli;
pub mod controller;
pub mod fault;
pub mod health;
pub mod memory;
pub mod quiet;
pub mod restore;
pub mod route;
pub mod run;
pub mod sanitize;
pub mod server;
pub mod shard;
pub mod sops;
pub mod status;
pub mod supervise;
pub mod telemetry;
pub mod watch;
pub mod worker;
