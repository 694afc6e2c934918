//! Object → deterministic YAML bytes and file path (pure, no I/O).
//!
//! In: one live object as JSON (from a watch event or a resync list) and the
//! [`ResourceRef`] it was watched as. Out: [`Sanitized`], the relative path
//! of its file inside the target's folder, the exact bytes to store there
//! and their xxh3 hash, which is what the watch index keeps per object.
//!
//! The steps, each in its own file:
//! - `denylist`: drop what the server and controllers wrote ([`sanitize_value`]);
//! - `yaml`: emit sorted, YAML-1.1-safe YAML ([`to_yaml`]);
//! - [`clean`] then [`Clean::render`]: the two halves of [`sanitize`], for
//!   dispatch, which renders the clean object again without a target's
//!   ignored fields (`crate::quiet`);
//! - `layout`: name the file, and read names back ([`object_path`],
//!   [`decode_object_path`], base folder helpers).
//!
//! Secrets are refused here ([`SanitizeError::PlaintextSecret`]): the only
//! way a Secret reaches git is the encryption path (`crate::sops`, not wired
//! in yet), which can build on [`sanitize_value`], so a wiring mistake
//! cannot write plaintext.

mod denylist;
mod layout;
mod yaml;

pub use denylist::sanitize_value;
pub use layout::{
    CLUSTER_SEGMENT, CORE_GROUP_SEGMENT, DecodedPath, EXTENSION, ObjectKey, ResourceRef, decode_object_path,
    decode_segment, encode_segment, join_base, normalize_base_folder, object_path, strip_base,
};
pub(crate) use yaml::ordered_keys as yaml_key_order;
pub use yaml::{to_yaml, try_to_yaml};

use serde_json::{Map, Value};

/// One object, ready to be written: stage output of sanitize.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sanitized {
    /// Path relative to the target's base folder, from [`object_path`].
    pub path: String,
    /// The file's bytes.
    pub yaml: Vec<u8>,
    /// xxh3-64 of `yaml`; equal hashes mean "no change, no commit".
    pub hash: u64,
}

