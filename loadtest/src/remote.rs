//! What reached the git server: every push of the run (from the server's
//! push log) with the object values its commits carried and the replica
//! that made its tip, read from a bare mirror of the repository.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::cluster::{Cluster, parse_value};
use crate::env::Env;

const ZERO: &str = "0000000000000000000000000000000000000000";

#[derive(Debug, Clone)]
pub struct PushInfo {
    pub at: f64,
    pub branch: String,
    /// The `Replica:` trailer of the pushed tip.
    pub replica: Option<String>,
    /// (object index, sequence value) of every load file the push changed.
    pub values: Vec<(usize, u64)>,
    pub commits: usize,
}

pub struct Mirror<'a> {
    env: &'a Env,
    dir: PathBuf,
    url: String,
    repo: String,
}

/// Object index of a path `t<i>/<ns>/core/configmaps/o-<j>.yaml`.
fn object_of(path: &str) -> Option<usize> {
    path.strip_suffix(".yaml")?.rsplit('/').next()?.strip_prefix("o-")?.parse().ok()
}

fn value_in(yaml: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(yaml).lines().find_map(|l| parse_value(l.trim_start().strip_prefix("value:")?))
}

/// Reads objects by id with one `git cat-file --batch`.
fn read_objects(env: &Env, dir: &Path, ids: &[String]) -> Result<HashMap<String, Vec<u8>>, String> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let input = ids.join("\n") + "\n";
    let out = env.git_in(dir, &["cat-file", "--batch"], Some(input.as_bytes()))?;
    let mut objects = HashMap::new();
    let mut rest = out.as_slice();
    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
        let header = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = &rest[end + 1..];
        let fields: Vec<&str> = header.split_whitespace().collect();
        let Some(size) = fields.get(2).and_then(|s| s.parse::<usize>().ok()) else { continue };
        let body = rest.get(..size).unwrap_or(rest).to_vec();
        rest = rest.get(size + 1..).unwrap_or_default();
        objects.insert(fields[0].to_owned(), body);
    }
    Ok(objects)
}

impl<'a> Mirror<'a> {
    pub fn new(env: &'a Env, cluster: &Cluster, dir: &Path) -> Self {
        Self::of(env, &cluster.url, &cluster.repo, dir)
    }

    /// A mirror of repository `repo` (its name on the server) at `url`, in `dir/mirror`.
    pub fn of(env: &'a Env, url: &str, repo: &str, dir: &Path) -> Self {
        Self::at(env, url, repo, dir.join("mirror"))
    }

