//! Secrets no target writes, even encrypted, unless `--write-all-secrets`:
//! the operator's own credentials (git credentials, signing keys, the
//! digest key) and Helm's release records, which hold whole rendered
//! charts and change on every upgrade (pure).

use std::collections::HashSet;

use serde_json::Value;

/// The type Helm 3 gives its release records (`sh.helm.release.v1.<release>.v<n>`).
pub const HELM_RELEASE_TYPE: &str = "helm.sh/release.v1";
const HELM_RELEASE_PREFIX: &str = "sh.helm.release.v1.";

/// Which Secrets are never written.
#[derive(Clone, Debug, Default)]
pub struct SecretExclusions {
    /// `--write-all-secrets`: nothing is excluded.
    off: bool,
    /// (namespace, name) of the Secrets the operator reads credentials from.
    credentials: HashSet<(String, String)>,
}

impl SecretExclusions {
    pub fn new(credentials: impl IntoIterator<Item = (String, String)>) -> Self {
        Self { off: false, credentials: credentials.into_iter().collect() }
    }

    /// `--write-all-secrets`.
    pub fn none() -> Self {
        Self { off: true, credentials: HashSet::new() }
    }

    /// Why `secret` is excluded, if it is.
    pub fn excludes(&self, secret: &Value) -> Option<&'static str> {
        if self.off {
            return None;
        }
        let metadata = &secret["metadata"];
        let name = metadata["name"].as_str().unwrap_or_default();
        let namespace = metadata["namespace"].as_str().unwrap_or_default();
        if secret["type"].as_str() == Some(HELM_RELEASE_TYPE) || name.starts_with(HELM_RELEASE_PREFIX) {
            return Some("a Helm release record");
        }
        self.credentials
            .contains(&(namespace.to_owned(), name.to_owned()))
            .then_some("the operator's own credentials")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn secret(namespace: &str, name: &str, type_: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "type": type_,
               "metadata": {"namespace": namespace, "name": name}, "data": {"k": "dg=="}})
    }

    #[test]
    fn helm_records_and_credentials_are_excluded_by_default() {
        let exclusions = SecretExclusions::new([("team".to_owned(), "git".to_owned())]);
        let cases = [
            (secret("team", "sh.helm.release.v1.web.v3", HELM_RELEASE_TYPE), Some("a Helm release record")),
            // Either sign is enough: the type can be changed, the name too.
            (secret("team", "sh.helm.release.v1.web.v4", "Opaque"), Some("a Helm release record")),
            (secret("team", "renamed", HELM_RELEASE_TYPE), Some("a Helm release record")),
            (secret("team", "git", "Opaque"), Some("the operator's own credentials")),
            (secret("other", "git", "Opaque"), None),
            (secret("team", "db", "Opaque"), None),
        ];
        for (object, expected) in cases {
            assert_eq!(exclusions.excludes(&object), expected, "{object}");
        }
    }

    #[test]
    fn write_all_secrets_excludes_nothing() {
        let exclusions = SecretExclusions::none();
        assert_eq!(
            exclusions.excludes(&secret("team", "sh.helm.release.v1.web.v3", HELM_RELEASE_TYPE)),
            None
        );
    }
}
