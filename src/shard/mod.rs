//! Sharding for high availability: branch keys map onto a fixed number of
//! shards, each shard has one desired owner among the live replicas, and
//! shard Leases give that owner exclusivity through the API server.
//! `hash` is the pure placement logic; `lease` talks to the API server.

pub mod hash;
pub mod lease;
