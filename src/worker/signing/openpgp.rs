//! OpenPGP signatures as git makes them with `gpg --detach-sign --armor`: a
//! binary-mode detached signature over the commit bytes, armored as
//! `-----BEGIN PGP SIGNATURE-----`, which `git verify-commit` checks with gpg.

use pgp::composed::{ArmorOptions, Deserializable, DetachedSignature, SignedSecretKey};
use pgp::packet::Signature;
use pgp::types::{KeyDetails, Password, SigningKey as _};

use super::{Format, SigningError};

/// A decrypted transferable secret key, and which of its keys signs.
#[derive(Clone)]
pub(super) struct Key {
    key: SignedSecretKey,
    signer: Signer,
}

/// The primary key, or the secret subkey at this index.
#[derive(Clone, Copy)]
enum Signer {
    Primary,
    Subkey(usize),
}

fn unusable(detail: impl Into<String>) -> SigningError {
    SigningError::Unusable { format: Format::OpenPgp, detail: detail.into() }
}

impl Key {
    pub fn parse(armored: &str, passphrase: Option<&str>) -> Result<Self, SigningError> {
        if armored.contains("BEGIN PGP PUBLIC KEY BLOCK") {
            return Err(unusable("this is a public key block, the private key is needed"));
        }
        if !armored.contains("BEGIN PGP PRIVATE KEY BLOCK") {
            return Err(unusable("expected an armored key (`-----BEGIN PGP PRIVATE KEY BLOCK-----`)"));
        }
        let (mut key, _headers) = SignedSecretKey::from_string(armored)
            .map_err(|e| unusable(format!("cannot read the key block: {e}")))?;
        key.verify_bindings().map_err(|e| unusable(format!("its self-signatures do not verify: {e}")))?;
        let signer = signer(&key)?;
        let encrypted = match signer {
            Signer::Primary => key.primary_key.secret_params().is_encrypted(),
            Signer::Subkey(i) => key.secret_subkeys[i].key.secret_params().is_encrypted(),
        };
        if encrypted {
            let passphrase = passphrase.ok_or(SigningError::PassphraseMissing { format: Format::OpenPgp })?;
            let password = Password::from(passphrase);
            let unlocked = match signer {
                Signer::Primary => key.primary_key.remove_password(&password),
                Signer::Subkey(i) => key.secret_subkeys[i].key.remove_password(&password),
            };
            // A wrong passphrase fails the S2K check; the error never holds it.
            unlocked.map_err(|_| SigningError::WrongPassphrase { format: Format::OpenPgp })?;
        }
        Ok(Self { key, signer })
    }

    /// The primary key's fingerprint in upper-case hex, as gpg prints it.
    pub fn fingerprint(&self) -> String {
        format!("{:X}", self.key.primary_key.fingerprint())
    }

    pub fn sign(&self, payload: &[u8]) -> Result<String, SigningError> {
        let failed =
            |e: pgp::errors::Error| SigningError::Sign { format: Format::OpenPgp, detail: e.to_string() };
        // Already decrypted when read: the empty password unlocks it.
        let (rng, password) = (rand::rngs::OsRng, Password::empty());
        let signature = match self.signer {
            Signer::Primary => {
                let key = &self.key.primary_key;
                DetachedSignature::sign_binary_data(rng, key, &password, key.hash_alg(), payload)
            }
            Signer::Subkey(i) => {
                let key = &self.key.secret_subkeys[i].key;
                DetachedSignature::sign_binary_data(rng, key, &password, key.hash_alg(), payload)
            }
        }
        .map_err(failed)?;
        signature.to_armored_string(ArmorOptions::default()).map_err(failed)
    }

    pub fn verify(&self, payload: &[u8], signature: &[u8]) -> Result<(), SigningError> {
        let failed = |detail: String| SigningError::NotVerified { format: Format::OpenPgp, detail };
        let text = std::str::from_utf8(signature).map_err(|_| failed("the signature is not text".into()))?;
        let (signature, _headers) =
            DetachedSignature::from_string(text).map_err(|e| failed(e.to_string()))?;
        match self.signer {
            Signer::Primary => signature.verify(self.key.primary_key.public_key(), payload),
            Signer::Subkey(i) => signature.verify(self.key.secret_subkeys[i].key.public_key(), payload),
        }
        .map_err(|e| failed(e.to_string()))
    }
}

/// Which key signs, as gpg picks it: a subkey flagged for signing (the
/// newest), else the primary key if it may sign (flagged so, or no flags at
/// all, as in keys older than key flags).
fn signer(key: &SignedSecretKey) -> Result<Signer, SigningError> {
    let may_sign = |signatures: &[Signature]| signatures.iter().any(|s| s.key_flags().sign());
    let subkey = key
        .secret_subkeys
        .iter()
        .enumerate()
        .filter(|(_, sub)| may_sign(&sub.signatures))
        .max_by_key(|(_, sub)| sub.key.created_at())
        .map(|(i, _)| Signer::Subkey(i));
    if let Some(subkey) = subkey {
        return Ok(subkey);
    }
    let self_signatures: Vec<&Signature> = key
        .details
        .users
        .iter()
        .flat_map(|user| &user.signatures)
        .chain(&key.details.direct_signatures)
        .collect();
    let flagged = self_signatures
        .iter()
        .map(|s| s.key_flags())
        .any(|f| f.certify() || f.sign() || f.encrypt_comms() || f.encrypt_storage() || f.authentication());
    if !flagged || self_signatures.iter().any(|s| s.key_flags().sign()) {
        return Ok(Signer::Primary);
    }
    Err(unusable(
        "neither the primary key nor a secret subkey may sign (no signing flag); export a key with a signing \
         (sub)key",
    ))
}
