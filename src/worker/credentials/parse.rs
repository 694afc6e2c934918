//! Reading and checking single Secret keys (pure).
//!
//! In: a Secret's `data` map. Out: checked values (private key, known_hosts,
//! tokens, PEM certificates) or a [`CredentialsError`] naming the key at fault.
//! The checks are shallow on purpose (armour, line structure, character set):
//! enough to name the wrong key up front instead of a vague failure from git later.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use super::{Auth, ClientCert, CredentialsError, Problem, Secret, SshKey, Tls};

const FIX_IDENTITY: &str =
    "store the SSH private key (the file `ssh-keygen -f identity` writes) as `identity`";
const FIX_KNOWN_HOSTS: &str = "store the server's host keys, e.g. from `ssh-keyscan -p PORT HOST` with the \
     fingerprints checked out of band; host keys are never trusted on first use";
const FIX_PASSPHRASE: &str =
    "the identity is encrypted: store its passphrase as `password`, or store an unencrypted key";
const FIX_LINE: &str = "store the value alone, on one line";
const FIX_TOKEN: &str = "store the token alone, as one line of printable ASCII without spaces";
const FIX_USERNAME: &str = "add `username` next to `password` (for token-only servers any name works, e.g. `git`), or use `bearerToken`";
const FIX_CA: &str = "store the PEM certificate(s) of the CA that signed the server's certificate";
const FIX_CLIENT_CERT: &str =
    "store both the PEM client certificate `tls.crt` and its key `tls.key`, or neither";

/// The keys of one Secret, with the Secret's name for error messages.
pub(super) struct Reader<'a> {
    pub secret: &'a str,
    pub data: &'a BTreeMap<String, ByteString>,
}

impl Reader<'_> {
    fn error(&self, key: &'static str, problem: Problem, fix: &'static str) -> CredentialsError {
        CredentialsError::Key { secret: self.secret.to_owned(), key, problem, fix }
    }

    /// The key's text: `None` if absent, `Some("")` if present but empty.
    fn text(&self, key: &'static str, fix: &'static str) -> Result<Option<&str>, CredentialsError> {
        match self.data.get(key) {
            None => Ok(None),
            Some(ByteString(bytes)) => {
                std::str::from_utf8(bytes).map(Some).map_err(|_| self.error(key, Problem::NotUtf8, fix))
            }
        }
    }

    fn required(&self, key: &'static str, fix: &'static str) -> Result<&str, CredentialsError> {
        match self.text(key, fix)? {
            None => Err(self.error(key, Problem::Missing, fix)),
            Some(text) if text.trim().is_empty() => Err(self.error(key, Problem::Empty, fix)),
            Some(text) => Ok(text),
        }
    }

    /// A one-line value; an empty one counts as absent. A single trailing newline
    /// (as `echo value > file` writes) is dropped: git's askpass reading would drop
    /// it anyway, and an HTTP header cannot carry it.
    fn line(&self, key: &'static str, fix: &'static str) -> Result<Option<Secret>, CredentialsError> {
        let Some(text) = self.text(key, fix)? else { return Ok(None) };
        let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(text);
        if text.chars().any(char::is_control) {
            return Err(self.error(key, Problem::Invalid("contains a line break or control character"), fix));
        }
        Ok((!text.is_empty()).then(|| Secret::new(text)))
    }

    pub fn ssh_key(&self) -> Result<SshKey, CredentialsError> {
        let raw = self.required("identity", FIX_IDENTITY)?;
        // OpenSSH rejects CRLF keys and keys without a final newline ("invalid format").
        let mut identity = raw.replace("\r\n", "\n");
        if !identity.ends_with('\n') {
            identity.push('\n');
        }
        check_private_key(&identity)
            .map_err(|why| self.error("identity", Problem::Invalid(why), FIX_IDENTITY))?;
        let encrypted = is_encrypted(&identity);
        let passphrase = self.line("password", FIX_PASSPHRASE)?;
        if encrypted && passphrase.is_none() {
            return Err(self.error("password", Problem::Missing, FIX_PASSPHRASE));
        }
        let known_hosts = self.required("known_hosts", FIX_KNOWN_HOSTS)?;
        if !known_hosts.lines().any(is_known_hosts_entry) {
            let why = "has no host key line of the form `host key-type base64-key`";
            return Err(self.error("known_hosts", Problem::Invalid(why), FIX_KNOWN_HOSTS));
        }
        Ok(SshKey {
            identity: Secret::new(identity),
            passphrase,
            encrypted,
            known_hosts: known_hosts.to_owned(),
        })
    }

    pub fn http_auth(&self) -> Result<Auth, CredentialsError> {
        // Flux: the presence of `bearerToken` selects bearer auth, whatever else is there.
        if self.data.contains_key("bearerToken") {
            let token = self.line("bearerToken", FIX_TOKEN)?;
            let token = token.ok_or_else(|| self.error("bearerToken", Problem::Empty, FIX_TOKEN))?;
            if !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
                let why = "contains spaces or non-ASCII characters";
                return Err(self.error("bearerToken", Problem::Invalid(why), FIX_TOKEN));
            }
            return Ok(Auth::Bearer(token));
        }
        match (self.line("username", FIX_LINE)?, self.line("password", FIX_LINE)?) {
            (None, None) => Ok(Auth::Anonymous),
            (None, Some(_)) => Err(self.error("username", Problem::Missing, FIX_USERNAME)),
            (Some(username), password) => {
                Ok(Auth::Basic { username, password: password.unwrap_or_else(|| Secret::new("")) })
            }
        }
    }

    pub fn tls(&self) -> Result<Tls, CredentialsError> {
        // Flux: a non-empty `ca.crt` takes precedence over the legacy `caFile`.
        let ca = match self.text("ca.crt", FIX_CA)? {
            Some(ca) if !ca.trim().is_empty() => Some(("ca.crt", ca)),
            _ => self.text("caFile", FIX_CA)?.filter(|ca| !ca.trim().is_empty()).map(|ca| ("caFile", ca)),
        };
        if let Some((key, ca)) = ca {
            check_certificate(ca).map_err(|why| self.error(key, Problem::Invalid(why), FIX_CA))?;
        }
        let cert = self.text("tls.crt", FIX_CLIENT_CERT)?.filter(|c| !c.trim().is_empty());
        let key = self.text("tls.key", FIX_CLIENT_CERT)?.filter(|k| !k.trim().is_empty());
        let client = match (cert, key) {
            (None, None) => None,
            (Some(_), None) => return Err(self.error("tls.key", Problem::Missing, FIX_CLIENT_CERT)),
            (None, Some(_)) => return Err(self.error("tls.crt", Problem::Missing, FIX_CLIENT_CERT)),
            (Some(cert), Some(key)) => {
                check_certificate(cert)
                    .map_err(|why| self.error("tls.crt", Problem::Invalid(why), FIX_CLIENT_CERT))?;
                check_private_key(key)
                    .map_err(|why| self.error("tls.key", Problem::Invalid(why), FIX_CLIENT_CERT))?;
                Some(ClientCert { cert: cert.to_owned(), key: Secret::new(key) })
            }
        };
        Ok(Tls { ca: ca.map(|(_, ca)| ca.to_owned()), client })
    }
}

