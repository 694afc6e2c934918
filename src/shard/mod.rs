//! Sharding for high availability: branch keys map onto a fixed number of
//! shards, each shard has one desired owner among the live replicas, and
//! shard Leases give that owner exclusivity through the API server.
//! `hash`, `records`, `settings` and `ownership` are pure; `lease` and
//! `coordinator` talk to the API server.

pub mod coordinator;
pub mod hash;
pub mod lease;
pub mod ownership;
pub mod plan;
pub mod records;
pub mod settings;

pub use coordinator::{Coordinator, ShardHandle};
pub use ownership::{Fence, Ownership, OwnershipView};
pub use settings::ShardSettings;
