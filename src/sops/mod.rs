//! Secret → SOPS-encrypted YAML file (pure: no I/O, no clock, the caller's RNG).
//!
//! In: a Secret that sanitize already cleaned (`apiVersion`, `kind`,
//! `metadata`, `type`, `data` and/or `stringData`), the age recipients, the
//! time to record and a cryptographic RNG. Out: the bytes of a file that the
//! real `sops --decrypt` (and so Flux's kustomize-controller) turns back into
//! exactly that Secret. `tests/sops_decrypt.rs` checks this against the sops
//! release we write as ([`SOPS_VERSION`]).
//!
//! What the file is, as sops v3.13 writes and reads it:
//! - every value under a key named `data` or `stringData`, at any depth, is
//!   `ENC[AES256_GCM,data:…,iv:…,tag:…,type:str]`: AES-256-GCM under one
//!   random 32-byte data key, a random 32-byte IV per value, the key path
//!   joined with `:` plus a trailing `:` (`data:password:`) as additional data
//!   (`cipher`). An empty string stays `""`, as sops leaves it. Everything else
//!   stays readable ([`ENCRYPTED_REGEX`], the rule Flux documents);
//! - the MAC is SHA-512 over every value of the document, encrypted or not,
//!   in the order the YAML lists them, as upper-case hex, itself encrypted
//!   with the `lastmodified` text as additional data (`tree`, `metadata`);
//! - the trailing `sops:` map carries one age-armored copy of the data key per
//!   recipient, `lastmodified` (RFC 3339, seconds, UTC), `mac`,
//!   `encrypted_regex` and `version` (`metadata`).
//!
//! The YAML is `crate::sanitize::to_yaml` (sorted keys, YAML-1.1 hazards
//! quoted), so the bytes are as stable and safe as every other file; the MAC
//! walks the keys in the same order that writer uses, which is the order
//! sops recomputes it in when it parses the file.
//!
//! Randomness: the data key and every IV come from the caller's RNG. The age
//! crate draws its own per-recipient file key, ephemeral X25519 key and
//! payload nonce from the operating system and offers no way to pass an RNG,
//! so the `enc` blocks differ between two seals with the same seed.
//!
//! [`digest`]: a keyed digest of the Secret's plaintext, written in the file
//! as the annotation [`DIGEST_ANNOTATION`], so that the operator can tell
//! that a live Secret still equals what it sealed without holding any age
//! private key: see `digest.rs` for what it covers and why it leaks nothing
//! beyond "unchanged".
//!
//! The plaintext is never part of an error: errors name key paths only. The
//! data key and the MAC are zeroized when dropped.

mod cipher;
mod digest;
mod metadata;
mod recipients;
mod seal;
mod tree;

pub use digest::{DIGEST_ANNOTATION, DIGEST_PREFIX, digest, digest_in_file};
pub use recipients::Recipients;
pub use seal::seal;

/// The sops release whose format we write: the `version` of the `sops:` map,
/// and the binary `tests/env/install` builds to check it.
pub const SOPS_VERSION: &str = "3.13.3";

/// Which values sops encrypts: those with a key path component named `data`
/// or `stringData` (`encrypted_regex` of the `sops:` map, as Flux documents).
pub const ENCRYPTED_REGEX: &str = "^(data|stringData)$";

/// Why a Secret cannot be sealed. Never carries a plaintext value.
#[derive(Debug, thiserror::Error)]
pub enum SopsError {
    #[error("no age recipients: a Secret must be sealed for at least one")]
    NoRecipients,
    #[error("age recipient #{index} {entry:?} is not an X25519 age recipient (age1…): {reason}")]
    InvalidRecipient { index: usize, entry: String, reason: &'static str },
    #[error("age recipient {entry:?} is listed twice")]
    DuplicateRecipient { entry: String },
    #[error("the Secret is a JSON {found}, not a JSON object")]
    NotAnObject { found: &'static str },
    #[error("the Secret has a top-level `sops` key, which SOPS reserves for its metadata")]
    ReservedKey,
    #[error("the value at {path} is a {found}; values sops encrypts here must be strings")]
    NotAString { path: String, found: &'static str },
    #[error("the value at {path} is a {found}, which sops would not read back as written")]
    UnsupportedValue { path: String, found: &'static str },
    #[error("lastmodified ({second} s since the epoch) is before the year 0000, which RFC 3339 cannot carry")]
    LastModifiedOutOfRange { second: i64 },
    #[error("AES-GCM refused to encrypt the value at {path} (too long)")]
    Encrypt { path: String },
    #[error("cannot wrap the data key for age recipient {recipient}: {source}")]
    WrapDataKey {
        recipient: String,
        // Boxed: age's error is large and this path is rare.
        #[source]
        source: Box<age::EncryptError>,
    },
    #[error("cannot serialize the sealed Secret as YAML: {source}")]
    Yaml {
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

/// The JSON type of a value, for errors.
fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod open;
#[cfg(test)]
mod tests;
