//! Sharding: shard Leases, stable hashing and rendezvous assignment.
pub mod lease;
