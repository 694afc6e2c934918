//! Repository URLs, branch names and object ids, checked before they reach git's
//! argv, and userinfo stripped from any text before it reaches a message.
//!
//! In: the URL, branch and ids the caller passes. Out: [`RemoteUrl`] (the URL for
//! git and the one to show), or a plain-text reason for `InvalidConfiguration`.

use crate::worker::credentials::Transport;

/// A checked repository URL.
#[derive(Clone, Debug)]
pub(super) struct RemoteUrl {
    pub transport: Transport,
    /// Handed to git. For `ssh://` without a user, `git@` is added, as Flux does:
    /// otherwise ssh would log in as the operator's local user name.
    pub for_git: String,
    /// Shown in messages and logs: no userinfo at all.
    pub display: String,
    /// `scheme://host[:port]` as written: the only origin git may be given
    /// credentials for (the askpass script and the bearer header check it).
    pub origin: String,
}

/// Checks a repository URL by the rules every provider kind shares
/// (GitProvider and Flux GitRepository alike); the reason never quotes the URL.
pub fn check_url(url: &str) -> Result<(), String> {
    parse(url).map(drop)
}

pub(super) fn parse(url: &str) -> Result<RemoteUrl, String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the repository URL contains whitespace or control characters".into());
    }
    let transport = Transport::of_url(url).map_err(|error| error.to_string())?;
    let (scheme, rest) = url.split_once("://").expect("of_url checked the scheme");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    // A leading `-` would read as an option to ssh or git if it ever reached argv.
    if host_port.is_empty() || host_port.starts_with('-') {
        return Err("the repository URL has no valid host (empty, or starting with `-`)".into());
    }
    // git decodes `%XX` in the host before it names it in a credential prompt;
    // a host name never needs it (IDN hosts are written in punycode).
    if host_port.contains('%') {
        return Err("the repository URL's host must not be percent-encoded".into());
    }
    match (transport, userinfo) {
        (_, Some(userinfo)) if userinfo.contains(':') => {
            return Err("the repository URL contains a password; put credentials in the Secret, \
                        not the URL"
                .into());
        }
        (_, Some(userinfo)) if userinfo.starts_with('-') => {
            return Err("the repository URL has a user name starting with `-`".into());
        }
        (Transport::Https | Transport::Http, Some(_)) => {
            return Err("the repository URL contains user information; put the user name and \
                        password in the Secret (`username`/`password` or `bearerToken`), not the URL"
                .into());
        }
        _ => {}
    }
    let origin = format!("{scheme}://{host_port}");
    let display = format!("{origin}{path}");
    let for_git = match (transport, userinfo) {
        (Transport::Ssh, None) => format!("{scheme}://git@{host_port}{path}"),
        _ => url.to_owned(),
    };
    Ok(RemoteUrl { transport, for_git, display, origin })
}

/// `text` with the userinfo of every `scheme://user:pass@host` removed.
pub fn strip_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '>'))
            .unwrap_or(after.len());
        let authority = &after[..end];
        out.push_str(authority.rsplit_once('@').map_or(authority, |(_, host)| host));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Checks a branch name against git's ref-name rules (`git check-ref-format`).
/// The CRD schema validates it already; this keeps argv safe on its own.
pub(super) fn check_branch(branch: &str) -> Result<(), String> {
    let bad = branch.is_empty()
        || branch == "@"
        || branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with('.')
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch.chars().any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
        || branch.split('/').any(|part| part.starts_with('.') || part.ends_with(".lock"));
    if bad {
        return Err(format!("`{}` is not a valid git branch name", branch.escape_debug()));
    }
    Ok(())
}

