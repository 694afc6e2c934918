//! Issue 17, acceptance 2: Secret values and keys appear nowhere but in
//! the cluster. A scan looks for each needle, as written and in base64, in
//! every object of a repository (every blob, tree and commit message of
//! every branch ever fetched), in log text, and in the status and Events of
//! a namespace. Findings name where, never the value.

use std::path::Path;

use base64::Engine;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

use super::git::GitClient;

#[derive(Default)]
pub struct LeakScan {
    /// (label, bytes to look for).
    needles: Vec<(String, Vec<u8>)>,
    pub findings: Vec<String>,
}

impl LeakScan {
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks for `value` as is and in base64 (the API's form of Secret data).
    pub fn value(mut self, label: &str, value: &[u8]) -> Self {
        assert!(value.len() >= 12, "{label}: a needle this short would match by chance");
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        self.needles.push((label.to_owned(), value.to_vec()));
        self.needles.push((format!("{label} (base64)"), encoded.into_bytes()));
        self
    }

    pub fn needles(&self) -> usize {
        self.needles.len()
    }

    /// Scans `text`, named `what` in findings.
    pub fn text(&mut self, what: &str, text: &[u8]) {
        for (label, needle) in &self.needles {
            if text.windows(needle.len()).any(|w| w == needle.as_slice()) {
                self.findings.push(format!("{label} in {what}"));
            }
        }
    }

    /// Scans every object of the bare repository `dir`.
    pub fn repository(&mut self, git: &GitClient, dir: &Path, name: &str) {
        let all = git.run(dir, &["cat-file", "--batch-all-objects", "--batch", "--unordered"]);
        assert!(all.status.success(), "git cat-file failed: {}", super::git::stderr(&all));
        assert!(!all.stdout.is_empty(), "repository {name} has no objects: nothing was scanned");
        self.text(&format!("repository {name}"), &all.stdout);
    }

    /// Clones `url` bare (every branch) and scans every object.
    pub fn remote(&mut self, git: &GitClient, url: &str) {
        let scratch = git.workdir("leak-scan");
        let dir = scratch.join(format!("scan-{}-{}", std::process::id(), self.findings.len()));
        let _ = std::fs::remove_dir_all(&dir);
        git.ok(&scratch, &["clone", "--quiet", "--mirror", url, dir.to_str().unwrap()]);
        self.repository(git, &dir, url);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Scans the status of every configuration object and every Event
    /// (core and events.k8s.io) in `namespace`.
    pub async fn namespace(&mut self, client: &kube::Client, namespace: &str) {
        let kinds = [
            ("configbutler.ai", "v1alpha1", "GitProvider", "gitproviders"),
            ("configbutler.ai", "v1alpha1", "GitTarget", "gittargets"),
            ("configbutler.ai", "v1alpha1", "WatchRule", "watchrules"),
            ("", "v1", "Event", "events"),
            ("events.k8s.io", "v1", "Event", "events"),
        ];
        for (group, version, kind, plural) in kinds {
            let resource =
                ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
            let list =
                api.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("list {plural}: {e}"));
            for object in list.items {
                let what =
                    format!("{kind} {}/{}", namespace, object.metadata.name.as_deref().unwrap_or_default());
                self.text(&what, serde_json::to_string(&object.data).unwrap().as_bytes());
            }
        }
    }

    /// Panics with every finding.
    pub fn assert_clean(&self) {
        assert!(self.findings.is_empty(), "Secret material leaked:\n{}", self.findings.join("\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_value_and_its_base64_form() {
        let mut scan = LeakScan::new().value("password", b"correct horse battery");
        scan.text("log", b"... correct horse battery ...");
        scan.text("status", b"Y29ycmVjdCBob3JzZSBiYXR0ZXJ5");
        scan.text("events", b"nothing here");
        assert_eq!(scan.findings, ["password in log", "password (base64) in status"]);
    }
}
