//! The branch worker's view of its branch tip (pure): which files exist,
//! which GitTarget owns each, and what a sweep or retain must delete.
//!
//! A file belongs to the target with the deepest base folder containing it,
//! so targets on one branch never delete each other's files, and files that
//! are not object paths (a README someone added) are never touched.

use std::collections::{BTreeSet, HashMap, HashSet};

use gix::ObjectId;

use crate::route::TargetKey;
use crate::sanitize::{DecodedPath, decode_object_path, strip_base};
use crate::worker::queue::SweepScope;

/// Files of the branch tip, by full path.
#[derive(Debug, Default, Clone)]
pub struct BranchFiles {
    files: HashMap<String, ObjectId>,
    /// (target, normalised base folder), deepest folders first.
    folders: Vec<(TargetKey, String)>,
}

impl BranchFiles {
    pub fn new(
        files: impl IntoIterator<Item = (String, ObjectId)>,
        folders: Vec<(TargetKey, String)>,
    ) -> Self {
        let mut this = Self { files: files.into_iter().collect(), folders: Vec::new() };
        this.set_folders(folders);
        this
    }

    pub fn set_folders(&mut self, mut folders: Vec<(TargetKey, String)>) {
        folders.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.cmp(b)));
        self.folders = folders;
    }

    pub fn get(&self, path: &str) -> Option<&ObjectId> {
        self.files.get(path)
    }

    pub fn set(&mut self, path: &str, id: Option<ObjectId>) {
        match id {
            Some(id) => self.files.insert(path.to_owned(), id),
            None => self.files.remove(path),
        };
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Every file, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ObjectId)> {
        self.files.iter().map(|(path, id)| (path.as_str(), id))
    }

    /// Whether `path` is an object file some target on this branch owns.
    pub fn is_owned(&self, path: &str) -> bool {
        self.owned_object(path).is_some()
    }

    /// The target owning `path`, and the object it decodes to.
    fn owned_object(&self, path: &str) -> Option<(&TargetKey, DecodedPath)> {
        let (target, base) = self.folders.iter().find(|(_, base)| strip_base(base, path).is_some())?;
        Some((target, decode_object_path(strip_base(base, path)?)?))
    }

    /// Files of `scope` that are not in `live`, sorted for stable commits.
    pub fn sweep(&self, scope: &SweepScope, live: &HashSet<String>) -> Vec<(String, DecodedPath)> {
        self.select(|path, target, decoded| {
            target == &scope.target
                && decoded.group == scope.group
                && decoded.plural == scope.plural
                && scope.namespace.as_ref().is_none_or(|ns| decoded.namespace.as_ref() == Some(ns))
                && !live.contains(path)
        })
    }

    /// Object files of `target` whose resource is not in `owned`.
    pub fn retain(
        &self,
        target: &TargetKey,
        owned: &BTreeSet<(String, String)>,
    ) -> Vec<(String, DecodedPath)> {
        self.select(|_, t, decoded| {
            t == target && !owned.contains(&(decoded.group.clone(), decoded.plural.clone()))
        })
    }

    fn select(&self, keep: impl Fn(&str, &TargetKey, &DecodedPath) -> bool) -> Vec<(String, DecodedPath)> {
        let mut out: Vec<(String, DecodedPath)> = self
            .files
            .keys()
            .filter_map(|path| {
                let (target, decoded) = self.owned_object(path)?;
                keep(path, target, &decoded).then(|| (path.clone(), decoded))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ObjectId {
        ObjectId::null(gix::hash::Kind::Sha1)
    }

    fn files(paths: &[&str]) -> BranchFiles {
        BranchFiles::new(
            paths.iter().map(|p| (p.to_string(), id())),
            vec![
                (TargetKey::new("ns", "outer"), String::new()),
                (TargetKey::new("ns", "inner"), "teams/a".into()),
            ],
        )
    }

    fn scope(target: &str, namespace: Option<&str>) -> SweepScope {
        SweepScope {
            target: TargetKey::new("ns", target),
            group: String::new(),
            plural: "configmaps".into(),
            namespace: namespace.map(str::to_owned),
        }
    }

    #[test]
    fn sweeps_only_the_targets_own_object_files() {
        let branch = files(&[
            "ns/core/configmaps/live.yaml",
            "ns/core/configmaps/gone.yaml",
            "other/core/configmaps/gone.yaml",
            "ns/core/secrets/s.yaml",
            "teams/a/ns/core/configmaps/gone.yaml",
            "README.md",
            "notes/a.yaml",
        ]);
        let live = HashSet::from(["ns/core/configmaps/live.yaml".to_owned()]);
        let deleted: Vec<String> =
            branch.sweep(&scope("outer", Some("ns")), &live).into_iter().map(|d| d.0).collect();
        assert_eq!(deleted, vec!["ns/core/configmaps/gone.yaml"]);
        let everywhere: Vec<String> =
            branch.sweep(&scope("outer", None), &live).into_iter().map(|d| d.0).collect();
        assert_eq!(everywhere, vec!["ns/core/configmaps/gone.yaml", "other/core/configmaps/gone.yaml"]);
        let inner: Vec<String> =
            branch.sweep(&scope("inner", None), &HashSet::new()).into_iter().map(|d| d.0).collect();
        assert_eq!(
            inner,
            vec!["teams/a/ns/core/configmaps/gone.yaml"],
            "the nested folder belongs to the inner target"
        );
    }

    #[test]
    fn retain_drops_resources_no_rule_selects() {
        let branch =
            files(&["ns/core/configmaps/a.yaml", "ns/core/secrets/s.yaml", "ns/apps/deployments/d.yaml"]);
        let owned = BTreeSet::from([(String::new(), "configmaps".to_owned())]);
        let deleted: Vec<String> =
            branch.retain(&TargetKey::new("ns", "outer"), &owned).into_iter().map(|d| d.0).collect();
        assert_eq!(deleted, vec!["ns/apps/deployments/d.yaml", "ns/core/secrets/s.yaml"]);
    }
}
