//! Object identity ↔ file path inside a target's folder (pure).
//!
//! In: what kind of object ([`ResourceRef`]) and which one ([`ObjectKey`]),
//! or a path read back from a git tree. Out: the relative path
//! `{namespace|_cluster}/{group|core}/{plural}/{name}.yaml`, its exact
//! inverse, and the helpers that put a GitTarget's `baseFolder` in front.
//!
//! Segment encoding is reversible and canonical (one object ↔ one path):
//! `[a-z0-9-]` and `.` (except as the first byte, so no `.`, `..` or hidden
//! files) stay as they are; every other byte becomes `%XX` with uppercase
//! hex. That covers `%` itself, `:` (`system:controller:foo`), `_`, `/`,
//! uppercase letters and every byte of a non-ASCII character, so an encoded
//! segment is plain ASCII and two names never differ only by letter case
//! (safe on case-insensitive and normalising filesystems). The empty string,
//! which valid objects never have, encodes as a lone `%`.
//!
//! `_cluster` cannot collide with a namespace: `_` is always encoded. `core`
//! stands for the core group `""`; a group literally called `core` (none
//! exists, real non-core groups contain a dot) would be `%63ore`.
//!
//! The fixed depth also keeps targets apart: from a base folder `a`, the
//! files of another target at `a/x` are five segments deep and never decode,
//! so a sweep cannot take them for its own.

/// What kind of object this is: enough to build its path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceRef {
    /// API group, `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// Lowercase plural resource name, as in the URL (`deployments`).
    pub plural: String,
    pub namespaced: bool,
}

/// Which object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// `None` (or `Some("")`) for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
}

/// A layout path taken apart again; see [`decode_object_path`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DecodedPath {
    pub namespace: Option<String>,
    /// `""` for the core group.
    pub group: String,
    pub plural: String,
    pub name: String,
}

/// Folder for cluster-scoped objects, in place of a namespace.
pub const CLUSTER_SEGMENT: &str = "_cluster";
/// Folder for the core group `""`.
pub const CORE_GROUP_SEGMENT: &str = "core";
/// Extension of every object file.
pub const EXTENSION: &str = ".yaml";

/// The extension of a Secret's file: it is only ever written SOPS-encrypted
/// (`crate::sops`), and Flux and sops users know such files by it.
pub const SEALED_EXTENSION: &str = ".sops.yaml";

/// The file extension of objects of `group`/`plural`.
fn extension_of(group: &str, plural: &str) -> &'static str {
    if group.is_empty() && plural == "secrets" { SEALED_EXTENSION } else { EXTENSION }
}

/// The relative file path of an object inside a target's folder.
pub fn object_path(resource: &ResourceRef, key: &ObjectKey) -> String {
    let mut out = String::with_capacity(
        key.namespace.as_ref().map_or(8, String::len)
            + resource.group.len()
            + resource.plural.len()
            + key.name.len()
            + 16,
    );
    out.push_str(&namespace_segment(key.namespace.as_deref()));
    out.push('/');
    out.push_str(&group_segment(&resource.group));
    out.push('/');
    encode_into(&resource.plural, &mut out);
    out.push('/');
    out.push_str(&file_name(&key.name, extension_of(&resource.group, &resource.plural)));
    out
}

/// Most filesystems refuse file names over 255 bytes, and encoding can
/// triple a name's length.
const MAX_FILE_NAME: usize = 255;
/// How much of an over-long encoded name is kept before the hash.
const SHORTENED_PREFIX: usize = 200;
/// Marks a shortened name. Names never contain a literal `~` (it is
/// percent-encoded), so the mark is unambiguous.
const SHORTENED_MARK: char = '~';

/// `{encoded name}.yaml`, or for names too long for a file system
/// `{first 200 bytes}~{xxh3 of the full name}.yaml`: still one file per
/// object and stable, though the name itself is then only in the file.
fn file_name(name: &str, extension: &str) -> String {
    let encoded = encode_segment(name);
    if encoded.len() + extension.len() <= MAX_FILE_NAME {
        return format!("{encoded}{extension}");
    }
    let mut cut = SHORTENED_PREFIX;
    // Never split a `%XX` escape.
    if let Some(percent) = encoded[..cut].rfind('%')
        && percent + 3 > cut
    {
        cut = percent;
    }
    let hash = xxhash_rust::xxh3::xxh3_64(name.as_bytes());
    format!("{}{SHORTENED_MARK}{hash:016x}{extension}", &encoded[..cut])
}

