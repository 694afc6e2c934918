//! Secret data → git credentials (pure, no I/O).
//!
//! In: the name and `data` of a Kubernetes Secret, and the repository URL.
//! Out: [`Credentials`] (how git must authenticate, and the bytes it needs), or a
//! [`CredentialsError`] that names the Secret, the key, and how to fix it.
//!
//! The keys are the ones Flux's source-controller reads, so one Secret serves both:
//! - `ssh://`: `identity` (private key) and `known_hosts` (required: no trust on
//!   first use), optional `password` (the identity's passphrase);
//! - `https://`/`http://`: `bearerToken`, else `username` with optional `password`;
//! - `https://`: `ca.crt` (or the legacy `caFile`), `tls.crt` + `tls.key` (mTLS).
//!
//! As in Flux, keys that do not apply to the URL's transport are ignored, and
//! `bearerToken` wins over `username`/`password`. Every credential value is held in
//! a [`Secret`], whose `Debug`/`Display` print `[redacted]`.

mod parse;
mod secret;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;

use crate::api::Reason;
pub use secret::Secret;

/// Whether a password or token may cross the network unencrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cleartext {
    Refuse,
    Allow,
}

/// The transport a repository URL selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Ssh,
    Https,
    Http,
}

impl Transport {
    /// The transport of `url`, from its scheme (`ssh://`, `https://`, `http://`).
    pub fn of_url(url: &str) -> Result<Self, CredentialsError> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("ssh") => Ok(Self::Ssh),
            Some("https") => Ok(Self::Https),
            Some("http") => Ok(Self::Http),
            // Echo only a short, plain scheme: the rest of the URL may hold userinfo.
            Some(other) if other.len() <= 16 && other.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Err(CredentialsError::UnsupportedUrl { scheme: other.to_owned() })
            }
            _ => Err(CredentialsError::UnsupportedUrl { scheme: String::new() }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::Https => "https",
            Self::Http => "http",
        }
    }
}

/// How git authenticates to the repository, and the TLS material it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The Secret these came from, for error messages; `None` = no Secret.
    secret_name: Option<String>,
    transport: Transport,
    auth: Auth,
    tls: Tls,
}

/// The authentication method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No credentials (a public repository over HTTP(S)).
    Anonymous,
    SshKey(SshKey),
    /// HTTP basic auth; `password` is empty when the Secret has only `username`.
    Basic {
        username: Secret,
        password: Secret,
    },
    /// Sent as `Authorization: Bearer <token>`.
    Bearer(Secret),
}

/// An SSH identity and the host keys the server must present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshKey {
    /// The private key, normalised to LF line ends with a final newline (OpenSSH needs it).
    pub identity: Secret,
    /// The identity's passphrase (the Secret's `password`), if any.
    pub passphrase: Option<Secret>,
    /// Whether the identity is encrypted, as far as its armour tells.
    pub encrypted: bool,
    /// OpenSSH known_hosts lines; not secret.
    pub known_hosts: String,
}

/// TLS material for `https://` (empty for other transports).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM CA bundle to trust instead of the system bundle.
    pub ca: Option<String>,
    pub client: Option<ClientCert>,
}

/// A client certificate for mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// PEM certificate chain; not secret.
    pub cert: String,
    pub key: Secret,
}

impl Credentials {
    /// No Secret: anonymous HTTP(S). An `ssh://` URL always needs a Secret.
    pub fn anonymous(url: &str) -> Result<Self, CredentialsError> {
        match Transport::of_url(url)? {
            Transport::Ssh => Err(CredentialsError::SecretRequired),
            transport => {
                Ok(Self { secret_name: None, transport, auth: Auth::Anonymous, tls: Tls::default() })
            }
        }
    }

    /// Reads the credentials for `url` from a Secret's `data`, the way Flux
    /// does; a password or token is never sent over http://.
    pub fn from_secret_data(
        secret_name: &str,
        data: &BTreeMap<String, ByteString>,
        url: &str,
    ) -> Result<Self, CredentialsError> {
        Self::from_secret(secret_name, data, url, Cleartext::Refuse)
    }

