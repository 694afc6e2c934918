//! The trailing `sops:` map (stores/stores.go, stores/metadata.go): one
//! age-armored copy of the data key per recipient, `lastmodified`, the
//! encrypted MAC, `encrypted_regex` and `version`. sops sorts these keys by
//! name when it writes them, as `sanitize::to_yaml` does.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::cipher::DataKey;
use super::{ENCRYPTED_REGEX, Recipients, SOPS_VERSION, SopsError};

/// The earliest second Go's `time.RFC3339` layout writes with the four-digit
/// year its parser requires: 0000-01-01T00:00:00Z. The latest, the end of
/// 9999, is past jiff's own last timestamp, so it needs no check.
const FIRST_SECOND: i64 = -62_167_219_200;

/// `lastmodified` as sops writes it, `time.Now().UTC().Format(time.RFC3339)`:
/// whole seconds, `Z`. Its text is also the MAC's additional data, and sops
/// re-formats the parsed time before using it, so it must round-trip exactly.
pub(super) fn lastmodified_text(at: Timestamp) -> Result<String, SopsError> {
    let second = at.as_second();
    if second < FIRST_SECOND {
        return Err(SopsError::LastModifiedOutOfRange { second });
    }
    Ok(Timestamp::from_second(second).expect("checked range").strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// The value of the `sops:` key.
pub(super) fn sops_block(
    recipients: &Recipients,
    key: &DataKey,
    lastmodified: &str,
    encrypted_mac: String,
) -> Result<Value, SopsError> {
    let age = recipients
        .iter()
        .map(|recipient| {
            // Exactly what sops' age key source writes: an armored age file
            // whose payload is the raw 32-byte data key.
            let enc = age::encrypt_and_armor(recipient, key.bytes()).map_err(|source| {
                SopsError::WrapDataKey { recipient: recipient.to_string(), source: Box::new(source) }
            })?;
            Ok(json!({ "recipient": recipient.to_string(), "enc": enc }))
        })
        .collect::<Result<Vec<_>, SopsError>>()?;
    Ok(json!({
        "age": age,
        "lastmodified": lastmodified,
        "mac": encrypted_mac,
        "encrypted_regex": ENCRYPTED_REGEX,
        "version": SOPS_VERSION,
    }))
}
