//! After the run, from the git server (a mirror per repository): every
//! branch must hold each object's last value byte for byte (sanitized by the
//! operator's own sanitizer), and the commits the load added are counted
//! with `git rev-list`.

use std::collections::BTreeMap;

use gitops_reverser::sanitize::{ResourceRef, join_base, normalize_base_folder, sanitize};
use serde::Serialize;

use super::objects::{self, target_of};
use super::repos;
use crate::cluster::branch_of;
use crate::env::Env;
use crate::remote::Mirror;

#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// Files missing or differing, plus files of no object.
    pub lost: usize,
    pub missing: usize,
    pub differing: usize,
    pub extra: usize,
    pub objects: usize,
    pub examples: Vec<String>,
    /// Commits on the remote branches after the initial sync's tips.
    pub commits_on_remote: usize,
}

fn configmaps_ref() -> ResourceRef {
    ResourceRef {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
        namespaced: true,
    }
}

/// Per branch, path → the sanitized YAML of each object's last value.
fn expected(last: &[u64], branches: usize) -> Result<Vec<BTreeMap<String, Vec<u8>>>, String> {
    let rref = configmaps_ref();
    let mut files = vec![BTreeMap::new(); branches];
    for (j, seq) in last.iter().enumerate() {
        let target = target_of(j, branches);
        let value = objects::decode(&objects::event_text(j, *seq, branches))?;
        let sanitized = sanitize(&value, &rref).map_err(|e| format!("sanitizing o-{j}: {e}"))?;
        let base = normalize_base_folder(&format!("t{target}"));
        files[target].insert(join_base(&base, &sanitized.path), sanitized.yaml);
    }
    Ok(files)
}

/// `mirrors[k]`: repository `k`'s; `last[j]`: the last value given to object
/// `o-<j>`; `synced[i]`: branch `b<i>`'s tip after the initial sync.
pub fn verify(env: &Env, mirrors: &[Mirror], last: &[u64], synced: &[String]) -> Result<Verified, String> {
    let branches = synced.len();
    let mut v = Verified {
        lost: 0,
        missing: 0,
        differing: 0,
        extra: 0,
        objects: last.len(),
        examples: Vec::new(),
        commits_on_remote: 0,
    };
    for mirror in mirrors {
        mirror.fetch()?;
    }
    for (i, files) in expected(last, branches)?.iter().enumerate() {
        let mirror = repos::of_branch(mirrors, i);
        let actual = mirror.files(&branch_of(i), &format!("t{i}"))?;
        for (path, bytes) in files {
            match actual.get(path) {
                None => {
                    v.missing += 1;
                    v.examples.push(format!("missing {}:{path}", branch_of(i)));
                }
                Some(got) if got != bytes => {
                    v.differing += 1;
                    v.examples.push(format!("differs {}:{path}", branch_of(i)));
                }
                Some(_) => {}
            }
        }
        for path in actual.keys().filter(|p| !files.contains_key(*p)) {
            v.extra += 1;
            v.examples.push(format!("extra {}:{path}", branch_of(i)));
        }
        let range = format!("{}..{}", synced[i], branch_of(i));
        let count = env.git(mirror.dir(), &["rev-list", "--count", &range])?;
        v.commits_on_remote +=
            count.trim().parse::<usize>().map_err(|e| format!("rev-list --count {range}: {e}"))?;
    }
    v.examples.truncate(10);
    v.lost = v.missing + v.differing + v.extra;
    Ok(v)
}
