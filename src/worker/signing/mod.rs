//! Commit signing keys (pure, no I/O): bytes in, armored signature out.
//!
//! In: the name and `data` of the Secret a GitProvider's `signingKey` names,
//! and its optional format. Out: a [`SigningKey`] that signs a commit's bytes
//! the way `git commit -S` does, checks such a signature, and tells the public
//! key to register with the git host; or a [`SigningError`] that names the
//! Secret and key at fault, never a value.
//!
//! The Secret's keys:
//! - OpenPGP: `git.asc`, the armored private key (as Flux's
//!   ImageUpdateAutomation reads it), optional `passphrase`;
//! - SSH: `identity`, the OpenSSH private key (the file `ssh-keygen` writes),
//!   optional `passphrase`.
//!
//! Keys are decrypted once, when read: a wrong passphrase is reported then,
//! and no passphrase is kept. Private material is wiped on drop by the key
//! crates; `Debug` prints only the public half.

mod openpgp;
mod ssh;
#[cfg(test)]
pub(crate) mod testkeys;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;

use crate::api::Reason;
pub use crate::worker::credentials::Problem;

/// The Secret key of an armored OpenPGP private key (Flux's name).
pub const OPENPGP_KEY: &str = "git.asc";
/// The Secret key of an OpenSSH private key.
pub const SSH_KEY: &str = "identity";
/// The Secret key of the private key's passphrase, for either format.
pub const PASSPHRASE_KEY: &str = "passphrase";

/// The signature format, as git's `gpg.format` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Ssh,
    OpenPgp,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::OpenPgp => "openpgp",
        }
    }

    /// The Secret key that holds a private key of this format.
    fn secret_key(self) -> &'static str {
        match self {
            Self::Ssh => SSH_KEY,
            Self::OpenPgp => OPENPGP_KEY,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A private key that signs commits, decrypted and checked.
#[derive(Clone)]
pub struct SigningKey {
    inner: Inner,
    /// What the user registers with the git host (see [`SigningKey::public_key`]).
    public_key: Option<String>,
    fingerprint: String,
}

#[derive(Clone)]
// Boxed: one key per provider, moved around inside settings.
enum Inner {
    Ssh(Box<ssh::Key>),
    OpenPgp(Box<openpgp::Key>),
}

impl SigningKey {
    /// Reads the signing key from a Secret's `data`. `format` picks the key
    /// to read; without it, the one present decides.
    pub fn from_secret_data(
        secret: &str,
        data: &BTreeMap<String, ByteString>,
        format: Option<Format>,
    ) -> Result<Self, SigningError> {
        let key_error = |key: &'static str, problem: Problem, fix: &'static str| SigningError::Key {
            secret: secret.to_owned(),
            key,
            problem,
            fix,
        };
        let format = match format {
            Some(format) => format,
            None => match (data.contains_key(SSH_KEY), data.contains_key(OPENPGP_KEY)) {
                (true, false) => Format::Ssh,
                (false, true) => Format::OpenPgp,
                (true, true) => return Err(SigningError::Ambiguous { secret: secret.to_owned() }),
                (false, false) => return Err(SigningError::NoKey { secret: secret.to_owned() }),
            },
        };
        let key = format.secret_key();
        let fix = match format {
            Format::Ssh => FIX_SSH,
            Format::OpenPgp => FIX_OPENPGP,
        };
        let text = |key: &'static str, fix: &'static str| -> Result<Option<&str>, SigningError> {
            match data.get(key) {
                None => Ok(None),
                Some(ByteString(bytes)) => {
                    std::str::from_utf8(bytes).map(Some).map_err(|_| key_error(key, Problem::NotUtf8, fix))
                }
            }
        };
        let private = match text(key, fix)? {
            None => return Err(key_error(key, Problem::Missing, fix)),
            Some(text) if text.trim().is_empty() => return Err(key_error(key, Problem::Empty, fix)),
            Some(text) => text,
        };
        // Like `echo pass > file`: one trailing newline is not part of it.
        let passphrase = text(PASSPHRASE_KEY, FIX_PASSPHRASE)?
            .map(|p| p.strip_suffix('\n').map(|p| p.strip_suffix('\r').unwrap_or(p)).unwrap_or(p))
            .filter(|p| !p.is_empty());
        let parsed = match format {
            Format::Ssh => Self::ssh(private, passphrase),
            Format::OpenPgp => Self::openpgp(private, passphrase),
        };
        parsed.map_err(|error| error.in_secret(secret, key))
    }

    /// An OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub fn ssh(pem: &str, passphrase: Option<&str>) -> Result<Self, SigningError> {
        let key = ssh::Key::parse(pem, passphrase)?;
        let (public_key, fingerprint) = (key.public_key()?, key.fingerprint());
        Self { inner: Inner::Ssh(Box::new(key)), public_key: Some(public_key), fingerprint }.probed()
    }

    /// An armored OpenPGP private key (`-----BEGIN PGP PRIVATE KEY BLOCK-----`).
    pub fn openpgp(armored: &str, passphrase: Option<&str>) -> Result<Self, SigningError> {
        let key = openpgp::Key::parse(armored, passphrase)?;
        let fingerprint = key.fingerprint();
        Self { inner: Inner::OpenPgp(Box::new(key)), public_key: None, fingerprint }.probed()
    }

    /// A key that cannot sign (an algorithm the crates lack) is refused when
    /// it is read, not at the first commit.
    fn probed(self) -> Result<Self, SigningError> {
        let probe = b"gitops-reverser signing key probe\n";
        let signature = self.sign(probe)?;
        self.verify(probe, signature.as_bytes())?;
        Ok(self)
    }

    pub fn format(&self) -> Format {
        match self.inner {
            Inner::Ssh(_) => Format::Ssh,
            Inner::OpenPgp(_) => Format::OpenPgp,
        }
    }

    /// The public key in OpenSSH form (`ssh-ed25519 AAAA… comment`), which
    /// git hosts and `allowed_signers` take; `None` for OpenPGP, whose hosts
    /// take the exported public key block (see the fingerprint).
    pub fn public_key(&self) -> Option<&str> {
        self.public_key.as_deref()
    }

    /// SSH: `SHA256:…`; OpenPGP: the primary key's fingerprint, in hex, as
    /// `gpg --list-keys` shows it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// An armored detached signature over `payload`, for a commit's `gpgsig`
    /// header: `-----BEGIN SSH SIGNATURE-----` (namespace "git", as
    /// `ssh-keygen -Y sign -n git` makes) or `-----BEGIN PGP SIGNATURE-----`.
    pub fn sign(&self, payload: &[u8]) -> Result<String, SigningError> {
        match &self.inner {
            Inner::Ssh(key) => key.sign(payload),
            Inner::OpenPgp(key) => key.sign(payload),
        }
    }

    /// Checks that `signature` (armored) is this key's signature over `payload`.
    pub fn verify(&self, payload: &[u8], signature: &[u8]) -> Result<(), SigningError> {
        match &self.inner {
            Inner::Ssh(key) => key.verify(payload, signature),
            Inner::OpenPgp(key) => key.verify(payload, signature),
        }
    }
}