    /// A mirror of repository `repo` at `url` in the bare repository `path`.
    pub fn at(env: &'a Env, url: &str, repo: &str, path: PathBuf) -> Self {
        Self { env, dir: path, url: url.to_owned(), repo: repo.to_owned() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Brings the mirror up to the server's branches.
    pub fn fetch(&self) -> Result<(), String> {
        if !self.dir.exists() {
            let parent = self.dir.parent().unwrap_or(Path::new("."));
            let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
            self.env.git(parent, &["init", "--quiet", "--bare", &name])?;
        }
        // An empty repository has nothing to fetch yet.
        let _ = self.env.git(&self.dir, &["fetch", "--quiet", &self.url, "+refs/heads/*:refs/heads/*"]);
        Ok(())
    }

    /// Every push of the run so far, in server order.
    pub fn pushes(&self) -> Result<Vec<PushInfo>, String> {
        self.fetch()?;
        let log: Vec<_> = self
            .env
            .pushes(&self.repo)
            .into_iter()
            .filter(|p| p.new != ZERO && p.branch != crate::env::SEED_BRANCH)
            .collect();
        // Pushes that moved a branch: one `diff-tree` for all of them, one
        // block per input line (the commit id, then raw diff lines).
        let moved: Vec<&crate::env::Push> = log.iter().filter(|p| p.old != ZERO).collect();
        let input: String = moved.iter().map(|p| format!("{} {}\n", p.new, p.old)).collect();
        let diff = self.env.git_in(
            &self.dir,
            &["diff-tree", "-r", "--always", "--stdin"],
            Some(input.as_bytes()),
        )?;
        let mut diffs: Vec<Vec<(String, String)>> = Vec::new();
        for line in String::from_utf8_lossy(&diff).lines() {
            if let Some((meta, path)) = line.split_once('\t') {
                let blob = meta.split_whitespace().nth(3).unwrap_or(ZERO).to_owned();
                if let Some(block) = diffs.last_mut().filter(|_| blob != ZERO) {
                    block.push((blob, path.to_owned()));
                }
            } else if !line.trim().is_empty() {
                diffs.push(Vec::new());
            }
        }
        let mut diffs = diffs.into_iter();
        // A push that created a branch carried its whole tree.
        let blocks: Vec<Vec<(String, String)>> = log
            .iter()
            .map(|p| if p.old == ZERO { self.tree(&p.new) } else { diffs.next().unwrap_or_default() })
            .collect();
        let mut ids: Vec<String> = blocks.iter().flatten().map(|(blob, _)| blob.clone()).collect();
        ids.extend(log.iter().map(|p| p.new.clone()));
        ids.sort();
        ids.dedup();
        let objects = read_objects(self.env, &self.dir, &ids)?;
        let counts = self.commit_counts(&log)?;
        Ok(log
            .iter()
            .enumerate()
            .map(|(i, push)| {
                let values = blocks
                    .get(i)
                    .map(|block| {
                        block
                            .iter()
                            .filter_map(|(blob, path)| {
                                Some((object_of(path)?, value_in(objects.get(blob)?)?))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let replica = objects.get(&push.new).and_then(|c| {
                    String::from_utf8_lossy(c)
                        .lines()
                        .find_map(|l| Some(l.strip_prefix("Replica: ")?.trim().to_owned()))
                });
                PushInfo { at: push.at, branch: push.branch.clone(), replica, values, commits: counts[i] }
            })
            .collect())
    }

    /// (blob id, path) of every file of a commit's tree.
    fn tree(&self, commit: &str) -> Vec<(String, String)> {
        let listing = self.env.git(&self.dir, &["ls-tree", "-r", commit]).unwrap_or_default();
        listing
            .lines()
            .filter_map(|l| {
                let (meta, path) = l.split_once('\t')?;
                Some((meta.split_whitespace().nth(2)?.to_owned(), path.to_owned()))
            })
            .collect()
    }

    fn commit_counts(&self, log: &[crate::env::Push]) -> Result<Vec<usize>, String> {
        log.iter()
            .map(|p| {
                let range = if p.old == ZERO { p.new.clone() } else { format!("{}..{}", p.old, p.new) };
                let out = self.env.git(&self.dir, &["rev-list", "--count", &range]).unwrap_or_default();
                Ok(out.trim().parse().unwrap_or(0))
            })
            .collect()
    }

    /// Every value each load object held in some commit reachable from
    /// `branch` (as last fetched): object index → values. One `git log
    /// --raw` lists every (path, blob) some commit introduced, which is every
    /// (path, blob) of every commit's tree; one `cat-file --batch` reads them.
    pub fn history(&self, branch: &str) -> Result<BTreeMap<usize, BTreeSet<u64>>, String> {
        let rev = format!("refs/heads/{branch}");
        if self.env.git(&self.dir, &["rev-parse", "--verify", "--quiet", &rev]).is_err() {
            return Ok(BTreeMap::new());
        }
        let log = self.env.git(
            &self.dir,
            &["log", "--raw", "--root", "-m", "--no-abbrev", "--no-renames", "--format=commit %H", &rev],
        )?;
        let mut files: Vec<(String, usize)> = Vec::new();
        for line in log.lines() {
            let Some((meta, path)) = line.strip_prefix(':').and_then(|l| l.split_once('\t')) else {
                continue;
            };
            let (Some(blob), Some(object)) = (meta.split_whitespace().nth(3), object_of(path)) else {
                continue;
            };
            if blob != ZERO {
                files.push((blob.to_owned(), object));
            }
        }
        let mut ids: Vec<String> = files.iter().map(|(blob, _)| blob.clone()).collect();
        ids.sort();
        ids.dedup();
        let objects = read_objects(self.env, &self.dir, &ids)?;
        let mut values: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
        for (blob, object) in files {
            if let Some(value) = objects.get(&blob).and_then(|bytes| value_in(bytes)) {
                values.entry(object).or_default().insert(value);
            }
        }
        Ok(values)
    }

    /// The load files below `folder` on `branch` as last fetched: path → bytes.
    pub fn files(&self, branch: &str, folder: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let Ok(tree) = self.env.git(&self.dir, &["ls-tree", "-r", branch, "--", folder]) else {
            return Ok(BTreeMap::new());
        };
        let entries: Vec<(String, String)> = tree
            .lines()
            .filter_map(|l| {
                let (meta, path) = l.split_once('\t')?;
                object_of(path)?;
                Some((meta.split_whitespace().nth(2)?.to_owned(), path.to_owned()))
            })
            .collect();
        let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
        let objects = read_objects(self.env, &self.dir, &ids)?;
        Ok(entries.into_iter().filter_map(|(id, path)| Some((path, objects.get(&id)?.clone()))).collect())
    }
}
