//! Path rules and change planning, before anything touches the object database.
//!
//! In: the caller's [`FileChange`]s. Out: a [`Plan`] of validated, split paths
//! with at most one change per path (the last one wins, as if applied in
//! order) and no path inside another, so the changes are independent of each
//! other and can each be checked against the parent tree alone.

use std::collections::BTreeMap;

use gix::bstr::BStr;
use gix::validate::path::component;

use super::{FileChange, RepoError};

/// What a planned change does to its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    Write(&'a [u8]),
    /// Point the path at a blob the repository already holds.
    Restore(gix::ObjectId),
    Delete,
}

/// One validated change.
#[derive(Debug)]
pub(crate) struct Planned<'a> {
    pub path: &'a str,
    pub components: Vec<&'a str>,
    pub op: Op<'a>,
}

/// Independent changes, sorted by path.
pub(crate) type Plan<'a> = Vec<Planned<'a>>;

// Git's own defaults on Linux: `.git` in any HFS/NTFS disguise is refused
// (as `git fsck` does); Windows-only characters such as ':' stay allowed,
// because Kubernetes names like `system:controller:x` use them.
const RULES: component::Options =
    component::Options { protect_windows: false, protect_hfs: true, protect_ntfs: true };

/// Splits and checks a '/'-separated, repository-relative path.
/// `""` is allowed only if `allow_root` (it means the whole tree).
pub(crate) fn split(path: &str, allow_root: bool) -> Result<Vec<&str>, RepoError> {
    let invalid = |reason| RepoError::InvalidPath { path: path.to_owned(), reason };
    if path.is_empty() {
        return if allow_root { Ok(Vec::new()) } else { Err(invalid("path is empty")) };
    }
    if path.starts_with('/') {
        return Err(invalid("absolute paths are not allowed"));
    }
    if path.contains('\0') {
        return Err(invalid("NUL bytes are not allowed"));
    }
    path.split('/')
        .map(|c| match component(BStr::new(c), None, RULES) {
            Ok(_) => Ok(c),
            Err(component::Error::Empty) => Err(invalid("empty path segment")),
            Err(component::Error::Relative) => Err(invalid("'.' and '..' segments are not allowed")),
            Err(component::Error::DotGitDir) => Err(invalid("'.git' segments are not allowed")),
            Err(_) => Err(invalid("segment is not allowed in a git tree")),
        })
        .collect()
}

/// Validates all changes, keeps the last change per path and refuses
/// changes where one path lies inside another.
pub(crate) fn plan(changes: &[FileChange]) -> Result<Plan<'_>, RepoError> {
    let mut by_path: BTreeMap<&str, Op<'_>> = BTreeMap::new();
    for change in changes {
        let (path, op) = match change {
            FileChange::Write { path, content } => (path.as_str(), Op::Write(content)),
            FileChange::Restore { path, id } => (path.as_str(), Op::Restore(*id)),
            FileChange::Delete { path } => (path.as_str(), Op::Delete),
        };
        split(path, false)?;
        by_path.insert(path, op);
    }
    let plan: Plan<'_> = by_path
        .into_iter()
        .map(|(path, op)| Planned { path, components: path.split('/').collect(), op })
        .collect();
    // Paths starting with `a.path` are contiguous in byte order, so each scan
    // stops at the first path that does not; the component check then tells
    // `a/b` (inside `a`) from `a.b` (a sibling).
    for (i, a) in plan.iter().enumerate() {
        for b in &plan[i + 1..] {
            if !b.path.starts_with(a.path) {
                break;
            }
            if b.components.starts_with(&a.components) {
                return Err(RepoError::PathConflict {
                    path: b.path.to_owned(),
                    reason: format!("it lies inside {:?}, which the same commit also changes", a.path),
                });
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &str) -> FileChange {
        FileChange::Write { path: path.into(), content: b"x".to_vec() }
    }

    #[test]
    fn accepts_nested_relative_paths() {
        assert_eq!(split("a/b.c/d.yaml", false).unwrap(), ["a", "b.c", "d.yaml"]);
        assert_eq!(split("ns/core/configmaps/system:x.yaml", false).unwrap().len(), 4);
        assert!(split("", true).unwrap().is_empty());
    }

    #[test]
    fn rejects_unsafe_paths() {
        for bad in ["", "/a", "a//b", "a/", "../a", "a/./b", ".git/config", "a/.GIT/x", "a\0b", "git~1/x"] {
            let err = split(bad, false).unwrap_err();
            assert!(matches!(err, RepoError::InvalidPath { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("invalid path"), "{err}");
        }
    }

    #[test]
    fn last_change_per_path_wins() {
        let changes = [write("a/x"), FileChange::Delete { path: "a/x".into() }, write("b")];
        let plan = plan(&changes).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!((plan[0].path, plan[0].op), ("a/x", Op::Delete));
        assert_eq!(plan[1].path, "b");
    }

    #[test]
    fn refuses_nested_changes_in_one_commit() {
        let err = plan(&[write("a/b"), write("a"), write("a.b")]).unwrap_err();
        assert!(matches!(err, RepoError::PathConflict { ref path, .. } if path == "a/b"), "{err}");
        // Same prefix without a component boundary is fine.
        plan(&[write("a"), write("ab/c"), write("a-b")]).unwrap();
    }
}
