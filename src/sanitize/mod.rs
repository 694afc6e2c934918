//! Object → deterministic YAML bytes and file path (pure). Being written.
mod layout;
mod yaml;
pub use layout::*;
pub use yaml::{to_yaml, try_to_yaml};
