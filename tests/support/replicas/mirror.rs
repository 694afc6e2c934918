//! A bare mirror of one repository on the git server: every branch fetched
//! in one call, files and commits read in batches (one git process, not
//! one per object).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::super::git::GitClient;
use super::super::history::{self, History};

pub struct Mirror {
    pub url: String,
    dir: PathBuf,
}

impl Mirror {
    pub fn new(git: &GitClient, url: &str, name: &str) -> Self {
        let dir = git.workdir(&format!("mirror-{name}"));
        git.ok(&dir, &["init", "--quiet", "--bare"]);
        Self { url: url.to_owned(), dir }
    }

    /// The bare repository.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The commits of `branch` that changed `path`, newest first.
    pub fn commits_touching(&self, git: &GitClient, branch: &str, path: &str) -> Vec<String> {
        let log = git.ok(&self.dir, &["log", "--format=%H", &format!("refs/heads/{branch}"), "--", path]);
        log.lines().map(str::to_owned).collect()
    }

    /// Fetches every branch, pruning none (a pushed commit stays readable).
    pub fn fetch(&self, git: &GitClient) {
        git.ok(&self.dir, &["fetch", "--quiet", "--force", &self.url, "+refs/heads/*:refs/heads/*"]);
    }

    /// Every value each file of `branch` held in some commit (None: no such branch).
    pub fn history(&self, git: &GitClient, branch: &str) -> Option<History> {
        history::read(git, &self.dir, &format!("refs/heads/{branch}"))
    }

    /// Path → content of every file on `branch`, None if the branch is absent.
    pub fn files(&self, git: &GitClient, branch: &str) -> Option<BTreeMap<String, String>> {
        let listed = git.run(&self.dir, &["ls-tree", "-r", "-z", &format!("refs/heads/{branch}")]);
        if !listed.status.success() {
            return None;
        }
        let entries: Vec<(String, String)> = String::from_utf8_lossy(&listed.stdout)
            .split('\0')
            .filter_map(|entry| {
                let (meta, path) = entry.split_once('\t')?;
                Some((meta.split_whitespace().nth(2)?.to_owned(), path.to_owned()))
            })
            .collect();
        let blobs = self.objects(git, entries.iter().map(|(id, _)| id.as_str()));
        Some(
            entries
                .into_iter()
                .map(|(id, path)| {
                    let content = blobs.get(&id).cloned().flatten().unwrap_or_default();
                    (path, String::from_utf8_lossy(&content).into_owned())
                })
                .collect(),
        )
    }

    /// The value of the `Replica:` trailer of each commit (None: the commit
    /// is not in the mirror, or has no trailer).
    pub fn replicas_of<'a>(
        &self,
        git: &GitClient,
        commits: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, Option<String>> {
        self.objects(git, commits)
            .into_iter()
            .map(|(id, body)| (id, body.and_then(|body| replica_trailer(&String::from_utf8_lossy(&body)))))
            .collect()
    }

    /// Raw objects by id through `git cat-file --batch` (None: missing).
    fn objects<'a>(
        &self,
        git: &GitClient,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, Option<Vec<u8>>> {
        let mut input = String::new();
        for id in ids {
            input.push_str(id);
            input.push('\n');
        }
        if input.is_empty() {
            return HashMap::new();
        }
        let output = git.run_input(&self.dir, &["cat-file", "--batch"], input.as_bytes());
        assert!(output.status.success(), "git cat-file --batch failed");
        parse_batch(&output.stdout)
    }
}

/// Parses `<id> <type> <size>\n<bytes>\n` and `<id> missing\n` records.
pub fn parse_batch(mut out: &[u8]) -> HashMap<String, Option<Vec<u8>>> {
    let mut objects = HashMap::new();
    while let Some(newline) = out.iter().position(|&b| b == b'\n') {
        let header = String::from_utf8_lossy(&out[..newline]).into_owned();
        out = &out[newline + 1..];
        let fields: Vec<&str> = header.split(' ').collect();
        if fields.len() == 3 {
            let size: usize = fields[2].parse().expect("object size");
            objects.insert(fields[0].to_owned(), Some(out[..size].to_vec()));
            out = &out[size + 1..];
        } else {
            objects.insert(fields[0].to_owned(), None);
        }
    }
    objects
}

/// The value of the last `Replica: <name>` line of a commit.
pub fn replica_trailer(commit: &str) -> Option<String> {
    commit.lines().rev().find_map(|line| line.strip_prefix("Replica: ")).map(|name| name.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_batch_records_and_trailers() {
        let out = b"aa commit 12\nhello\nworld\n\nbb missing\n";
        let parsed = parse_batch(out);
        assert_eq!(parsed["aa"].as_deref(), Some(&b"hello\nworld\n"[..]));
        assert_eq!(parsed["bb"], None);
        assert_eq!(replica_trailer("UPDATE x\n\nGitTarget: a/b\nReplica: r-1\n").as_deref(), Some("r-1"));
        assert_eq!(replica_trailer("UPDATE x\n"), None);
    }
}
