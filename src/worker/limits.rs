//! Bounds on what one remote may make a worker receive and read.
//!
//! A GitTarget's server is chosen by a tenant who may not be trusted, and the
//! data volume is shared by every branch of the replica. In: the operator's
//! flags, and sizes and counts as the fetch and the tree walk see them. Out:
//! `Ok`, or a [`TooLarge`] that names the limit, its value and the flag that
//! raises it (condition reason `RemoteTooLarge`). The checks are pure; the
//! remote layer (fetch) and the repository layer (tree walk) apply them.

use std::fmt;

/// One of the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Bytes of the pack one fetch receives.
    FetchSize,
    /// Objects in the pack one fetch receives.
    PackObjects,
    /// Entries (files, folders, submodules) walked when listing a branch.
    TreeEntries,
    /// Bytes of one path in the branch.
    PathLength,
    /// Bytes of one object (file or folder listing) read from the branch.
    FileSize,
}

impl Limit {
    pub const ALL: [Limit; 5] =
        [Self::FetchSize, Self::PackObjects, Self::TreeEntries, Self::PathLength, Self::FileSize];

    /// The `run` flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Self::FetchSize => "--max-fetch-size",
            Self::PackObjects => "--max-pack-objects",
            Self::TreeEntries => "--max-tree-entries",
            Self::PathLength => "--max-path-length",
            Self::FileSize => "--max-file-size",
        }
    }

    /// What is counted, after "more than N".
    fn counted(self) -> &'static str {
        match self {
            Self::FetchSize => "received by one fetch",
            Self::PackObjects => "objects in one fetched pack",
            Self::TreeEntries => "files and folders",
            Self::PathLength => "bytes in one path",
            Self::FileSize => "in one file",
        }
    }
}

/// The limits in force; [`Default`] holds the flags' defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub fetch_size: u64,
    pub pack_objects: u64,
    pub tree_entries: u64,
    pub path_length: u64,
    pub file_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fetch_size: DEFAULT_MAX_FETCH_SIZE,
            pack_objects: DEFAULT_MAX_PACK_OBJECTS,
            tree_entries: DEFAULT_MAX_TREE_ENTRIES,
            path_length: DEFAULT_MAX_PATH_LENGTH,
            file_size: DEFAULT_MAX_FILE_SIZE,
        }
    }
}

/// 256 MiB: a mirrored cluster's branch is YAML, megabytes even for large
/// clusters; several such fetches fit the chart's 2 Gi volume at once.
pub const DEFAULT_MAX_FETCH_SIZE: u64 = 256 << 20;
/// git's `index-pack` keeps about 100 bytes per object in memory.
pub const DEFAULT_MAX_PACK_OBJECTS: u64 = 1_000_000;
/// About 30 MB of listed paths and ids; ten times a 10,000-object branch
/// with its folders.
pub const DEFAULT_MAX_TREE_ENTRIES: u64 = 200_000;
/// Linux's `PATH_MAX`.
pub const DEFAULT_MAX_PATH_LENGTH: u64 = 4096;
/// Kubernetes objects are at most about 1.5 MiB (etcd's request limit).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 16 << 20;

impl Limits {
    pub fn max(&self, limit: Limit) -> u64 {
        match limit {
            Limit::FetchSize => self.fetch_size,
            Limit::PackObjects => self.pack_objects,
            Limit::TreeEntries => self.tree_entries,
            Limit::PathLength => self.path_length,
            Limit::FileSize => self.file_size,
        }
    }

    /// Whether `value` stays within `limit`.
    pub fn check(&self, limit: Limit, value: u64) -> Result<(), TooLarge> {
        let max = self.max(limit);
        if value <= max { Ok(()) } else { Err(TooLarge { limit, max, at: None }) }
    }

    /// [`Self::check`] of something found at `path` in the branch.
    pub fn check_at(&self, limit: Limit, value: u64, path: &str) -> Result<(), TooLarge> {
        self.check(limit, value).map_err(|e| e.at(path))
    }
}

/// A remote past one of the [`Limits`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TooLarge {
    pub limit: Limit,
    pub max: u64,
    /// Where in the branch, shortened for messages.
    pub at: Option<String>,
}

/// Longest path quoted in a message.
const QUOTED_PATH: usize = 120;

impl TooLarge {
    fn at(mut self, path: &str) -> Self {
        let mut quoted: String = path.chars().take(QUOTED_PATH).collect();
        if quoted.len() < path.len() {
            quoted.push('…');
        }
        self.at = Some(quoted);
        self
    }
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the remote branch has more than {} {}",
            amount(self.limit, self.max),
            self.limit.counted()
        )?;
        if let Some(path) = &self.at {
            write!(f, " (at {path:?})")?;
        }
        write!(f, "; the operator's {} allows at most that", self.limit.flag())
    }
}

/// `max` as a reader wants it: bytes in binary units where they divide evenly.
fn amount(limit: Limit, max: u64) -> String {
    if !matches!(limit, Limit::FetchSize | Limit::FileSize) {
        return max.to_string();
    }
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if max >= 1 << shift && max.is_multiple_of(1 << shift) {
            return format!("{} {unit}", max >> shift);
        }
    }
    format!("{max} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits { fetch_size: 1 << 20, pack_objects: 10, tree_entries: 5, path_length: 8, file_size: 100 }
    }

    #[test]
    fn each_limit_allows_its_value_and_refuses_one_more() {
        let limits = small();
        for limit in Limit::ALL {
            let max = limits.max(limit);
            assert_eq!(limits.check(limit, max), Ok(()), "{limit:?}");
            let error = limits.check(limit, max + 1).unwrap_err();
            assert_eq!((error.limit, error.max), (limit, max));
        }
    }

    #[test]
    fn the_message_names_the_limit_its_value_and_the_flag() {
        let limits = small();
        let fetch = limits.check(Limit::FetchSize, 2 << 20).unwrap_err().to_string();
        assert_eq!(
            fetch,
            "the remote branch has more than 1 MiB received by one fetch; the operator's \
             --max-fetch-size allows at most that"
        );
        let entries = limits.check(Limit::TreeEntries, 6).unwrap_err().to_string();
        assert!(entries.contains("more than 5 files and folders") && entries.contains("--max-tree-entries"));
        let file = limits.check_at(Limit::FileSize, 101, "ns/big.yaml").unwrap_err().to_string();
        assert!(file.contains("more than 100 bytes in one file (at \"ns/big.yaml\")"), "{file}");
    }

    #[test]
    fn a_long_path_is_shortened_in_the_message() {
        let path = "a/".repeat(5000);
        let error = small().check_at(Limit::PathLength, path.len() as u64, &path).unwrap_err();
        assert!(error.to_string().len() < 400, "{error}");
        assert!(error.at.unwrap().ends_with('…'));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let limits = Limits::default();
        assert_eq!(limits.fetch_size, 256 * 1024 * 1024);
        assert_eq!(limits.pack_objects, 1_000_000);
        assert_eq!(limits.tree_entries, 200_000);
        assert_eq!(limits.path_length, 4096);
        assert_eq!(limits.file_size, 16 * 1024 * 1024);
    }
}
