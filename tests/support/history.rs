//! The full history of a branch, for per-change completeness: every value
//! of `data.v` that each file held in any commit reachable from the tip.
//! The final-state checks cannot see a lost change that a later change of
//! the same object overwrote; this can.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::git::GitClient;

/// Every `data.v` value each file held in some commit of a branch.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Commits reachable from the tip.
    pub commits: usize,
    /// File path → every value of its `data.v` found in some commit.
    pub values: BTreeMap<String, BTreeSet<String>>,
}

impl History {
    /// Whether `path` held `value` in some commit.
    pub fn contains(&self, path: &str, value: &str) -> bool {
        self.values.get(path).is_some_and(|values| values.contains(value))
    }
}

/// Reads the history of `rev` in the (bare) repository `dir`: one
/// `git log --raw` over every commit reachable from `rev` (with `-m`, so a
/// merge shows its changes against each parent) lists every (path, blob)
/// that some commit introduced, which is every (path, blob) of every
/// commit's tree; one `git cat-file --batch` reads the blobs. None if `rev`
/// does not resolve.
pub fn read(git: &GitClient, dir: &Path, rev: &str) -> Option<History> {
    let resolved = git.run(dir, &["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")]);
    if !resolved.status.success() {
        return None;
    }
    let log = git
        .ok(dir, &["log", "--raw", "--root", "-m", "--no-abbrev", "--no-renames", "--format=commit %H", rev]);
    let (commits, files) = parse_raw_log(&log);
    let mut ids: Vec<&str> = files.iter().map(|(_, blob)| blob.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut input = String::new();
    for id in &ids {
        input.push_str(id);
        input.push('\n');
    }
    let blobs = if input.is_empty() {
        HashMap::new()
    } else {
        let output = git.run_input(dir, &["cat-file", "--batch"], input.as_bytes());
        assert!(output.status.success(), "git cat-file --batch failed: {}", super::git::stderr(&output));
        super::replicas::mirror::parse_batch(&output.stdout)
    };
    let mut history = History { commits: commits.len(), values: BTreeMap::new() };
    for (path, blob) in files {
        let Some(Some(bytes)) = blobs.get(&blob) else { continue };
        if let Some(value) = value_of(bytes) {
            history.values.entry(path).or_default().insert(value);
        }
    }
    Some(history)
}

/// The commits (newest first) and the distinct (path, new blob) pairs of a
/// `git log --raw --no-abbrev --format="commit %H"`; deletions are left out.
fn parse_raw_log(log: &str) -> (Vec<String>, BTreeSet<(String, String)>) {
    let mut commits: Vec<String> = Vec::new();
    let mut files = BTreeSet::new();
    for line in log.lines() {
        if let Some(id) = line.strip_prefix("commit ") {
            // `-m` repeats a merge once per parent.
            if commits.last().is_none_or(|last| last != id.trim()) {
                commits.push(id.trim().to_owned());
            }
        } else if let Some(raw) = line.strip_prefix(':') {
            let Some((meta, path)) = raw.split_once('\t') else { continue };
            let Some(blob) = meta.split_whitespace().nth(3) else { continue };
            if blob.bytes().all(|b| b == b'0') {
                continue;
            }
            files.insert((path.to_owned(), blob.to_owned()));
        }
    }
    (commits, files)
}

/// The `data.v` of a ConfigMap file, None if it has none (or is no YAML).
pub fn value_of(yaml: &[u8]) -> Option<String> {
    let parsed: serde_json::Value = serde_saphyr::from_str(std::str::from_utf8(yaml).ok()?).ok()?;
    match &parsed["data"]["v"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_introduced_blobs_from_a_raw_log() {
        let log = "commit c2\n\n\
                   :100644 100644 aaaa bbbb M\tt00/ns/core/configmaps/a.yaml\n\
                   :100644 000000 cccc 0000000000000000000000000000000000000000 D\tt00/ns/core/configmaps/b.yaml\n\
                   commit c1\n\n\
                   :000000 100644 0000000000000000000000000000000000000000 aaaa A\tt00/ns/core/configmaps/a.yaml\n\
                   :000000 100644 0000000000000000000000000000000000000000 cccc A\tt00/ns/core/configmaps/b c.yaml\n";
        let (commits, files) = parse_raw_log(log);
        assert_eq!(commits, ["c2", "c1"]);
        let files: Vec<(&str, &str)> = files.iter().map(|(p, b)| (p.as_str(), b.as_str())).collect();
        assert_eq!(
            files,
            [
                ("t00/ns/core/configmaps/a.yaml", "aaaa"),
                ("t00/ns/core/configmaps/a.yaml", "bbbb"),
                ("t00/ns/core/configmaps/b c.yaml", "cccc"),
            ]
        );
    }

    #[test]
    fn reads_the_value_of_a_configmap_file() {
        let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  v: change 12\n";
        assert_eq!(value_of(yaml).as_deref(), Some("change 12"));
        assert_eq!(value_of(b"apiVersion: v1\ndata:\n  v: \"2\"\n").as_deref(), Some("2"));
        assert_eq!(value_of(b"apiVersion: v1\nkind: ConfigMap\n"), None);
    }
}
