//! `serde_json::Value` → deterministic YAML bytes (pure).
//!
//! In: any JSON value (normally an already sanitized object). Out: UTF-8 YAML
//! whose bytes depend only on the value, never on map insertion order.
//!
//! Key order: at the top level `apiVersion`, `kind`, `metadata` come first,
//! then every other key; inside every map keys are sorted byte-wise. We sort
//! here ourselves because `serde_json::Map` is an insertion-ordered
//! `IndexMap` whenever any crate in the graph enables `preserve_order`.
//!
//! Scalar style: serde-saphyr runs with `yaml_12: false` (its default), so
//! strings that a YAML 1.1 reader (sigs.k8s.io/yaml, PyYAML, …) would take
//! for a bool, null, number or timestamp (`on`, `yes`, `y`, `~`, `0123`,
//! `1e3`, `0x10`, …) are quoted, and so are YAML 1.2 numbers like `0o17`.
//! `prefer_block_scalars` is off as the design notes say, which also keeps
//! long single-line strings on one line instead of folding them (`>`), so a
//! one-word change stays a one-line diff.
//!
//! Deviation from the notes, on evidence: strings that contain a newline
//! (config files in ConfigMaps, scripts in `args`) are written as literal
//! block scalars (`|`, `|-`, `|+`, with an indentation indicator when the
//! first line starts with spaces) instead of one long `"…\n…"` line, because
//! a change to one line of the file is then a one-line diff. Two exceptions
//! stay double-quoted: content a block cannot carry (`\r`, BOM, NEL/LS/PS,
//! control characters; serde-saphyr decides), and a first non-empty line
//! that starts with a tab, which libyaml-based readers reject (see
//! `wants_literal_block`).
//!
//! Evidence, all in `yaml_tests.rs`: ~95 tricky strings (trailing spaces,
//! 0/1/2/3 trailing newlines, leading spaces and blank first lines, tabs,
//! `\r\n`, `---`, `...`, `#`, `: `, unicode, YAML 1.1 keywords and numbers,
//! long lines, 1 MiB) in six nesting positions (map value, list item, inside
//! `containers[].args`, nested lists, top level, as a key) round-trip through
//! serde-saphyr, and the YAML 1.1 quoting is pinned. Those documents, plus
//! every sanitizer fixture and the objects of the write-path tests written
//! by `sanitize` (about 600 in all), are read back by other readers and compared
//! with the value written: `a_yaml_1_1_reader_reads_back_what_we_wrote`
//! (PyYAML, its C and pure loaders) and `go_yaml_readers_read_back_what_we_wrote`
//! (`tests/env/tools/yamlcheck`: sigs.k8s.io/yaml v1.6.0, as kubectl and the
//! Flux controllers read, and go.yaml.in/yaml/v3, as kustomize reads).
//! Without the tab exception, PyYAML's C loader and both Go readers fail on
//! 24 of them ("found a tab character where an indentation space is
//! expected").

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// Keys that lead a Kubernetes object, in this order.
const LEADING_KEYS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Serializes `value` as deterministic YAML.
///
/// Fails only if serde-saphyr itself refuses the document, which does not
/// happen for values that came from JSON; [`super::sanitize`] still turns
/// such a failure into an error rather than a panic.
pub fn try_to_yaml(value: &Value) -> Result<Vec<u8>, serde_saphyr::SerializeError> {
    let options = serde_saphyr::ser_options! {
        prefer_block_scalars: false,
    };
    let mut out = String::with_capacity(estimate_len(value));
    serde_saphyr::to_fmt_writer_with_options(&mut out, &Node::top(value), options)?;
    Ok(out.into_bytes())
}

/// Serializes `value` as deterministic YAML; see [`try_to_yaml`].
///
/// # Panics
/// Only if serde-saphyr rejects a JSON value, which it does not.
pub fn to_yaml(value: &Value) -> Vec<u8> {
    try_to_yaml(value).expect("serde-saphyr serializes every JSON value")
}

/// A rough output size, so a 1 MiB ConfigMap does not regrow its buffer ~20 times.
fn estimate_len(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len() + 8,
        Value::Array(items) => items.iter().map(estimate_len).sum::<usize>() + 4,
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + 4 + estimate_len(v)).sum(),
        _ => 8,
    }
}

/// A borrowed value plus whether it is the document root (whose leading keys are special).
struct Node<'a> {
    value: &'a Value,
    top: bool,
}

impl<'a> Node<'a> {
    fn top(value: &'a Value) -> Self {
        Node { value, top: true }
    }
    fn inner(value: &'a Value) -> Self {
        Node { value, top: false }
    }
}

/// Order of the keys of one map: the leading keys first at the root, then byte-wise.
/// Shared with `crate::sops`, whose MAC covers values in the order written here.
pub(crate) fn ordered_keys(map: &serde_json::Map<String, Value>, top: bool) -> Vec<&str> {
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    if top {
        keys.sort_unstable_by_key(|k| (lead_rank(k), *k));
    } else {
        keys.sort_unstable();
    }
    keys
}

fn lead_rank(key: &str) -> usize {
    LEADING_KEYS.iter().position(|lead| *lead == key).unwrap_or(LEADING_KEYS.len())
}

/// Multi-line strings become literal blocks, except when the first non-empty
/// line starts with a tab: without an indentation indicator (serde-saphyr
/// writes one only for leading spaces) libyaml and its ports reject that
/// block with "found a tab character where an indentation space is expected",
/// although YAML 1.2 allows it. Such strings stay double-quoted. Checked by
/// the reader tests of `yaml_tests.rs`: PyYAML's C loader, sigs.k8s.io/yaml
/// (go-yaml v2: kubectl, Flux) and go-yaml v3 (kustomize).
fn wants_literal_block(s: &str) -> bool {
    s.contains('\n')
        && !s.split('\n').find(|line| !line.is_empty()).is_some_and(|line| line.starts_with('\t'))
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::String(s) if wants_literal_block(s) => serde_saphyr::LitStr(s).serialize(serializer),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Node::inner(item))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for key in ordered_keys(map, self.top) {
                    out.serialize_entry(key, &Node::inner(&map[key]))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

#[cfg(test)]
#[path = "yaml_tests.rs"]
mod tests;
