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

use super::rules::{CreationRules, SOPS_CONFIG_PATH};
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

/// How a target's Secrets are sealed: for its `spec.encryption.age`
/// recipients, or for those the branch's `.sops.yaml` gives each path; with
/// the cluster's digest key.
#[derive(Debug, Clone)]
pub struct Sealer {
    key: DigestKey,
    /// `spec.encryption.age` (None: it names none).
    recipients: Option<Recipients>,
    /// The branch's creation rules, when the target follows them and the
    /// branch has them: they decide, as they do for sops.
    rules: Option<Arc<CreationRules>>,
    /// `spec.encryption.followSopsConfig`.
    follows: bool,
}

impl PartialEq for Sealer {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.describe() == other.describe()
    }
}

impl Eq for Sealer {}

impl Sealer {
    pub fn new(recipients: Recipients, key: DigestKey) -> Self {
        Self { key, recipients: Some(recipients), rules: None, follows: false }
    }

    /// A sealer that follows the branch's `.sops.yaml` (`rules`, None while
    /// the branch has none), with `recipients` for when it has none.
    pub fn following(
        recipients: Option<Recipients>,
        rules: Option<Arc<CreationRules>>,
        key: DigestKey,
    ) -> Self {
        Self { key, recipients, rules, follows: true }
    }

    /// Whether it follows the branch's `.sops.yaml`.
    pub fn follows(&self) -> bool {
        self.follows
    }

    /// This sealer with the branch's current creation rules (None: the
    /// branch has no `.sops.yaml`).
    pub fn with_rules(&self, rules: Option<Arc<CreationRules>>) -> Self {
        Self { rules, ..self.clone() }
    }

    /// The recipients of the file at `path` (relative to the repository root).
    pub fn recipients_for(&self, path: &str) -> Result<&Recipients, SopsError> {
        match (&self.rules, &self.recipients) {
            (Some(rules), _) => rules.recipients_for(path).map_err(SopsError::SopsConfig),
            (None, Some(recipients)) => Ok(recipients),
            (None, None) => Err(SopsError::SopsConfig(format!(
                "the branch has no {SOPS_CONFIG_PATH} with creation_rules, and spec.encryption.age names no recipients; add one or the other"
            ))),
        }
    }

    /// What decides the recipients, as text: changes when they change.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self.recipients.iter().flat_map(Recipients::to_strings).collect();
        if let Some(rules) = &self.rules {
            out.push(format!("{SOPS_CONFIG_PATH}:"));
            out.extend(rules.describe());
        }
        out
    }

    /// The digest `seal` writes into the file at `path`. Digests are keyed
    /// per recipient set (an HMAC of the sorted recipients under the
    /// cluster's key): a file sealed for other recipients never looks
    /// current, so new recipients get every Secret sealed again for them.
    pub fn digest(&self, path: &str, secret: &Value) -> Result<String, SopsError> {
        let recipients = self.recipients_for(path)?;
        Ok(digest(&keyed_for(&self.key, recipients), secret))
    }

    /// Seals `secret` as the file at `path`, for its recipients, now.
    pub fn seal(&self, path: &str, secret: &Value) -> Result<Sealed, SopsError> {
        let recipients = self.recipients_for(path)?;
        let digest = digest(&keyed_for(&self.key, recipients), secret);
        let file =
            seal(&with_digest(secret, &digest), recipients, Timestamp::now(), &mut OsRng.unwrap_err())?;
        Ok(Sealed { file, digest })
    }
}

/// The digest key of one recipient set.
fn keyed_for(key: &DigestKey, recipients: &Recipients) -> Zeroizing<Vec<u8>> {
    let mut names = recipients.to_strings();
    names.sort();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("HMAC takes any key");
    mac.update(RECIPIENTS_DOMAIN);
    for name in &names {
        mac.update(name.as_bytes());
        mac.update(b"\n");
    }
    Zeroizing::new(mac.finalize().into_bytes().to_vec())
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

    const PATH: &str = "f/shop/core/secrets/db.sops.yaml";

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
        let sealed = sealer.seal(PATH, &secret).unwrap();
        assert_eq!(digest_in_file(&sealed.file).as_deref(), Some(sealed.digest.as_str()));
        assert_eq!(sealed.digest, sealer.digest(PATH, &secret).unwrap());
        let text = String::from_utf8(sealed.file).unwrap();
        assert!(!text.contains("aHVudGVyMg=="), "{text}");
        // Sealing again gives other bytes (fresh data key and IVs), the same digest.
        assert_eq!(sealer.seal(PATH, &secret).unwrap().digest, sealed.digest);
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
        let both = sealer(&[&a, &b]).digest(PATH, &secret).unwrap();
        assert_eq!(sealer(&[&b, &a]).digest(PATH, &secret).unwrap(), both);
        assert_ne!(sealer(&[&a]).digest(PATH, &secret).unwrap(), both, "a new recipient set seals again");
        assert_ne!(
            sealer(&[&a]).digest(PATH, &secret).unwrap(),
            sealer(&[&b]).digest(PATH, &secret).unwrap()
        );
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