fn check_private_key(pem: &str) -> Result<(), &'static str> {
    if pem.contains("PUBLIC KEY-----") || pem.trim_start().starts_with("ssh-") {
        return Err("this is a public key, the private key is needed");
    }
    if !(pem.contains("-----BEGIN ") && pem.contains("PRIVATE KEY-----") && pem.contains("-----END ")) {
        return Err("expected a PEM or OpenSSH private key (`-----BEGIN ... PRIVATE KEY-----`)");
    }
    Ok(())
}

fn check_certificate(pem: &str) -> Result<(), &'static str> {
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err("expected PEM certificate(s) (`-----BEGIN CERTIFICATE-----`)");
    }
    Ok(())
}

/// `host key-type key`, or `@marker host key-type key`; comments and blanks are not entries.
fn is_known_hosts_entry(line: &str) -> bool {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.first() {
        None => false,
        Some(first) if first.starts_with('#') => false,
        Some(first) if first.starts_with('@') => fields.len() >= 4,
        Some(_) => fields.len() >= 3,
    }
}

/// Whether a private key needs a passphrase: PKCS#8 and legacy PEM say so in the
/// armour; the OpenSSH format names its cipher in the first bytes of the body.
pub(super) fn is_encrypted(pem: &str) -> bool {
    if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") || pem.contains("Proc-Type: 4,ENCRYPTED") {
        return true;
    }
    if !pem.contains("BEGIN OPENSSH PRIVATE KEY") {
        return false;
    }
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect::<String>();
    let Some(head) = decode_base64_prefix(&body, 64) else { return false };
    // "openssh-key-v1\0", then the cipher name as a u32 big-endian length and bytes.
    let Some(rest) = head.strip_prefix(b"openssh-key-v1\0") else { return false };
    let Some((len, rest)) = rest.split_first_chunk::<4>() else { return false };
    let len = u32::from_be_bytes(*len) as usize;
    rest.get(..len).is_some_and(|cipher| cipher != b"none")
}

/// Decodes the first `chars` characters (a multiple of 4) of standard base64.
fn decode_base64_prefix(text: &str, chars: usize) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes().get(..chars)?;
    let mut out = Vec::with_capacity(chars / 4 * 3);
    for quad in bytes.chunks_exact(4) {
        let n = quad.iter().try_fold(0u32, |n, &c| Some(n << 6 | value(c)?))?;
        out.extend_from_slice(&n.to_be_bytes()[1..]);
    }
    Some(out)
}
