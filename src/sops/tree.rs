//! The document walk: encrypts the values sops encrypts and hashes every
//! value into the MAC, in the order the YAML lists them (`Tree.Encrypt` in
//! sops.go, with `mac_only_encrypted` unset).
//!
//! The MAC input is the concatenation, without separators, of each value's
//! bytes as sops' `ToBytes` renders what its YAML reader returns: a string's
//! UTF-8 bytes (an empty string adds nothing), `True`/`False` for a bool, the
//! decimal digits of an integer. A null is no value to sops: it is neither
//! hashed nor encrypted. Keys are not hashed; they are bound through the
//! additional data of each encrypted value and through the order.

use rand_core::CryptoRng;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha512};
use zeroize::Zeroizing;

use super::cipher::{DataKey, additional_data};
use super::{SopsError, json_type};
use crate::sanitize::yaml_key_order;

/// The MAC before it is encrypted: SHA-512 as upper-case hex (Go's `%X`).
pub(super) type PlainMac = Zeroizing<String>;

/// Returns the object with the values under `data`/`stringData` encrypted,
/// and the MAC over all of its values.
pub(super) fn encrypt_object(
    object: &Map<String, Value>,
    key: &DataKey,
    rng: &mut impl CryptoRng,
) -> Result<(Value, PlainMac), SopsError> {
    let mut walk = Walk { key, rng, mac: Sha512::new(), path: Vec::new() };
    let encrypted = walk.map(object, true)?;
    let mac = walk.mac.finalize();
    let mut hex = Zeroizing::new(String::with_capacity(mac.len() * 2));
    for byte in mac.iter() {
        hex.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_UPPER[usize::from(byte & 0xf)]));
    }
    Ok((encrypted, hex))
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Whether sops encrypts the value at `path` under [`super::ENCRYPTED_REGEX`]:
/// `shouldBeEncrypted` matches the regex against every component of the
/// path, so a key named `data` inside `metadata.annotations` counts too.
/// The regex is anchored and Go's `$` matches only at the end of the text,
/// so a component matches exactly when it equals one of the two names.
pub(super) fn is_encrypted(path: &[&str]) -> bool {
    path.iter().any(|key| matches!(*key, "data" | "stringData"))
}

struct Walk<'a, 'p, R> {
    key: &'a DataKey,
    rng: &'a mut R,
    mac: Sha512,
    path: Vec<&'p str>,
}

impl<'p, R: CryptoRng> Walk<'_, 'p, R> {
    /// Visits keys in the order `sanitize::to_yaml` writes them, which is the
    /// order sops reads them back in and recomputes the MAC in.
    fn map(&mut self, map: &'p Map<String, Value>, top: bool) -> Result<Value, SopsError> {
        let mut out = Map::new();
        for key in yaml_key_order(map, top) {
            self.path.push(key);
            let value = self.value(&map[key])?;
            self.path.pop();
            out.insert(key.to_owned(), value);
        }
        Ok(Value::Object(out))
    }

    fn value(&mut self, value: &'p Value) -> Result<Value, SopsError> {
        let encrypted = is_encrypted(&self.path);
        match value {
            Value::Object(map) => self.map(map, false),
            // sops walks list items under the list's own path: no index.
            Value::Array(items) => {
                items.iter().map(|item| self.value(item)).collect::<Result<_, _>>().map(Value::Array)
            }
            Value::Null => Ok(Value::Null),
            Value::String(s) => {
                self.mac.update(s.as_bytes());
                if !encrypted {
                    return Ok(value.clone());
                }
                self.key
                    .encrypt_str(s, &additional_data(&self.path), self.rng)
                    .map(Value::String)
                    .ok_or_else(|| SopsError::Encrypt { path: self.path_text() })
            }
            Value::Bool(_) | Value::Number(_) if encrypted => {
                Err(SopsError::NotAString { path: self.path_text(), found: json_type(value) })
            }
            Value::Bool(b) => {
                self.mac.update(if *b { "True" } else { "False" });
                Ok(value.clone())
            }
            Value::Number(n) => {
                // sops' YAML reader returns a Go int for an integer and
                // hashes its decimal digits; a float or an integer beyond
                // int64 would not hash the same. No Secret field has one.
                let int = n.as_i64().ok_or_else(|| SopsError::UnsupportedValue {
                    path: self.path_text(),
                    found: if n.is_f64() { "floating-point number" } else { "integer beyond 64-bit" },
                })?;
                self.mac.update(int.to_string());
                Ok(value.clone())
            }
        }
    }

    /// The current key path for errors: `data.password`.
    fn path_text(&self) -> String {
        self.path.join(".")
    }
}