// The same public key is the same key: a re-read Secret that did not
// change needs no new worker.
impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.format() == other.format()
            && self.fingerprint == other.fingerprint
            && self.public_key == other.public_key
    }
}

impl Eq for SigningKey {}

// Only the public half: the private key stays out of every log line.
impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("format", &self.format())
            .field("fingerprint", &self.fingerprint)
            .field("private", &format_args!("[redacted]"))
            .finish()
    }
}

const FIX_SSH: &str = "store the OpenSSH private key (the file `ssh-keygen -t ed25519 -f signing` writes) \
     as `identity`, or set signingKey.format";
const FIX_OPENPGP: &str = "store the armored private key (`gpg --armor --export-secret-keys KEYID`) as `git.asc`, or set signingKey.format";
const FIX_PASSPHRASE: &str = "store the key's passphrase as `passphrase`, or store an unencrypted key";

/// Why a signing key cannot be used, or a signature was not made or does
/// not verify. Messages name the Secret and key, never a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("Secret `{secret}`: key `{key}` {problem}; {fix}")]
    Key { secret: String, key: &'static str, problem: Problem, fix: &'static str },
    #[error(
        "Secret `{secret}` holds both `identity` (SSH) and `git.asc` (OpenPGP): set signingKey.format \
         to say which signs"
    )]
    Ambiguous { secret: String },
    #[error(
        "Secret `{secret}` holds no signing key: store an OpenSSH private key as `identity` or an \
         armored OpenPGP private key as `git.asc`"
    )]
    NoKey { secret: String },
    /// The private key is encrypted and no passphrase was given.
    #[error("the {format} private key is encrypted: store its passphrase as `passphrase`")]
    PassphraseMissing { format: Format },
    /// The passphrase does not decrypt the key (the message never holds it).
    #[error("the passphrase does not decrypt the {format} private key: store the right one as `passphrase`")]
    WrongPassphrase { format: Format },
    /// The key text is not a usable private key of its format.
    #[error("not a usable {format} private key: {detail}")]
    Unusable { format: Format, detail: String },
    /// A Secret's key was read, and is wrong in the way `source` says.
    #[error("Secret `{secret}`: key `{key}`: {source}")]
    InSecret {
        secret: String,
        key: &'static str,
        #[source]
        source: Box<SigningError>,
    },
    /// The signing itself failed.
    #[error("cannot sign with the {format} key: {detail}")]
    Sign { format: Format, detail: String },
    /// The signature is not this key's over these bytes.
    #[error("the {format} signature does not verify: {detail}")]
    NotVerified { format: Format, detail: String },
}

impl SigningError {
    /// The user must change the Secret or the provider's signingKey.
    pub fn reason(&self) -> Reason {
        Reason::InvalidConfiguration
    }

    /// The Secret key at fault, if one is.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            Self::Key { key, .. } => Some(key),
            Self::InSecret { key, source, .. } => match **source {
                Self::PassphraseMissing { .. } | Self::WrongPassphrase { .. } => Some(PASSPHRASE_KEY),
                _ => Some(key),
            },
            _ => None,
        }
    }

    fn in_secret(self, secret: &str, key: &'static str) -> Self {
        Self::InSecret { secret: secret.to_owned(), key, source: Box::new(self) }
    }
}