    /// [`Self::from_secret_data`], where `cleartext` says whether a password
    /// or token may go over http:// (a GitProvider's `insecure: true`).
    pub fn from_secret(
        secret_name: &str,
        data: &BTreeMap<String, ByteString>,
        url: &str,
        cleartext: Cleartext,
    ) -> Result<Self, CredentialsError> {
        let transport = Transport::of_url(url)?;
        let reader = parse::Reader { secret: secret_name, data };
        let (auth, tls) = match transport {
            Transport::Ssh => (Auth::SshKey(reader.ssh_key()?), Tls::default()),
            Transport::Https => (reader.http_auth()?, reader.tls()?),
            // Plain HTTP has no TLS to configure; Flux ignores these keys there too.
            Transport::Http => match reader.http_auth()? {
                // Anyone on the path would read them (Flux allows it; we only
                // when the provider says so).
                Auth::Basic { .. } | Auth::Bearer(_) if cleartext == Cleartext::Refuse => {
                    return Err(CredentialsError::CleartextHttp { secret: secret_name.to_owned() });
                }
                auth => (auth, Tls::default()),
            },
        };
        Ok(Self { secret_name: Some(secret_name.to_owned()), transport, auth, tls })
    }

    pub fn secret_name(&self) -> Option<&str> {
        self.secret_name.as_deref()
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// Every secret value, for scrubbing text that leaves this layer.
    pub(crate) fn secrets(&self) -> Vec<&Secret> {
        let mut secrets = match &self.auth {
            Auth::Anonymous => vec![],
            Auth::SshKey(key) => std::iter::once(&key.identity).chain(&key.passphrase).collect(),
            // A short user name (`git`, `ro`) is an ordinary word, and scrubbing it
            // would garble messages; a long one may be a token used as user name.
            Auth::Basic { username, password } if username.expose().len() < 8 => vec![password],
            Auth::Basic { username, password } => vec![username, password],
            Auth::Bearer(token) => vec![token],
        };
        secrets.extend(self.tls.client.as_ref().map(|client| &client.key));
        secrets
    }

    /// `text` with every secret value replaced by `[redacted]`: a second line of
    /// defence for messages that quote git, which is never handed a secret in argv.
    pub fn scrub(&self, text: &str) -> String {
        let mut fragments: Vec<&str> = self.secrets().into_iter().flat_map(Secret::fragments).collect();
        // Longest first, so a value is not half-replaced through a shorter one inside it.
        fragments.sort_by_key(|fragment| std::cmp::Reverse(fragment.len()));
        fragments.into_iter().fold(text.to_owned(), |text, fragment| text.replace(fragment, "[redacted]"))
    }

    /// "Secret `name`" or "no Secret", for messages.
    pub(crate) fn source(&self) -> String {
        match &self.secret_name {
            Some(name) => format!("Secret `{name}`"),
            None => "no Secret (anonymous access)".to_owned(),
        }
    }
}

/// What is wrong with a Secret's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Missing,
    Empty,
    NotUtf8,
    Invalid(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("is missing"),
            Self::Empty => f.write_str("is empty"),
            Self::NotUtf8 => f.write_str("is not valid UTF-8"),
            Self::Invalid(why) => write!(f, "is malformed: {why}"),
        }
    }
}

/// Why a Secret cannot be used. The message names the Secret and key, never a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("Secret `{secret}`: key `{key}` {problem}; {fix}")]
    Key { secret: String, key: &'static str, problem: Problem, fix: &'static str },
    #[error("unsupported repository URL scheme `{scheme}`: use ssh://, https:// or http://")]
    UnsupportedUrl { scheme: String },
    #[error(
        "an ssh:// URL needs a Secret with `identity` and `known_hosts`; set the secret reference \
         or use an https:// URL"
    )]
    SecretRequired,
    #[error(
        "Secret `{secret}` holds a username, password or bearerToken, which would cross the network \
         in clear over http://; use an https:// URL, a Secret without them for an anonymous server, \
         or (GitProvider only) spec.insecure: true to accept the risk"
    )]
    CleartextHttp { secret: String },
}

impl CredentialsError {
    /// The user must change the Secret or the URL.
    pub fn reason(&self) -> Reason {
        Reason::InvalidConfiguration
    }

    /// The Secret key at fault, if one is.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            Self::Key { key, .. } => Some(key),
            Self::UnsupportedUrl { .. } | Self::SecretRequired | Self::CleartextHttp { .. } => None,
        }
    }
}
