//! The one error type of the remote layer, and how git's stderr becomes one.
//!
//! In: a failed git run (its stderr) and the credentials in use. Out: a
//! [`RemoteError`] whose variant decides the condition reason and whose message
//! quotes git, cleaned: secrets, URL userinfo, temp paths, control characters and
//! git's generic hints removed. Matching is on English text (`LC_ALL=C`), covering
//! soft-serve, GitHub, GitLab, Gitea/Forgejo, OpenSSH and curl (OpenSSL and GnuTLS).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::url::strip_userinfo;
use crate::api::Reason;
use crate::worker::credentials::{Auth, Credentials, CredentialsError};
use crate::worker::limits::TooLarge;

/// The git operation that failed, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    LsRemote,
    Fetch,
    DryRunPush,
    Push,
    /// Local work in the probe or target repository (init, commit-tree, rev-parse).
    Local,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LsRemote => "ls-remote",
            Self::Fetch => "fetch",
            Self::DryRunPush => "push --dry-run",
            Self::Push => "push",
            Self::Local => "local",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("invalid remote configuration: {0}")]
    InvalidConfiguration(String),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("git {op} {url}: authentication failed: {detail}; {hint}")]
    AuthenticationFailed { op: Op, url: String, detail: String, hint: String },
    #[error(
        "git {op} {url}: the credentials can read the repository but lack write access: {detail}; {hint}"
    )]
    NoWriteAccess { op: Op, url: String, detail: String, hint: String },
    #[error("git {op} {url}: the repository does not exist or these credentials cannot see it: {detail}")]
    RepositoryNotFound { op: Op, url: String, detail: String },
    #[error("git {op} {url}: the server's TLS certificate is not trusted: {detail}; {hint}")]
    UntrustedCertificate { op: Op, url: String, detail: String, hint: String },
    #[error("git {op} {url}: the server's SSH host key is not in `known_hosts`: {detail}; {hint}")]
    HostKeyRejected { op: Op, url: String, detail: String, hint: String },
    #[error("git {op} {url}: cannot reach the server: {detail}")]
    Network { op: Op, url: String, detail: String },
    #[error("git {op} {url}: no answer within {after:?}; the git process was killed")]
    Timeout { op: Op, url: String, after: Duration },
    #[error("git {op} {url} failed: {detail}")]
    Git { op: Op, url: String, detail: String },
    #[error("git {op} {url}: could not run git: {source}")]
    Io { op: Op, url: String, source: std::io::Error },
    /// The server sent more than a limit allows; git was killed and what it
    /// had received removed.
    #[error("git {op} {url}: stopped: {limit}")]
    TooLarge { op: Op, url: String, limit: TooLarge },
}

impl RemoteError {
    /// The condition reason this failure stands for.
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidConfiguration(_) | Self::Credentials(_) => Reason::InvalidConfiguration,
            Self::AuthenticationFailed { .. } | Self::NoWriteAccess { .. } => Reason::AuthenticationFailed,
            Self::RepositoryNotFound { .. } => Reason::RepositoryNotFound,
            Self::UntrustedCertificate { .. }
            | Self::HostKeyRejected { .. }
            | Self::Network { .. }
            | Self::Timeout { .. } => Reason::NetworkError,
            Self::Git { .. } | Self::Io { .. } => Reason::GitOperationFailed,
            Self::TooLarge { .. } => Reason::RemoteTooLarge,
        }
    }
}

/// What a failure's stderr says, before it becomes a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    HostKey,
    Certificate,
    NotFound,
    Auth,
    Network,
    Other,
}

const HOST_KEY: &[&str] =
    &["host key verification failed", "remote host identification has changed", "host key is known for"];
const CERTIFICATE: &[&str] = &[
    "server certificate verification failed", // curl + GnuTLS
    "ssl certificate problem",                // curl + OpenSSL
    "certificate verify failed",
    "unable to get local issuer certificate",
    "self signed certificate",
    "self-signed certificate",
    "certificate has expired",
    "no alternative certificate subject name matches",
    "certificate is not trusted",
];
const NOT_FOUND: &[&str] = &[
    "invalid repo",         // soft-serve over SSH
    "repository not found", // GitHub, Bitbucket
    "could not be found",   // GitLab
    "does not exist",       // Gitea/Forgejo, Azure DevOps
    "does not appear to be a git repository",
];
const AUTH: &[&str] = &[
    "authentication failed", // git over HTTP(S) on 401
    "could not read username",
    "could not read password",
    "permission denied", // OpenSSH "(publickey)", GitHub, Gitea
    "not authorized",    // soft-serve
    "unauthorized",
    "access denied", // GitLab "HTTP Basic: Access denied"
    "invalid username or password",
    "invalid credentials",
    "not allowed to push", // GitLab
    "write access",        // GitLab/GitHub deploy keys
    "marked as read only", // GitHub read-only deploy key
    "is read-only",
];
const NETWORK: &[&str] = &[
    "could not resolve host", // curl and ssh ("hostname")
    "name or service not known",
    "temporary failure in name resolution",
    "connection refused",
    "couldn't connect to server",
    "failed to connect to",
    "timed out",
    "network is unreachable",
    "no route to host",
    "connection reset",
    "connection closed by",
    "kex_exchange_identification",
    "broken pipe",
    "the remote end hung up unexpectedly",
    "early eof",
    "unexpected disconnect",
    "rpc failed; curl",
    "gnutls_handshake() failed",
    "ssl_connect",
    "tls connect error",
    "ssl routines",
    "wrong version number",
];

