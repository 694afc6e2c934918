//! Attributing a change to field managers (pure), for `ignoreManagers`.
//!
//! In: the previous and the new sanitized object, and the new object's
//! `metadata.managedFields`. Out: whether every difference lies in fields
//! that only ignored managers own, so the change alone makes no commit.
//!
//! `fieldsV1` is a trie keyed as structured-merge-diff writes it: `f:<name>`
//! a map field (or map key), `k:<json>` a list element by its key fields,
//! `v:<json>` a set element by value, `i:<n>` an element by index, and `.`
//! the node itself. An empty node owns its whole value (atomic lists, maps
//! and scalars). The walk is conservative: a difference it cannot attribute
//! (a removed field, which the new managedFields no longer name; a list
//! element no key matches; a field no one or also a non-ignored manager
//! owns) counts as significant.

use serde_json::{Map, Value};

use super::pointer::{Pointer, Step};

/// The `fieldsV1` tries of the new object, split by manager.
pub struct Owners<'a> {
    ignored: Vec<&'a Map<String, Value>>,
    others: Vec<&'a Map<String, Value>>,
    /// A non-ignored entry whose fields could not be read: it may own
    /// anything, so nothing is attributed to ignored managers alone.
    unreadable: bool,
}

impl<'a> Owners<'a> {
    /// Reads `metadata.managedFields` of `object`; `managers` are ignored.
    pub fn new(object: &'a Value, managers: &[String]) -> Self {
        let mut owners = Self { ignored: Vec::new(), others: Vec::new(), unreadable: false };
        let entries = object.pointer("/metadata/managedFields").and_then(Value::as_array);
        for entry in entries.into_iter().flatten() {
            let ignored = entry
                .get("manager")
                .and_then(Value::as_str)
                .is_some_and(|name| managers.iter().any(|m| m == name));
            let fields = entry
                .get("fieldsV1")
                .and_then(Value::as_object)
                .filter(|_| entry.get("fieldsType").and_then(Value::as_str).is_none_or(|t| t == "FieldsV1"));
            match (ignored, fields) {
                (true, Some(fields)) => owners.ignored.push(fields),
                (true, None) => {}
                (false, Some(fields)) => owners.others.push(fields),
                (false, None) => owners.unreadable = true,
            }
        }
        owners
    }

    /// Whether some ignored manager owns the field at `path` of `object`
    /// and no other manager does.
    pub fn only_ignored(&self, object: &Value, path: &[Step]) -> bool {
        !self.unreadable
            && self.ignored.iter().any(|fields| owns(fields, object, path))
            && !self.others.iter().any(|fields| owns(fields, object, path))
    }
}

/// The manager of the newest `metadata.managedFields` entry (by `time`),
/// the likeliest author of the version `object` is: the commit's author.
/// Entries of the status subresource count only when there are no others
/// (status is never written to git); of entries of the same second, the
/// last listed wins. None when no entry names a manager.
pub fn newest_manager(object: &Value) -> Option<&str> {
    let entries = object.pointer("/metadata/managedFields")?.as_array()?;
    let named = || {
        entries
            .iter()
            .filter(|e| e.get("manager").and_then(Value::as_str).is_some_and(|m| !m.trim().is_empty()))
    };
    // RFC 3339 in UTC, as the API server writes it: the text orders as the time.
    let status = |entry: &&Value| entry.get("subresource").and_then(Value::as_str) == Some("status");
    named()
        .filter(|e| !status(e))
        .max_by(|a, b| time_of(a).cmp(time_of(b)))
        .or_else(|| named().max_by(|a, b| time_of(a).cmp(time_of(b))))?
        .get("manager")?
        .as_str()
}

/// An entry's `time`; "" (the oldest) when it has none.
fn time_of(entry: &Value) -> &str {
    entry.get("time").and_then(Value::as_str).unwrap_or_default()
}

/// Whether every difference from `before` to `after` lies under one of
/// `skip` or is a field only ignored managers own (per `owners`, read from
/// `after`'s managedFields).
pub fn only_ignored_changes(before: &Value, after: &Value, owners: &Owners, skip: &[Pointer]) -> bool {
    let mut path = Vec::new();
    diff(before, after, &mut path, &mut |path, change| {
        if skip.iter().any(|pointer| pointer.covers(path)) {
            return true;
        }
        match change {
            Change::Removed => false,
            Change::Set => owners.only_ignored(after, path),
        }
    })
}