/// Checks a full object id (SHA-1 or SHA-256 hex), as git prints them.
pub(super) fn check_oid(what: &str, oid: &str) -> Result<(), String> {
    let ok = matches!(oid.len(), 40 | 64) && oid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !ok {
        return Err(format!("{what} `{}` is not a full lowercase hex object id", oid.escape_debug()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_without_user_gets_git_like_flux() {
        let url = parse("ssh://example.com:2222/org/repo.git").unwrap();
        assert_eq!(url.for_git, "ssh://git@example.com:2222/org/repo.git");
        assert_eq!(url.display, "ssh://example.com:2222/org/repo.git");
        let url = parse("ssh://deploy@example.com/repo.git").unwrap();
        assert_eq!(url.for_git, "ssh://deploy@example.com/repo.git");
        assert_eq!(url.display, "ssh://example.com/repo.git");
    }

    /// Every URL rule, for every scheme; a refusal never echoes the URL
    /// (`tok3n` stands for a credential someone put in it).
    #[test]
    fn url_rules_hold_for_every_scheme() {
        let refused = [
            // A password in userinfo, whatever the scheme.
            ("ssh://u:tok3n@h/r", "password"),
            ("ssh://:tok3n@h/r", "password"),
            ("https://user:tok3n@example.com/r.git", "password"),
            ("http://user:tok3n@example.com/r.git", "password"),
            // Any userinfo over http(s): the user name belongs in the Secret too.
            ("https://tok3n@example.com/r.git", "user information"),
            ("http://tok3n@example.com/r.git", "user information"),
            // A user name or host that git or ssh could read as an option.
            ("ssh://-oProxyCommand=tok3n@h/r", "starting with `-`"),
            ("ssh://-oProxyCommand=tok3n/r", "no valid host"),
            ("ssh://git@-oProxyCommand=tok3n/r", "no valid host"),
            ("https://-tok3n/r.git", "no valid host"),
            ("http://-tok3n/r.git", "no valid host"),
            // No host at all, or one git would decode before naming it.
            ("https:///r.git", "no valid host"),
            ("ssh://git@/r", "no valid host"),
            ("https://ex%61mple.com/tok3n", "percent-encoded"),
            // Whitespace, control characters, other schemes, scp-like syntax.
            ("https://exa mple.com/tok3n", "whitespace"),
            ("https://example.com/tok3n\n", "whitespace"),
            ("ftp://example.com/tok3n", "unsupported"),
            ("file:///tok3n", "unsupported"),
            ("git@github.com:org/tok3n.git", "unsupported"),
        ];
        for (url, why) in refused {
            let error = check_url(url).unwrap_err();
            assert!(error.contains(why), "{url}: {error}");
            assert!(!error.contains("tok3n"), "{url}: the reason echoes the URL: {error}");
        }
        let accepted = [
            "ssh://h/r",
            "ssh://git@h:2222/r.git",
            "ssh://deploy-key@h/r",
            "https://example.com/r.git",
            "https://127.0.0.1:8443/r.git",
            "https://[::1]:8443/r.git",
            "http://example.com/r",
        ];
        for url in accepted {
            assert!(check_url(url).is_ok(), "{url}: {:?}", check_url(url));
        }
    }

    #[test]
    fn the_origin_is_scheme_host_and_port_as_written() {
        assert_eq!(
            parse("https://Git.Example.com:8443/o/r.git").unwrap().origin,
            "https://Git.Example.com:8443"
        );
        assert_eq!(parse("ssh://git@h/r").unwrap().origin, "ssh://h");
        assert_eq!(parse("http://h").unwrap().origin, "http://h");
    }

    #[test]
    fn userinfo_is_stripped_from_text() {
        let text =
            "fatal: unable to access 'https://u:secret@h:1/r.git/': boom; to ssh://git@h/r and http://x@y";
        assert_eq!(
            strip_userinfo(text),
            "fatal: unable to access 'https://h:1/r.git/': boom; to ssh://h/r and http://y"
        );
        assert_eq!(strip_userinfo("no urls here"), "no urls here");
    }

    #[test]
    fn branch_names_follow_git_rules() {
        for good in ["main", "feature/x", "release-1.2", "a@b"] {
            assert!(check_branch(good).is_ok(), "{good}");
        }
        for bad in
            ["", "-x", "a..b", "a b", "a:b", "x/", ".x", "a/.b", "x.lock", "a@{1}", "@", "a\\b", "a//b"]
        {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
        assert!(check_oid("local", &"a".repeat(40)).is_ok());
        assert!(check_oid("local", "-a").is_err());
        assert!(check_oid("local", &"A".repeat(40)).is_err());
    }
}
