//! Object → deterministic YAML bytes and file path (pure). Being written.
