//! How a watch gets its objects before it follows changes: a streaming list
//! (`sendInitialEvents`, served from the API server's watch cache) or pages
//! of 500 read from etcd. Listing 100,000 objects took 49 s streamed and
//! 161 s paged on the loaded test machine (docs/performance.md), and paged
//! reads load etcd and the API server far more.

/// The `--initial-list` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialList {
    /// Streaming where the API server enables it by default (1.32, and
    /// 1.34 or later), pages elsewhere or when the version is unknown.
    #[default]
    Auto,
    Streaming,
    Paged,
}

/// Whether to stream the initial list (pure). Kubernetes 1.33 shipped the
/// WatchList gate off, and servers before 1.32 may not have it, so `Auto`
/// streams only on versions known to serve it by default.
pub fn streams(setting: InitialList, server: Option<(u32, u32)>) -> bool {
    match setting {
        InitialList::Streaming => true,
        InitialList::Paged => false,
        InitialList::Auto => matches!(server, Some((1, 32))) || server.is_some_and(|v| v >= (1, 34)),
    }
}

/// (major, minor) from the API server's `/version` fields; providers append
/// suffixes such as `31+`.
pub fn parse_version(major: &str, minor: &str) -> Option<(u32, u32)> {
    let digits = |s: &str| s.trim().trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok();
    Some((digits(major)?, digits(minor)?))
}

/// The API server's version, if it answers.
pub async fn server_version(client: &kube::Client) -> Option<(u32, u32)> {
    let info = client.apiserver_version().await.ok()?;
    parse_version(&info.major, &info.minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_streams_only_where_the_server_enables_it_by_default() {
        assert!(streams(InitialList::Auto, Some((1, 35))));
        assert!(streams(InitialList::Auto, Some((1, 34))));
        assert!(streams(InitialList::Auto, Some((1, 32))));
        assert!(!streams(InitialList::Auto, Some((1, 33))), "1.33 shipped the gate off");
        assert!(!streams(InitialList::Auto, Some((1, 31))));
        assert!(!streams(InitialList::Auto, None));
        assert!(streams(InitialList::Streaming, Some((1, 20))));
        assert!(!streams(InitialList::Paged, Some((1, 35))));
    }

    #[test]
    fn versions_with_provider_suffixes_parse() {
        assert_eq!(parse_version("1", "35"), Some((1, 35)));
        assert_eq!(parse_version("1", "31+"), Some((1, 31)));
        assert_eq!(parse_version("", "31"), None);
    }
}
