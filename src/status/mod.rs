//! Status: the desired status of each resource (pure), and the writer that
//! patches it and publishes Events on transitions (I/O, owner only).

pub mod conditions;
pub mod target;
pub mod writer;

/// A problem with a resource's configuration that the user must fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: crate::api::Reason,
    pub message: String,
}

impl Problem {
    pub fn new(reason: crate::api::Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}
