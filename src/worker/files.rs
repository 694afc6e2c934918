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
use crate::worker::core::Content;
use crate::worker::queue::SweepScope;

/// Files of the branch tip, by full path.
#[derive(Debug, Default, Clone)]
pub struct BranchFiles {
    files: HashMap<String, ObjectId>,
    /// The fingerprints of the sealed files among them.
    sealed: HashMap<String, u64>,
    /// (target, normalised base folder), deepest folders first.
    folders: Vec<(TargetKey, String)>,
    /// Targets with `layout: kustomize`: their folder keeps a kustomization.yaml.
    kustomize: BTreeSet<TargetKey>,
}

impl BranchFiles {
    pub fn new(
        files: impl IntoIterator<Item = (String, ObjectId)>,
        folders: Vec<(TargetKey, String)>,
    ) -> Self {
        let mut this = Self {
            files: files.into_iter().collect(),
            sealed: HashMap::new(),
            folders: Vec::new(),
            kustomize: BTreeSet::new(),
        };
        this.set_folders(folders);
        this
    }

    pub fn set_folders(&mut self, mut folders: Vec<(TargetKey, String)>) {
        folders.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.cmp(b)));
        self.folders = folders;
    }

    /// [`Self::new`], with the targets whose layout is kustomize.
    pub fn with_kustomize(
        files: impl IntoIterator<Item = (String, ObjectId)>,
        folders: Vec<(TargetKey, String)>,
        kustomize: BTreeSet<TargetKey>,
    ) -> Self {
        let mut this = Self::new(files, folders);
        this.kustomize = kustomize;
        this
    }

    pub fn set_kustomize(&mut self, targets: BTreeSet<TargetKey>) {
        self.kustomize = targets;
    }

    /// The kustomization.yaml, as (path, content), of every `layout:
    /// kustomize` target whose set of object files `changes` alters (a file
    /// created or deleted: (path, exists after)), or that is in `check`.
    /// Unchanged ones are returned too: the caller drops what equals the tip.
    pub fn kustomizations(
        &self,
        changes: &[(&str, bool)],
        check: &BTreeSet<TargetKey>,
    ) -> Vec<(String, Vec<u8>)> {
        if self.kustomize.is_empty() {
            return Vec::new();
        }
        let mut affected: BTreeSet<&TargetKey> =
            check.iter().filter(|t| self.kustomize.contains(*t)).collect();
        for (path, exists) in changes {
            if let Some((target, _)) = self.owned_object(path)
                && self.kustomize.contains(target)
                && self.files.contains_key(*path) != *exists
            {
                affected.insert(target);
            }
        }
        let after: HashMap<&str, bool> = changes.iter().copied().collect();
        affected
            .into_iter()
            .filter_map(|target| {
                let base = &self.folders.iter().find(|(t, _)| t == target)?.1;
                let present = self.files.keys().map(String::as_str).filter(|p| after.get(p) != Some(&false));
                let created = after.iter().filter(|(_, exists)| **exists).map(|(p, _)| *p);
                let resources = present
                    .chain(created)
                    .filter(|p| self.owned_object(p).is_some_and(|(t, _)| t == target))
                    .filter_map(|p| strip_base(base, p));
                Some((
                    crate::worker::kustomization::path(base),
                    crate::worker::kustomization::render(resources),
                ))
            })
            .collect()
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

    /// The fingerprints of the tip's sealed files, as the shell read them.
    pub fn with_sealed(mut self, sealed: impl IntoIterator<Item = (String, u64)>) -> Self {
        self.sealed = sealed.into_iter().collect();
        self
    }

    /// Records what a committed change leaves at `path`: its blob, and for
    /// a sealed file its fingerprint.
    pub fn record(&mut self, path: &str, content: &Content) {
        self.set(path, content.blob_id());
        match content {
            Content::Bytes(bytes) => match fingerprint(path, bytes) {
                Some(print) => self.sealed.insert(path.to_owned(), print),
                None => self.sealed.remove(path),
            },
            Content::Gone => self.sealed.remove(path),
            // A settled change: the tip's own blob, fingerprint and all.
            Content::Blob(_) => None,
        };
    }

    /// New bytes for `path`. A sealed file is encrypted afresh on every
    /// write, so bytes that hold what the tip's file holds (the same
    /// fingerprint) stand for the tip's blob: no commit re-encrypts an
    /// unchanged Secret, on a resync, an audit or a takeover alike.
    pub fn settle(&self, path: &str, bytes: std::sync::Arc<[u8]>) -> Content {
        if let (Some(tip), Some(known)) = (self.files.get(path), self.sealed.get(path))
            && fingerprint(path, &bytes) == Some(*known)
        {
            return Content::Blob(*tip);
        }
        Content::Bytes(bytes)
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

/// What a sealed file holds, independent of its encryption: the hash of
/// the digest it carries (`crate::sops::digest_in_file`). `None` for any
/// other file, and for a sealed file without a readable digest (which then
/// never settles: it is written again).
pub fn fingerprint(path: &str, bytes: &[u8]) -> Option<u64> {
    if !path.ends_with(crate::sanitize::SEALED_EXTENSION) {
        return None;
    }
    crate::sops::digest_in_file(bytes).map(|digest| xxhash_rust::xxh3::xxh3_64(digest.as_bytes()))
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
            "ns/core/secrets/s.sops.yaml",
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
        let branch = files(&[
            "ns/core/configmaps/a.yaml",
            "ns/core/secrets/s.sops.yaml",
            "ns/apps/deployments/d.yaml",
        ]);
        let owned = BTreeSet::from([(String::new(), "configmaps".to_owned())]);
        let deleted: Vec<String> =
            branch.retain(&TargetKey::new("ns", "outer"), &owned).into_iter().map(|d| d.0).collect();
        assert_eq!(deleted, vec!["ns/apps/deployments/d.yaml", "ns/core/secrets/s.sops.yaml"]);
    }

    #[test]
    fn a_kustomization_follows_creates_and_deletes_of_its_target_only() {
        let mut branch = files(&["ns/core/configmaps/a.yaml", "teams/a/ns/core/configmaps/x.yaml"]);
        let inner = TargetKey::new("ns", "inner");
        assert!(
            branch
                .kustomizations(&[("teams/a/ns/core/configmaps/y.yaml", true)], &BTreeSet::new())
                .is_empty()
        );
        branch.set_kustomize(BTreeSet::from([inner.clone()]));
        // An update changes no set; a file of the outer target is not the inner's.
        let quiet = [("teams/a/ns/core/configmaps/x.yaml", true), ("ns/core/configmaps/b.yaml", true)];
        assert!(branch.kustomizations(&quiet, &BTreeSet::new()).is_empty());
        let changed = branch.kustomizations(
            &[("teams/a/ns/core/configmaps/y.yaml", true), ("teams/a/ns/core/configmaps/x.yaml", false)],
            &BTreeSet::new(),
        );
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].0, "teams/a/kustomization.yaml");
        let text = String::from_utf8(changed[0].1.clone()).unwrap();
        assert!(text.ends_with("resources:\n- \"ns/core/configmaps/y.yaml\"\n"), "{text}");
        // Asked for, it is rendered even when nothing changes.
        let checked = branch.kustomizations(&[], &BTreeSet::from([inner]));
        assert!(String::from_utf8(checked[0].1.clone()).unwrap().contains("configmaps/x.yaml"));
    }

    /// Sealing an unchanged Secret again gives other bytes; they settle to
    /// the tip's blob, whether the tip's fingerprint came from a commit of
    /// ours or from the shell's read of a fetched tip. Changed content, or
    /// a file that is not sealed, does not settle.
    #[test]
    fn a_sealed_file_with_the_tip_s_digest_settles_to_the_tip_s_blob() {
        let identity = age::x25519::Identity::generate();
        let recipients = crate::sops::Recipients::parse([identity.to_public().to_string()]).unwrap();
        let sealer = crate::sops::Sealer::new(recipients, crate::sops::DigestKey::new(vec![3; 32]).unwrap());
        let secret = |value: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "db", "namespace": "ns"}, "data": {"password": value}})
        };
        let first: std::sync::Arc<[u8]> =
            sealer.seal("ns/core/secrets/db.sops.yaml", &secret("aA==")).unwrap().file.into();
        let again: std::sync::Arc<[u8]> =
            sealer.seal("ns/core/secrets/db.sops.yaml", &secret("aA==")).unwrap().file.into();
        let changed: std::sync::Arc<[u8]> =
            sealer.seal("ns/core/secrets/db.sops.yaml", &secret("bg==")).unwrap().file.into();
        assert_ne!(first, again, "fresh encryption");
        let path = "ns/core/secrets/db.sops.yaml";

        let mut branch = files(&[]);
        assert_eq!(branch.settle(path, again.clone()), Content::Bytes(again.clone()), "nothing to settle to");
        branch.record(path, &Content::Bytes(first.clone()));
        let tip = *branch.get(path).unwrap();
        assert_eq!(branch.settle(path, again.clone()), Content::Blob(tip));
        assert_eq!(branch.settle(path, changed.clone()), Content::Bytes(changed.clone()));
        let plain = "ns/core/configmaps/db.yaml";
        branch.record(plain, &Content::Bytes(first.clone()));
        assert_eq!(branch.settle(plain, again.clone()), Content::Bytes(again.clone()), "only sealed files");

        let fetched = BranchFiles::new([(path.to_owned(), tip)], Vec::new())
            .with_sealed([(path.to_owned(), fingerprint(path, &first).unwrap())]);
        assert_eq!(fetched.settle(path, again.clone()), Content::Blob(tip));
        branch.record(path, &Content::Gone);
        assert_eq!(branch.settle(path, again.clone()), Content::Bytes(again), "a deleted file is no tip");
    }
}
