//! [`seal`]: a cleaned Secret → the bytes of its SOPS YAML file.

use k8s_openapi::jiff::Timestamp;
use rand_core::CryptoRng;
use serde_json::{Value, json};

use super::cipher::DataKey;
use super::metadata::{lastmodified_text, sops_block};
use super::tree::encrypt_object;
use super::{Recipients, SopsError, json_type};
use crate::sanitize::try_to_yaml;

/// Encrypts `secret` for `recipients` as sops would, recording `lastmodified`
/// (whole seconds are kept). The data key and every IV come from `rng`.
///
/// `secret` is a Secret object as sanitize cleans it; if the caller wants the
/// [`super::DIGEST_ANNOTATION`] in the file, it puts it in
/// `metadata.annotations` first. The values under `data`/`stringData` must be
/// strings; other values may be strings, bools, 64-bit integers or null.
pub fn seal(
    secret: &Value,
    recipients: &Recipients,
    lastmodified: Timestamp,
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, SopsError> {
    let object = secret.as_object().ok_or(SopsError::NotAnObject { found: json_type(secret) })?;
    if object.contains_key("sops") {
        return Err(SopsError::ReservedKey);
    }
    let lastmodified = lastmodified_text(lastmodified)?;
    let key = DataKey::generate(rng);
    let (encrypted, mac) = encrypt_object(object, &key, rng)?;
    // The MAC's additional data is the lastmodified text, not a key path.
    let encrypted_mac = key
        .encrypt_str(&mac, &lastmodified, rng)
        .ok_or_else(|| SopsError::Encrypt { path: "sops.mac".to_owned() })?;
    let block = sops_block(recipients, &key, &lastmodified, encrypted_mac)?;

    // sops appends its map after the document's keys; to_yaml would sort it
    // among them, so it is written as a second top-level map of the same
    // document (both are block mappings at column 0).
    let mut out = try_to_yaml(&encrypted).map_err(|source| SopsError::Yaml { source })?;
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend(try_to_yaml(&json!({ "sops": block })).map_err(|source| SopsError::Yaml { source })?);
    Ok(out)
}