/// A difference at a path: a value set (changed or added), or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Set,
    Removed,
}

/// Walks the differences down to leaves; stops (returning false) as soon
/// as `visit` does. An added map or list is visited leaf by leaf, since
/// ownership is recorded per leaf.
fn diff<'v>(
    before: &'v Value,
    after: &'v Value,
    path: &mut Vec<Step<'v>>,
    visit: &mut dyn FnMut(&[Step], Change) -> bool,
) -> bool {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, value) in new {
                path.push(Step::Key(key));
                let ok = match old.get(key) {
                    Some(previous) => diff(previous, value, path, visit),
                    None => added(value, path, visit),
                };
                path.pop();
                if !ok {
                    return false;
                }
            }
            old.keys().filter(|key| !new.contains_key(*key)).all(|key| {
                path.push(Step::Key(key));
                let ok = visit(path, Change::Removed);
                path.pop();
                ok
            })
        }
        (Value::Array(old), Value::Array(new)) => {
            for (index, value) in new.iter().enumerate() {
                path.push(Step::Index(index));
                let ok = match old.get(index) {
                    Some(previous) => diff(previous, value, path, visit),
                    None => added(value, path, visit),
                };
                path.pop();
                if !ok {
                    return false;
                }
            }
            (new.len()..old.len()).all(|index| {
                path.push(Step::Index(index));
                let ok = visit(path, Change::Removed);
                path.pop();
                ok
            })
        }
        _ if before == after => true,
        _ => visit(path, Change::Set),
    }
}

fn added<'v>(
    value: &'v Value,
    path: &mut Vec<Step<'v>>,
    visit: &mut dyn FnMut(&[Step], Change) -> bool,
) -> bool {
    let children: Box<dyn Iterator<Item = (Step<'v>, &'v Value)>> = match value {
        Value::Object(map) if !map.is_empty() => Box::new(map.iter().map(|(k, v)| (Step::Key(k), v))),
        Value::Array(items) if !items.is_empty() => {
            Box::new(items.iter().enumerate().map(|(i, v)| (Step::Index(i), v)))
        }
        _ => return visit(path, Change::Set),
    };
    for (step, child) in children {
        path.push(step);
        let ok = added(child, path, visit);
        path.pop();
        if !ok {
            return false;
        }
    }
    true
}

/// Whether the `fieldsV1` trie `fields` owns the value at `path` of
/// `object`: the trie reaches the path's end (an empty node, or one
/// holding `.`), or an empty node above it (an atomic value).
fn owns(fields: &Map<String, Value>, object: &Value, path: &[Step]) -> bool {
    let mut node = fields;
    let mut value = object;
    for step in path {
        if node.is_empty() {
            return true;
        }
        let child = match *step {
            Step::Key(key) => {
                value = match value.get(key) {
                    Some(v) => v,
                    None => return false,
                };
                node.get(&format!("f:{key}"))
            }
            Step::Index(index) => {
                let Some(element) = value.get(index) else { return false };
                let found = node.iter().find(|(key, _)| element_matches(key, element, index));
                value = element;
                found.map(|(_, child)| child)
            }
        };
        node = match child.and_then(Value::as_object) {
            Some(child) => child,
            None => return false,
        };
    }
    node.is_empty() || node.contains_key(".")
}

/// Whether a list key of a `fieldsV1` trie names `element` (at `index`).
fn element_matches(key: &str, element: &Value, index: usize) -> bool {
    if let Some(json) = key.strip_prefix("k:") {
        let Ok(Value::Object(wanted)) = serde_json::from_str::<Value>(json) else { return false };
        !wanted.is_empty() && wanted.iter().all(|(field, expected)| element.get(field) == Some(expected))
    } else if let Some(json) = key.strip_prefix("v:") {
        serde_json::from_str::<Value>(json).is_ok_and(|wanted| &wanted == element)
    } else if let Some(number) = key.strip_prefix("i:") {
        number.parse() == Ok(index)
    } else {
        false
    }
}

#[cfg(test)]
#[path = "managed_tests.rs"]
mod tests;
