//! SSH signatures as git makes them: sshsig (OpenSSH's PROTOCOL.sshsig) in
//! the namespace "git", armored as `-----BEGIN SSH SIGNATURE-----`, which
//! `git -c gpg.format=ssh verify-commit` checks with `ssh-keygen -Y verify`.

use ssh_key::{HashAlg, LineEnding, PrivateKey, SshSig};
use zeroize::Zeroizing;

use super::{Format, SigningError};

/// The namespace git signs and verifies commits in (`-n git`).
const NAMESPACE: &str = "git";

/// A decrypted OpenSSH private key.
#[derive(Clone)]
pub(super) struct Key(PrivateKey);

impl Key {
    pub fn parse(pem: &str, passphrase: Option<&str>) -> Result<Self, SigningError> {
        let unusable = |detail: String| SigningError::Unusable { format: Format::Ssh, detail };
        if pem.contains("PUBLIC KEY") || pem.trim_start().starts_with("ssh-") {
            return Err(unusable("this is a public key, the private key is needed".into()));
        }
        // OpenSSH itself refuses CRLF keys; accept them, as the git credentials do.
        // The copies are private key text too: wiped on drop.
        let normalised = Zeroizing::new(pem.replace("\r\n", "\n"));
        let pem = Zeroizing::new(format!("{}\n", normalised.trim()));
        let key = PrivateKey::from_openssh(pem.as_bytes())
            .map_err(|e| unusable(format!("expected `-----BEGIN OPENSSH PRIVATE KEY-----` ({e})")))?;
        if !key.is_encrypted() {
            return Ok(Self(key));
        }
        let passphrase = passphrase.ok_or(SigningError::PassphraseMissing { format: Format::Ssh })?;
        // bcrypt-pbkdf and a cipher: any failure here means the passphrase is wrong.
        key.decrypt(passphrase).map(Self).map_err(|_| SigningError::WrongPassphrase { format: Format::Ssh })
    }

    /// `ssh-ed25519 AAAA… comment`, as `ssh-keygen -y` prints it.
    pub fn public_key(&self) -> Result<String, SigningError> {
        self.0
            .public_key()
            .to_openssh()
            .map_err(|e| SigningError::Unusable { format: Format::Ssh, detail: e.to_string() })
    }

    /// `SHA256:…`, as `ssh-keygen -l` and git's verify output show it.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint(HashAlg::Sha256).to_string()
    }

    pub fn sign(&self, payload: &[u8]) -> Result<String, SigningError> {
        let failed = |e: ssh_key::Error| SigningError::Sign { format: Format::Ssh, detail: e.to_string() };
        // SHA-512 is what `ssh-keygen -Y sign` uses by default.
        let signature = match self.0.key_data().rsa() {
            Some(rsa) => sign_rsa(&self.0, rsa, payload).map_err(failed)?,
            None => self.0.sign(NAMESPACE, HashAlg::Sha512, payload).map_err(failed)?,
        };
        signature.to_pem(LineEnding::LF).map_err(failed)
    }

    pub fn verify(&self, payload: &[u8], signature: &[u8]) -> Result<(), SigningError> {
        let failed =
            |e: ssh_key::Error| SigningError::NotVerified { format: Format::Ssh, detail: e.to_string() };
        let signature = SshSig::from_pem(signature).map_err(failed)?;
        // Checks the namespace and that the signature names this public key, too.
        self.0.public_key().verify(NAMESPACE, payload, &signature).map_err(failed)
    }
}

/// sshsig with an RSA key (rsa-sha2-512, as ssh-keygen signs). ssh-key 0.6
/// rebuilds the RSA key from the primes `p, p` instead of `p, q`, which the
/// rsa crate rejects, so the key is rebuilt here and only the sshsig framing
/// is ssh-key's.
fn sign_rsa(key: &PrivateKey, rsa: &ssh_key::private::RsaKeypair, payload: &[u8]) -> ssh_key::Result<SshSig> {
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    let int = |value: &ssh_key::Mpint| rsa::BigUint::try_from(value);
    let private = rsa::RsaPrivateKey::from_components(
        int(&rsa.public.n)?,
        int(&rsa.public.e)?,
        int(&rsa.private.d)?,
        vec![int(&rsa.private.p)?, int(&rsa.private.q)?],
    )
    .map_err(|_| ssh_key::Error::Crypto)?;
    let signed = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, payload)?;
    let raw = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha512>::new(private)
        .try_sign(&signed)
        .map_err(|_| ssh_key::Error::Crypto)?;
    let algorithm = ssh_key::Algorithm::Rsa { hash: Some(HashAlg::Sha512) };
    let signature = ssh_key::Signature::new(algorithm, raw.to_vec())?;
    SshSig::new(key.public_key().key_data().clone(), NAMESPACE, HashAlg::Sha512, signature)
}
