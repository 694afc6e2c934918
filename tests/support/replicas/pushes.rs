//! The git server's own push log, and who made each push: the pushed tip is
//! always a commit of the pushing replica, whose message ends with a
//! `Replica: <name>` trailer.

use std::collections::BTreeSet;

/// One updated ref, as the server's post-receive hook logged it.
#[derive(Debug, Clone)]
pub struct Push {
    /// Unix ns on the server's clock (this machine's).
    pub at_ns: i128,
    pub repo: String,
    pub branch: String,
    pub old: String,
    pub new: String,
    /// The `Replica:` trailer of `new`, once attributed.
    pub replica: Option<String>,
}

/// The pushes to `repos` (by server-side name), oldest first.
pub fn read(env: &super::super::Env, repos: &BTreeSet<String>) -> Vec<Push> {
    let log = std::fs::read_to_string(env.var("GITENV_PUSHLOG")).unwrap_or_default();
    log.lines().filter_map(parse_line).filter(|p| repos.contains(&p.repo)).collect()
}

fn parse_line(line: &str) -> Option<Push> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 7 {
        return None;
    }
    let (secs, nanos) = f[0].split_once('.').unwrap_or((f[0], "0"));
    let at_ns =
        secs.parse::<i128>().ok()? * 1_000_000_000 + format!("{nanos:0<9}")[..9].parse::<i128>().ok()?;
    Some(Push {
        at_ns,
        repo: f[1].to_owned(),
        branch: f[4].strip_prefix("refs/heads/")?.to_owned(),
        old: f[5].to_owned(),
        new: f[6].to_owned(),
        replica: None,
    })
}

/// A short "who pushed where" table for a failing test's message.
pub fn summary(pushes: &[Push]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for p in pushes {
        *counts
            .entry((p.repo.as_str(), p.branch.as_str(), p.replica.as_deref().unwrap_or("?")))
            .or_insert(0) += 1;
    }
    counts.iter().map(|((r, b, who), n)| format!("{r}/{b} by {who}: {n}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_push_log_line() {
        let p = parse_line("1795710208.060630426 r1 rw ssh refs/heads/b03 aaa bbb").unwrap();
        assert_eq!(p.at_ns, 1_795_710_208_060_630_426);
        assert_eq!((p.repo.as_str(), p.branch.as_str(), p.new.as_str()), ("r1", "b03", "bbb"));
    }
}
