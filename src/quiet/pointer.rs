//! JSON pointers (RFC 6901) as `ignoreFields` uses them (pure): parsing,
//! removing the field a pointer names, and telling whether a changed path
//! lies under one.

use serde_json::Value;

/// The fields no ignore may name: without them a file is no object, and
/// its path (which comes from name and namespace) would not match it.
pub const RESERVED: [&str; 6] =
    ["/apiVersion", "/kind", "/metadata", "/metadata/name", "/metadata/namespace", ""];

/// A parsed pointer: its reference tokens, unescaped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pointer {
    tokens: Vec<String>,
}

/// Why a string is not a pointer `ignoreFields` accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PointerError {
    #[error("{0:?} is not a JSON pointer: it must start with '/', like /spec/replicas")]
    NoLeadingSlash(String),
    #[error("{0:?} has an empty segment ('//' or a trailing '/')")]
    EmptySegment(String),
    #[error("{0:?} has a '~' that is not ~0 (for '~') or ~1 (for '/')")]
    BadEscape(String),
    #[error("{0:?} names a field every file needs (apiVersion, kind, metadata, its name or namespace)")]
    Reserved(String),
}

/// One step of a path inside an object: a map key or a list index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

impl Pointer {
    /// Parses `/a/b~1c` into `["a", "b/c"]`. Stricter than RFC 6901: every
    /// segment must be non-empty (no Kubernetes field or map key is empty,
    /// so an empty one is a typo), and the fields on [`RESERVED`] are refused.
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        if RESERVED.contains(&text) {
            return Err(PointerError::Reserved(text.to_owned()));
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash(text.to_owned()));
        };
        let tokens = rest
            .split('/')
            .map(|raw| {
                if raw.is_empty() {
                    return Err(PointerError::EmptySegment(text.to_owned()));
                }
                unescape(raw).ok_or_else(|| PointerError::BadEscape(text.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { tokens })
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Removes the value the pointer names, if there is one, and then each
    /// map on the way that this removal left empty, so that ignoring the
    /// only annotation leaves no `annotations: {}` behind. A token steps
    /// into a list only as a decimal index. Returns whether something was
    /// removed.
    pub fn remove_from(&self, value: &mut Value) -> bool {
        remove(value, &self.tokens)
    }

    /// Whether `path` is the pointed-to field or lies below it.
    pub fn covers(&self, path: &[Step]) -> bool {
        path.len() >= self.tokens.len()
            && self.tokens.iter().zip(path).all(|(token, step)| match step {
                Step::Key(key) => token == key,
                Step::Index(index) => parse_index(token) == Some(*index),
            })
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for token in &self.tokens {
            write!(f, "/{}", token.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

/// `~1` is '/', `~0` is '~'; any other '~' is an error. `~01` is "~1":
/// `~0` is decoded first, as RFC 6901 demands, by scanning left to right.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// A list index as RFC 6901 writes one: digits, no leading zero.
fn parse_index(token: &str) -> Option<usize> {
    let plain = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !plain || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

fn remove(value: &mut Value, tokens: &[String]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return false;
    };
    match value {
        Value::Object(map) if rest.is_empty() => map.remove(first).is_some(),
        Value::Object(map) => {
            let Some(child) = map.get_mut(first) else { return false };
            let was_empty = is_empty_map(child);
            let removed = remove(child, rest);
            if removed && !was_empty && is_empty_map(child) {
                map.remove(first);
            }
            removed
        }
        Value::Array(items) => {
            let Some(index) = parse_index(first).filter(|i| *i < items.len()) else { return false };
            if rest.is_empty() {
                items.remove(index);
                true
            } else {
                // A list element that became empty stays: dropping it would
                // shift its neighbours and change what they mean.
                remove(&mut items[index], rest)
            }
        }
        _ => false,
    }
}

fn is_empty_map(value: &Value) -> bool {
    value.as_object().is_some_and(serde_json::Map::is_empty)
}

#[cfg(test)]
#[path = "pointer_tests.rs"]
mod tests;
