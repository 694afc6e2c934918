//! The run's repositories on the git server: branch `b<i>` lives in
//! repository `i mod N`, each verified through a mirror of its own.

use std::path::Path;

use crate::env::Env;
use crate::remote::{Mirror, PushInfo};

pub struct Repo {
    /// Its name on the server.
    name: String,
    pub url: String,
    /// The folder of its mirror in the run's folder.
    mirror: String,
}

/// Creates `count` new repositories for the run `run`.
pub fn create(env: &Env, run: &str, count: usize) -> Result<Vec<Repo>, String> {
    (0..count)
        .map(|k| {
            // One repository keeps the run's name and the mirror's usual folder.
            let suffix = if count == 1 { String::new() } else { format!("-r{k}") };
            let name = format!("{run}{suffix}");
            let url = env.new_repo(&name).map_err(|e| format!("creating repository {name}: {e}"))?;
            Ok(Repo { name, url, mirror: format!("mirror{suffix}") })
        })
        .collect()
}

/// The entry of branch `b<i>`'s repository in a list of one per repository.
pub fn of_branch<T>(per_repo: &[T], i: usize) -> &T {
    &per_repo[i % per_repo.len()]
}

/// One mirror per repository, in the run's folder `dir`.
pub fn mirrors<'a>(env: &'a Env, repos: &[Repo], dir: &Path) -> Vec<Mirror<'a>> {
    repos.iter().map(|r| Mirror::at(env, &r.url, &r.name, dir.join(&r.mirror))).collect()
}

/// Every push to any of the repositories from `since` (server time) on, in time order.
pub fn pushes(mirrors: &[Mirror], since: f64) -> Result<Vec<PushInfo>, String> {
    let mut all = Vec::new();
    for mirror in mirrors {
        all.extend(mirror.pushes()?.into_iter().filter(|p| p.at >= since));
    }
    all.sort_by(|a, b| a.at.total_cmp(&b.at));
    Ok(all)
}