/// Why an object cannot be turned into a file.
#[derive(Debug, thiserror::Error)]
pub enum SanitizeError {
    #[error("object is a JSON {found}, not a JSON object")]
    NotAnObject { found: &'static str },
    #[error("{kind} object has no metadata.name (or it is empty or not a string)")]
    MissingName { kind: String },
    #[error("{kind} {name:?} is namespaced but has no metadata.namespace")]
    MissingNamespace { kind: String, name: String },
    #[error("{kind} {name:?} is cluster-scoped but has metadata.namespace {namespace:?}")]
    UnexpectedNamespace { kind: String, name: String, namespace: String },
    #[error("object {name:?} says {field}: {found:?}, but was watched as {expected:?}")]
    TypeMismatch { name: String, field: &'static str, found: String, expected: String },
    #[error("refusing to write Secret {namespace}/{name} as plain YAML: Secrets are written only encrypted")]
    PlaintextSecret { namespace: String, name: String },
    #[error("cannot serialize {kind} {name:?} as YAML: {source}")]
    Yaml {
        kind: String,
        name: String,
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

impl SanitizeError {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NotAnObject { .. } => "not_an_object",
            Self::MissingName { .. } => "missing_name",
            Self::MissingNamespace { .. } | Self::UnexpectedNamespace { .. } => "scope",
            Self::TypeMismatch { .. } => "type_mismatch",
            Self::PlaintextSecret { .. } => "plaintext_secret",
            Self::Yaml { .. } => "yaml",
        }
    }
}

/// Whether the resource is core/v1 Secret, which must never be written in plain text.
pub fn is_secret(resource: &ResourceRef) -> bool {
    resource.group.is_empty() && (resource.kind == "Secret" || resource.plural == "secrets")
}

/// The `apiVersion` an object of this resource carries: `v1`, `apps/v1`.
pub fn api_version(resource: &ResourceRef) -> String {
    if resource.group.is_empty() {
        resource.version.clone()
    } else {
        format!("{}/{}", resource.group, resource.version)
    }
}

/// Deny-list sanitizing plus deterministic YAML; see the module docs.
pub fn sanitize(object: &Value, resource: &ResourceRef) -> Result<Sanitized, SanitizeError> {
    let clean = clean(object, resource)?;
    let (yaml, hash) = clean.render(&clean.value)?;
    Ok(Sanitized { path: clean.path, yaml, hash })
}

/// An object after the deny-list, before YAML: where ignore rules apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Clean {
    /// Path relative to the target's base folder, from [`object_path`].
    pub path: String,
    /// The object without what the deny-list drops.
    pub value: Value,
    name: String,
}

impl Clean {
    /// The file's bytes for `value` (this object, or a copy with ignored
    /// fields removed) and their xxh3 hash.
    pub fn render(&self, value: &Value) -> Result<(Vec<u8>, u64), SanitizeError> {
        let yaml = try_to_yaml(value).map_err(|source| SanitizeError::Yaml {
            kind: value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned(),
            name: self.name.clone(),
            source,
        })?;
        let hash = xxhash_rust::xxh3::xxh3_64(&yaml);
        Ok((yaml, hash))
    }
}

/// The first stage of [`sanitize`]: checks, then the deny-list.
pub fn clean(object: &Value, resource: &ResourceRef) -> Result<Clean, SanitizeError> {
    let map = object.as_object().ok_or(SanitizeError::NotAnObject { found: json_type(object) })?;
    let key = object_key(map, resource)?;
    let looks_like_secret = map.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && map.get("kind").and_then(Value::as_str) == Some("Secret");
    if is_secret(resource) || looks_like_secret {
        return Err(SanitizeError::PlaintextSecret {
            namespace: key.namespace.unwrap_or_default(),
            name: key.name,
        });
    }
    let mut copy = copy_without_bulk(map);
    // Before the deny-list: its kind-specific rules read apiVersion/kind.
    fill_type(&mut copy, resource, &key.name)?;
    let value = sanitize_value(Value::Object(copy));
    Ok(Clean { path: object_path(resource, &key), value, name: key.name })
}

/// Reads and checks name and namespace against the resource's scope.
fn object_key(map: &Map<String, Value>, resource: &ResourceRef) -> Result<ObjectKey, SanitizeError> {
    let meta = map.get("metadata");
    let field = |name: &str| meta.and_then(|m| m.get(name)).and_then(Value::as_str);
    let name = match field("name") {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => {
            return Err(SanitizeError::MissingName { kind: resource.kind.clone() });
        }
    };
    let namespace = field("namespace").filter(|ns| !ns.is_empty());
    match (resource.namespaced, namespace) {
        (true, None) => Err(SanitizeError::MissingNamespace { kind: resource.kind.clone(), name }),
        (false, Some(ns)) => Err(SanitizeError::UnexpectedNamespace {
            kind: resource.kind.clone(),
            name,
            namespace: ns.to_owned(),
        }),
        (_, namespace) => Ok(ObjectKey { namespace: namespace.map(str::to_owned), name }),
    }
}

/// A copy that skips `status` and `metadata.managedFields` up front: they
/// are dropped anyway and often are the larger part of a live object.
fn copy_without_bulk(map: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in map {
        match (key.as_str(), value) {
            ("status", _) => {}
            ("metadata", Value::Object(meta)) => {
                let meta: Map<String, Value> = meta
                    .iter()
                    .filter(|(k, _)| k.as_str() != "managedFields")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                out.insert(key.clone(), Value::Object(meta));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    out
}

/// List responses omit `apiVersion`/`kind` on items while watch events carry
/// them; fill them in from the resource so both give the same bytes. A
/// different value means the object was routed under the wrong resource.
fn fill_type(map: &mut Map<String, Value>, resource: &ResourceRef, name: &str) -> Result<(), SanitizeError> {
    for (field, expected) in [("apiVersion", api_version(resource)), ("kind", resource.kind.clone())] {
        match map.get(field) {
            None | Some(Value::Null) => {
                map.insert(field.to_owned(), Value::String(expected));
            }
            Some(Value::String(found)) if *found == expected => {}
            Some(found) => {
                return Err(SanitizeError::TypeMismatch {
                    name: name.to_owned(),
                    field,
                    found: found.as_str().map_or_else(|| found.to_string(), str::to_owned),
                    expected,
                });
            }
        }
    }
    Ok(())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