/// Sorts a failure's stderr into a class; the order settles overlaps (a missing
/// repository often also mentions access rights; a hang-up follows many errors).
pub(super) fn classify(stderr: &str) -> Class {
    let text = stderr.to_ascii_lowercase();
    let any = |patterns: &[&str]| patterns.iter().any(|pattern| text.contains(pattern));
    if any(HOST_KEY) {
        return Class::HostKey;
    }
    if any(CERTIFICATE) {
        return Class::Certificate;
    }
    // "fatal: repository 'URL' not found" (HTTP 404), not "ssh: not found".
    if any(NOT_FOUND) || (text.contains("repository '") && text.contains("' not found")) {
        return Class::NotFound;
    }
    if let Some(class) = http_status_class(&text) {
        return class;
    }
    if any(AUTH) {
        return Class::Auth;
    }
    if any(NETWORK) {
        return Class::Network;
    }
    Class::Other
}

/// curl's "The requested URL returned error: NNN".
fn http_status_class(text: &str) -> Option<Class> {
    let (_, after) = text.split_once("returned error: ")?;
    let code: u16 = after.get(..3)?.parse().ok()?;
    match code {
        401 | 403 => Some(Class::Auth),
        404 => Some(Class::NotFound),
        429 | 500..=599 => Some(Class::Network),
        _ => None,
    }
}

/// git's own generic hints and ssh's banner: noise around the real message.
const NOISE: &[&str] = &[
    "could not read from remote repository",
    "please make sure you have the correct access rights",
    "and the repository exists",
    "failed to push some refs",
    "@@@@@@@@",
    "warning: remote host identification has changed",
    "it is possible that someone is doing",
    "someone could be eavesdropping",
    "it is also possible that a host key",
    "please contact your system administrator",
    "add correct host key in",
    "remove with:",
    "ssh-keygen -f",
];

/// git's stderr made fit for a status message: one line, no secrets, no userinfo,
/// no temp paths, no control characters, no generic hints; at most ~600 characters.
pub(super) fn clean(stderr: &str, credentials: &Credentials, sandbox: &Path) -> String {
    let text = credentials.scrub(stderr);
    let text = strip_userinfo(&text);
    // "Load key '/tmp/x/identity'" reads better as "Load key 'identity'": the Secret key.
    let text = text.replace(&format!("{}/", sandbox.display()), "");
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = strip_control(line);
        let line = line.trim();
        let line = line.strip_prefix("remote:").map(str::trim).unwrap_or(line);
        let lower = line.to_ascii_lowercase();
        if line.is_empty() || NOISE.iter().any(|noise| lower.contains(noise)) {
            continue;
        }
        if lines.last().map(String::as_str) != Some(line) {
            lines.push(line.to_owned());
        }
    }
    let mut detail = lines.join("; ");
    if detail.chars().count() > 600 {
        detail = detail.chars().take(600).collect::<String>() + "…";
    }
    // Once more at the end: the steps above must not have assembled a secret.
    let detail = credentials.scrub(&detail);
    if detail.is_empty() { "git gave no error message".to_owned() } else { detail }
}

/// `line` without ANSI escape sequences (a server's colours) and control characters.
fn strip_control(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            // CSI: parameters and intermediates up to a final byte in '@'..='~'.
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// What to do about an authentication failure, given the credentials in use.
pub(super) fn auth_hint(credentials: &Credentials) -> String {
    let source = credentials.source();
    match credentials.auth() {
        Auth::Anonymous => "the server wants credentials: reference a Secret with `username`/`password` \
                            or `bearerToken`"
            .to_owned(),
        Auth::SshKey(key) if key.passphrase.is_some() => format!(
            "check that the public key of `identity` in {source} is registered with the server and that \
             `password` is its passphrase"
        ),
        Auth::SshKey(_) => {
            format!("check that the public key of `identity` in {source} is registered with the server")
        }
        Auth::Basic { .. } => format!(
            "check `username` and `password` in {source} (a token goes in `password`) and its access to the repository"
        ),
        Auth::Bearer(_) => format!("check that `bearerToken` in {source} is valid, unexpired and has access"),
    }
}

pub(super) fn write_hint(credentials: &Credentials) -> String {
    format!(
        "grant the credentials in {} write access (e.g. a deploy key with write access, or a token \
         with push scope), or use credentials that have it",
        credentials.source()
    )
}

pub(super) fn certificate_hint(credentials: &Credentials) -> String {
    match &credentials.tls().ca {
        Some(_) => format!(
            "check that `ca.crt` in {} holds the CA that signed the server's certificate",
            credentials.source()
        ),
        None => {
            "the system trust store does not trust it: add the CA's certificate to the Secret as `ca.crt`"
                .to_owned()
        }
    }
}

pub(super) fn host_key_hint(credentials: &Credentials) -> String {
    format!(
        "put the server's host key into `known_hosts` of {} after checking its fingerprint out of \
         band; host keys are never trusted on first use",
        credentials.source()
    )
}
