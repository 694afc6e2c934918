//! Identities: a GitTarget, and a branch worker (repository URL + branch).

use std::fmt;

/// A GitTarget, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub namespace: String,
    pub name: String,
}

impl TargetKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One branch worker exists per key. GitTargets that write to the same
/// branch of the same repository share it, whatever their names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BranchKey {
    pub url: String,
    pub branch: String,
}

impl BranchKey {
    /// Normalises the URL so that spellings of one repository share a worker:
    /// scheme and host are lowercased, a trailing `/` and `.git` are dropped.
    pub fn new(url: &str, branch: &str) -> Self {
        Self { url: normalize_url(url), branch: branch.to_owned() }
    }

    /// Stable bytes for hashing onto shards (never `std::hash::Hash`).
    pub fn stable_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.url.len() + self.branch.len() + 1);
        bytes.extend_from_slice(self.url.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(self.branch.as_bytes());
        bytes
    }
}

impl fmt::Display for BranchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.url, self.branch)
    }
}

fn normalize_url(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    match trimmed.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            format!("{}://{}{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase(), path)
        }
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_repository_share_a_key() {
        let a = BranchKey::new("ssh://git@Git.Example.com/Org/Repo.git", "main");
        let b = BranchKey::new("ssh://git@git.example.com/Org/Repo/", "main");
        assert_eq!(a, b);
        assert_eq!(a.url, "ssh://git@git.example.com/Org/Repo", "path case is kept");
        assert_ne!(a, BranchKey::new("ssh://git@git.example.com/Org/Repo", "audit"));
    }

    #[test]
    fn stable_bytes_separate_url_and_branch() {
        assert_ne!(
            BranchKey::new("https://h/a", "bc").stable_bytes(),
            BranchKey::new("https://h/ab", "c").stable_bytes()
        );
    }
}
