//! What one GitTarget seals its Secrets with: its age recipients and the
//! cluster's digest key. The clock and the operating system's RNG are read
//! here, at the edge; [`super::seal`] and [`super::digest`] stay pure.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use rand_core::{OsRng, TryRngCore};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{DIGEST_ANNOTATION, Recipients, SopsError, digest, seal};

/// Leads the recipient set in the derivation of a sealer's digest key.
const RECIPIENTS_DOMAIN: &[u8] = b"gitops-reverser sops-recipients v1\n";

/// The key of every digest the operator writes: random, at least 32 bytes,
/// shared by every replica (a Secret of the operator's own), never in git.
#[derive(Clone)]
pub struct DigestKey(Arc<Zeroizing<Vec<u8>>>);

/// The fewest bytes a digest key may have.
pub const DIGEST_KEY_BYTES: usize = 32;

impl DigestKey {
    /// `None` for a key shorter than [`DIGEST_KEY_BYTES`].
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        let bytes = Zeroizing::new(bytes);
        (bytes.len() >= DIGEST_KEY_BYTES).then(|| Self(Arc::new(bytes)))
    }

    /// A fresh random key, for a cluster that has none yet.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; DIGEST_KEY_BYTES]);
        OsRng.try_fill_bytes(&mut bytes).expect("the operating system's RNG works");
        Self(Arc::new(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey([redacted])")
    }
}

impl PartialEq for DigestKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for DigestKey {}

/// A Secret sealed for a target: the file and the digest it carries.
#[derive(Debug)]
pub struct Sealed {
    pub file: Vec<u8>,
    pub digest: String,
}

/// A target's recipients with the cluster's digest key.
#[derive(Debug)]
pub struct Sealer {
    recipients: Recipients,
    key: DigestKey,
}

impl PartialEq for Sealer {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.recipients.to_strings() == other.recipients.to_strings()
    }
}

impl Eq for Sealer {}

impl Sealer {
    /// Digests are keyed per recipient set (an HMAC of the sorted
    /// recipients under the cluster's key): a file sealed for other
    /// recipients never looks current, so new recipients get every Secret
    /// sealed again for them.
    pub fn new(recipients: Recipients, key: DigestKey) -> Self {
        let mut names = recipients.to_strings();
        names.sort();
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("HMAC takes any key");
        mac.update(RECIPIENTS_DOMAIN);
        for name in &names {
            mac.update(name.as_bytes());
            mac.update(b"\n");
        }
        let key = DigestKey(Arc::new(Zeroizing::new(mac.finalize().into_bytes().to_vec())));
        Self { recipients, key }
    }

    pub fn recipients(&self) -> &Recipients {
        &self.recipients
    }

    /// The digest of a cleaned Secret, as its sealed file would carry it.
    pub fn digest(&self, secret: &Value) -> String {
        digest(self.key.bytes(), secret)
    }

    /// Seals a cleaned Secret: its digest goes in as the annotation
    /// [`DIGEST_ANNOTATION`], then `data` and `stringData` are encrypted.
    pub fn seal(&self, secret: &Value) -> Result<Sealed, SopsError> {
        let digest = self.digest(secret);
        let file =
            seal(&with_digest(secret, &digest), &self.recipients, Timestamp::now(), &mut OsRng.unwrap_err())?;
        Ok(Sealed { file, digest })
    }
}

/// `secret` with `metadata.annotations[DIGEST_ANNOTATION] = digest`.
fn with_digest(secret: &Value, digest: &str) -> Value {
    let mut copy = secret.clone();
    if let Some(object) = copy.as_object_mut() {
        let metadata = object.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if let Some(metadata) = metadata.as_object_mut() {
            let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(DIGEST_ANNOTATION.to_owned(), Value::String(digest.to_owned()));
            }
        }
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sops::digest_in_file;
    use serde_json::json;

    fn sealer() -> Sealer {
        let identity = age::x25519::Identity::generate();
        let recipients = Recipients::parse([identity.to_public().to_string()]).unwrap();
        Sealer::new(recipients, DigestKey::new(vec![7; 32]).unwrap())
    }

    #[test]
    fn the_file_carries_the_digest_of_the_secret_it_seals() {
        let sealer = sealer();
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "shop"}, "type": "Opaque", "data": {"password": "aHVudGVyMg=="}});
        let sealed = sealer.seal(&secret).unwrap();
        assert_eq!(digest_in_file(&sealed.file).as_deref(), Some(sealed.digest.as_str()));
        assert_eq!(sealed.digest, sealer.digest(&secret));
        let text = String::from_utf8(sealed.file).unwrap();
        assert!(!text.contains("aHVudGVyMg=="), "{text}");
        // Sealing again gives other bytes (fresh data key and IVs), the same digest.
        assert_eq!(sealer.seal(&secret).unwrap().digest, sealed.digest);
    }

    #[test]
    fn digests_depend_on_the_recipient_set_not_its_order() {
        let key = DigestKey::new(vec![7; 32]).unwrap();
        let a = age::x25519::Identity::generate().to_public().to_string();
        let b = age::x25519::Identity::generate().to_public().to_string();
        let sealer = |names: &[&String]| {
            Sealer::new(Recipients::parse(names.iter().map(|n| n.to_string())).unwrap(), key.clone())
        };
        let secret =
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}});
        let both = sealer(&[&a, &b]).digest(&secret);
        assert_eq!(sealer(&[&b, &a]).digest(&secret), both);
        assert_ne!(sealer(&[&a]).digest(&secret), both, "a new recipient set seals again");
        assert_ne!(sealer(&[&a]).digest(&secret), sealer(&[&b]).digest(&secret));
    }

    #[test]
    fn short_keys_are_refused_and_keys_never_print() {
        assert!(DigestKey::new(vec![1; DIGEST_KEY_BYTES - 1]).is_none());
        let key = DigestKey::generate();
        assert_eq!(key.bytes().len(), DIGEST_KEY_BYTES);
        assert_ne!(key, DigestKey::generate());
        assert_eq!(format!("{key:?}"), "DigestKey([redacted])");
    }
}
