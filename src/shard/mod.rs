//! Sharding for high availability: branch keys map onto a fixed number of
//! shards, each shard has one desired owner among the live replicas, and
//! shard Leases give that owner exclusivity through the API server.
//! `hash`, `balance`, `records`, `settings`, `ownership`, `plan` and `core` (every
//! decision of the coordinator) are pure; `lease` and `coordinator` talk to
//! the API server. `sim` runs many cores against a simulated API server.

pub mod balance;
pub mod coordinator;
pub mod core;
pub mod hash;
pub mod lease;
pub mod ownership;
pub mod plan;
pub mod records;
pub mod settings;
#[cfg(test)]
mod sim;

pub use coordinator::{Coordinator, ShardHandle};
pub use ownership::{Fence, Ownership, OwnershipView};
pub use settings::ShardSettings;
