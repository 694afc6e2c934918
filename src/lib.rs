//! gitops-reverser: mirrors selected live Kubernetes objects into a Git
//! branch as clean YAML, one commit per change.
//!
//! The data path reads top-down through the modules: `api` (types), then
//! `cli`/`server` (process wiring), and later watch → route → sanitize →
//! worker → status.

pub mod api;
pub mod cli;
pub mod route;
pub mod run;
pub mod sanitize;
pub mod server;
pub mod telemetry;
pub mod worker;
