//! Sharding for high availability: branch keys map onto a fixed number of
//! shards, and each shard has one desired owner among the live replicas.
//! `hash` is the pure placement logic (no I/O).

pub mod hash;