/// Inverse of [`object_path`]. `None` for anything that is not exactly a
/// canonical layout path: other depths, other extensions, hand-written
/// files, or spellings [`object_path`] would never produce (`%3a`, `%61`).
pub fn decode_object_path(relative: &str) -> Option<DecodedPath> {
    let mut parts = relative.split('/');
    let (ns, group, plural, file) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let namespace = if ns == CLUSTER_SEGMENT {
        None
    } else {
        let decoded = decode_canonical(ns)?;
        if decoded.is_empty() {
            return None; // `object_path` writes `_cluster` for that
        }
        Some(decoded)
    };
    let group = if group == CORE_GROUP_SEGMENT {
        String::new()
    } else {
        let decoded = percent_decode(group)?;
        (group_segment(&decoded) == group).then_some(decoded)?
    };
    let plural = decode_canonical(plural)?;
    let stem = file.strip_suffix(extension_of(&group, &plural))?;
    let name = match stem.split_once(SHORTENED_MARK) {
        // A shortened name: the prefix, marked as cut; the file holds the rest.
        Some((prefix, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("{}…", decode_canonical(prefix)?)
        }
        Some(_) => return None,
        None => decode_canonical(stem)?,
    };
    Some(DecodedPath { namespace, group, plural, name })
}

fn namespace_segment(namespace: Option<&str>) -> String {
    match namespace {
        None | Some("") => CLUSTER_SEGMENT.to_owned(),
        Some(ns) => encode_segment(ns),
    }
}

fn group_segment(group: &str) -> String {
    match group {
        "" => CORE_GROUP_SEGMENT.to_owned(),
        // Keep a (hypothetical) group named "core" apart from the core group.
        CORE_GROUP_SEGMENT => "%63ore".to_owned(),
        g => encode_segment(g),
    }
}

/// Encodes one path segment; see the module docs for the rules.
pub fn encode_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 2);
    encode_into(raw, &mut out);
    out
}

fn encode_into(raw: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if raw.is_empty() {
        out.push('%');
        return;
    }
    for (i, b) in raw.bytes().enumerate() {
        if is_kept(b, i) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

fn is_kept(b: u8, position: usize) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-') || (b == b'.' && position > 0)
}

/// Decodes a segment, accepting only the spelling [`encode_segment`] produces.
pub fn decode_segment(encoded: &str) -> Option<String> {
    decode_canonical(encoded)
}

fn decode_canonical(encoded: &str) -> Option<String> {
    let decoded = percent_decode(encoded)?;
    // Re-encoding is the simplest complete canonicality check.
    (encode_segment(&decoded) == encoded).then_some(decoded)
}

/// Lenient `%XX` decoding; the callers check canonicality.
fn percent_decode(encoded: &str) -> Option<String> {
    if encoded == "%" {
        return Some(String::new());
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Normalises a GitTarget `baseFolder`: `""` for the repository root, else
/// `a/b` without leading, trailing or doubled `/` and without `.` segments.
/// `..` is resolved lexically and clamped at the root (like Go's
/// `path.Clean` on a rooted path), so the result never leaves the repository
/// even if the CRD's validation was bypassed.
pub fn normalize_base_folder(base: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in base.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// `base_folder` (normalised here) joined with a relative layout path.
pub fn join_base(base_folder: &str, relative: &str) -> String {
    let base = normalize_base_folder(base_folder);
    if base.is_empty() { relative.to_owned() } else { format!("{base}/{relative}") }
}

/// The part of `full` below `base_folder`; `Some` only if `full` is strictly
/// inside it (`a/bc/x` is not inside `a/b`, and `a/b` is not inside itself).
pub fn strip_base<'a>(base_folder: &str, full: &'a str) -> Option<&'a str> {
    let base = normalize_base_folder(base_folder);
    let rest = if base.is_empty() { full } else { full.strip_prefix(base.as_str())?.strip_prefix('/')? };
    (!rest.is_empty()).then_some(rest)
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
