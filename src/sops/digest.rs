//! A keyed digest of a Secret's content, kept readable in its sealed file.
//!
//! Why: a sealed file changes on every seal (fresh data key, fresh IVs), and
//! the operator holds no age private key, so it cannot decrypt the file to
//! compare. Instead it writes `digest(key, secret)` into the file as the
//! annotation [`DIGEST_ANNOTATION`] and, on the next event, compares
//! [`digest_in_file`] with the digest of the live Secret: equal means the
//! file already holds this Secret, so there is nothing to write.
//!
//! What it covers: the whole cleaned Secret (`apiVersion`, `kind`, all of
//! `metadata` that sanitize keeps, `type`, `immutable`, `data`,
//! `stringData`, anything else present), except the digest annotation itself,
//! which the caller adds before sealing and which Flux then applies to the
//! live Secret. An `annotations` map left empty without it counts as absent,
//! so a Secret with no annotations and the same Secret applied back from git
//! digest alike. The canonical bytes are `DOMAIN` followed by the Secret as
//! compact JSON with every map's keys sorted byte-wise (serde_json escaping
//! for strings, its number text), written straight into the HMAC. So equal
//! digests mean the decrypted file equals the live Secret, field by field
//! (up to the 2^-128 odds of an HMAC-SHA256 collision), and because name and
//! namespace are covered, two Secrets holding the same values still get
//! different digests.
//!
//! Why it leaks nothing beyond "unchanged": the digest is HMAC-SHA256 under a
//! key that stays in the cluster (the caller's, at least 32 random bytes)
//! and never reaches git. Without it, a reader of the repository can neither
//! compute a digest nor test a guessed password against one (a plain hash
//! of a low-entropy value could be brute-forced); HMAC outputs under an
//! unknown key are indistinguishable from random, so all that shows is
//! whether two digests are equal, i.e. whether one Secret changed between
//! two commits, which the commits show anyway. The digest is not
//! authenticated by anything the operator can check (the sops MAC covers
//! it, but verifying that needs the data key): someone who can push to the
//! repository can make the operator believe a file is current, but such a
//! person can also write any sealed file, since sealing needs only the
//! public recipients.

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Sha256;

/// The annotation that carries [`digest`] in a sealed file.
pub const DIGEST_ANNOTATION: &str = "configbutler.ai/sops-digest";

/// What every digest starts with; the rest is 64 lower-case hex digits.
pub const DIGEST_PREFIX: &str = "hmac-sha256:";

/// Leads the canonical bytes, so that a later change to them gives other
/// digests instead of colliding with these.
const DOMAIN: &[u8] = b"gitops-reverser sops-digest v1\n";

/// The keyed digest of `secret`: `hmac-sha256:<64 hex>`; see the module docs
/// for what it covers.
pub fn digest(key: &[u8], secret: &Value) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(DOMAIN);
    let mut out = MacWriter(&mut mac);
    match secret {
        Value::Object(map) => write_object(&mut out, map, Level::Top),
        other => write_value(&mut out, other),
    }
    let tag = mac.finalize().into_bytes();
    let mut text = String::with_capacity(DIGEST_PREFIX.len() + tag.len() * 2);
    text.push_str(DIGEST_PREFIX);
    for byte in tag.iter() {
        text.push(char::from(HEX_LOWER[usize::from(byte >> 4)]));
        text.push(char::from(HEX_LOWER[usize::from(byte & 0xf)]));
    }
    text
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// The digest a sealed file carries, if it has a well-formed one. Reads the
/// YAML (not a line scan, so quoting and key order do not matter) but keeps
/// only `metadata.annotations`; anything unreadable gives `None`, which the
/// caller treats as "changed".
pub fn digest_in_file(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct File {
        metadata: Option<Metadata>,
    }
    #[derive(Deserialize)]
    struct Metadata {
        annotations: Option<Map<String, Value>>,
    }
    let file: File = serde_saphyr::from_slice(bytes).ok()?;
    let digest = file.metadata?.annotations?.get(DIGEST_ANNOTATION)?.as_str()?.to_owned();
    let hex = digest.strip_prefix(DIGEST_PREFIX)?;
    let well_formed = hex.len() == 64 && hex.bytes().all(|b| HEX_LOWER.contains(&b));
    well_formed.then_some(digest)
}

/// Where in the Secret a map is, for the one field the digest skips.
#[derive(Clone, Copy, PartialEq)]
enum Level {
    Top,
    Metadata,
    Annotations,
    Other,
}

impl Level {
    fn child(self, key: &str) -> Level {
        match (self, key) {
            (Level::Top, "metadata") => Level::Metadata,
            (Level::Metadata, "annotations") => Level::Annotations,
            _ => Level::Other,
        }
    }
}

/// Whether an entry is left out of the canonical bytes: the digest
/// annotation, and an annotations map that holds nothing else.
fn skipped(level: Level, key: &str, value: &Value) -> bool {
    match level.child(key) {
        Level::Annotations => value.as_object().is_some_and(|map| map.keys().all(|k| k == DIGEST_ANNOTATION)),
        _ => level == Level::Annotations && key == DIGEST_ANNOTATION,
    }
}

fn write_object(out: &mut MacWriter, map: &Map<String, Value>, level: Level) {
    // Sorted here: serde_json's map keeps insertion order when any crate in
    // the build enables `preserve_order`.
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_unstable();
    out.raw(b"{");
    let mut first = true;
    for key in keys {
        let value = &map[key];
        if skipped(level, key, value) {
            continue;
        }
        if !first {
            out.raw(b",");
        }
        first = false;
        serde_json::to_writer(&mut *out, key).expect("writing into an HMAC cannot fail");
        out.raw(b":");
        match value {
            Value::Object(inner) => write_object(out, inner, level.child(key)),
            _ => write_value(out, value),
        }
    }
    out.raw(b"}");
}

fn write_value(out: &mut MacWriter, value: &Value) {
    match value {
        Value::Object(map) => write_object(out, map, Level::Other),
        Value::Array(items) => {
            out.raw(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.raw(b",");
                }
                write_value(out, item);
            }
            out.raw(b"]");
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing into an HMAC cannot fail"),
    }
}

/// Feeds serde_json's output straight into the HMAC, so the canonical bytes
/// (the plaintext) are never collected in a buffer.
struct MacWriter<'a>(&'a mut Hmac<Sha256>);

impl MacWriter<'_> {
    fn raw(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl std::io::Write for MacWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
