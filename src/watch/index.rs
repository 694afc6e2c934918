//! The index of watched objects (pure). Per object it keeps only a content
//! hash and the targets it was last written to, never the object itself, so
//! memory per watched object stays small and bounded. Objects that a target
//! with ignore rules selects have a second, [`Quiet`] entry: per target the
//! hash of what it last wrote, and, under `ignoreManagers`, the last clean
//! object, which attributing the next change needs.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

/// A small interned id for a GitTarget, so index entries stay compact.
pub type TargetId = u32;

/// What the index remembers about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// xxh3 of the sanitized YAML.
    pub hash: u64,
    /// Targets the object was last routed to (sorted).
    pub targets: Box<[TargetId]>,
}

/// What the index remembers for targets with ignore rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quiet {
    /// Per target with `ignoreFields`: xxh3 of the bytes it last wrote
    /// (the file without the ignored fields).
    pub hashes: Vec<(TargetId, u64)>,
    /// The object as last seen, deny-list applied, for `ignoreManagers`.
    pub clean: Option<Arc<Value>>,
}

impl Quiet {
    pub fn hash_of(&self, target: TargetId) -> Option<u64> {
        self.hashes.iter().find(|(id, _)| *id == target).map(|(_, hash)| *hash)
    }

    pub fn set_hash(&mut self, target: TargetId, hash: u64) {
        match self.hashes.iter_mut().find(|(id, _)| *id == target) {
            Some(entry) => entry.1 = hash,
            None => self.hashes.push((target, hash)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty() && self.clean.is_none()
    }
}

/// Objects of one watch, keyed by `namespace/name` (or `name`).
#[derive(Debug, Default)]
pub struct ObjectIndex {
    entries: HashMap<Box<str>, Entry>,
    /// Only for objects some target with ignore rules selects.
    quiet: HashMap<Box<str>, Quiet>,
    /// Targets that select an object but were not sent it (a Secret they
    /// cannot seal, an object that does not sanitize): their files of it
    /// are kept, so a relist's sweep must count it as live for them.
    withheld: HashMap<Box<str>, Box<[TargetId]>>,
}

impl ObjectIndex {
    pub fn key(namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Records the object's new state; returns the previous one.
    pub fn insert(&mut self, key: &str, hash: u64, mut targets: Vec<TargetId>) -> Option<Entry> {
        targets.sort_unstable();
        targets.dedup();
        self.entries.insert(key.into(), Entry { hash, targets: targets.into_boxed_slice() })
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        if !self.quiet.is_empty() {
            self.quiet.remove(key);
        }
        self.withhold(key, Vec::new());
        self.entries.remove(key)
    }

    /// Records the targets that select the object but were not sent it
    /// (none: forgets them).
    pub fn withhold(&mut self, key: &str, mut targets: Vec<TargetId>) {
        if targets.is_empty() {
            if !self.withheld.is_empty() {
                self.withheld.remove(key);
            }
            return;
        }
        targets.sort_unstable();
        targets.dedup();
        self.withheld.insert(key.into(), targets.into_boxed_slice());
    }

    /// Whether any object is withheld from any target.
    pub fn withholds_any(&self) -> bool {
        !self.withheld.is_empty()
    }

    /// The targets the object is withheld from.
    #[cfg(test)]
    pub fn withheld(&self, key: &str) -> &[TargetId] {
        self.withheld.get(key).map_or(&[], |targets| targets)
    }

    /// Takes the object's [`Quiet`] entry out; costs no lookup while no
    /// object has one.
    pub fn take_quiet(&mut self, key: &str) -> Option<Quiet> {
        if self.quiet.is_empty() { None } else { self.quiet.remove(key) }
    }

    /// Stores the object's [`Quiet`] entry (an empty one is not kept).
    pub fn put_quiet(&mut self, key: &str, quiet: Quiet) {
        if !quiet.is_empty() {
            self.quiet.insert(key.into(), quiet);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys of objects routed to `target`.
    pub fn keys_for(&self, target: TargetId) -> impl Iterator<Item = &str> {
        self.entries.iter().filter(move |(_, e)| e.targets.binary_search(&target).is_ok()).map(|(k, _)| &**k)
    }

    /// Keys of objects whose files `target` keeps: those routed to it and
    /// those withheld from it.
    /// A key may come twice (routed before, withheld now).
    pub fn kept_by(&self, target: TargetId) -> impl Iterator<Item = &str> {
        let withheld = self.withheld.iter().filter(move |(_, t)| t.binary_search(&target).is_ok());
        self.keys_for(target).chain(withheld.map(|(k, _)| &**k))
    }

    /// Keeps only the keys in `live`, returning the removed entries: used when
    /// a relist shows which objects vanished while the watch was down.
    pub fn retain_live(&mut self, live: &std::collections::HashSet<String>) -> Vec<(String, Entry)> {
        let gone: Vec<Box<str>> = self.entries.keys().filter(|k| !live.contains(&***k)).cloned().collect();
        self.quiet.retain(|k, _| live.contains(&**k));
        self.withheld.retain(|k, _| live.contains(&**k));
        gone.into_iter().filter_map(|k| self.entries.remove(&k).map(|e| (k.into_string(), e))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_returns_the_previous_state_and_sorts_targets() {
        let mut index = ObjectIndex::default();
        let key = ObjectIndex::key(Some("ns"), "cm");
        assert_eq!(key, "ns/cm");
        assert!(index.insert(&key, 1, vec![3, 1, 3]).is_none());
        let previous = index.insert(&key, 2, vec![1]).unwrap();
        assert_eq!(previous, Entry { hash: 1, targets: vec![1, 3].into() });
        assert_eq!(index.keys_for(1).collect::<Vec<_>>(), vec!["ns/cm"]);
        assert_eq!(index.keys_for(3).count(), 0);
    }

    #[test]
    fn retain_live_reports_objects_that_vanished() {
        let mut index = ObjectIndex::default();
        index.insert("a", 1, vec![0]);
        index.insert("b", 2, vec![0]);
        let gone = index.retain_live(&["a".to_owned()].into());
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "b");
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn quiet_entries_go_with_their_object() {
        let mut index = ObjectIndex::default();
        assert!(index.take_quiet("a").is_none());
        index.put_quiet("a", Quiet::default());
        assert!(index.take_quiet("a").is_none(), "an empty entry is not kept");
        for key in ["a", "b"] {
            index.insert(key, 1, vec![0]);
            index.put_quiet(key, Quiet { hashes: vec![(0, 7)], clean: None });
        }
        index.remove("a");
        index.retain_live(&["a".to_owned()].into());
        assert!(index.take_quiet("a").is_none() && index.take_quiet("b").is_none());
        let mut quiet = Quiet::default();
        quiet.set_hash(3, 1);
        quiet.set_hash(3, 2);
        assert_eq!((quiet.hash_of(3), quiet.hash_of(4)), (Some(2), None));
    }
}
