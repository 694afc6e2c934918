//! One string value → `ENC[AES256_GCM,data:…,iv:…,tag:…,type:str]`, as
//! sops' `aes/cipher.go` writes it.

use aes_gcm::aes::Aes256;
use aes_gcm::aes::cipher::consts::U32;
use aes_gcm::{AeadInOut, AesGcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand_core::CryptoRng;
use zeroize::Zeroizing;

/// AES-256-GCM with sops' 32-byte IV; GCM hashes an IV that is not 12 bytes
/// long into its first counter block (NIST SP 800-38D), as Go's
/// `cipher.NewGCMWithNonceSize(…, 32)` does.
pub(super) type SopsGcm = AesGcm<Aes256, U32>;

pub(super) const DATA_KEY_LEN: usize = 32;
pub(super) const IV_LEN: usize = 32;

/// The file's data key: it encrypts every value and the MAC; each recipient
/// gets a copy of it wrapped with age.
pub(super) struct DataKey {
    bytes: Zeroizing<[u8; DATA_KEY_LEN]>,
    cipher: SopsGcm,
}

impl DataKey {
    pub(super) fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = Zeroizing::new([0u8; DATA_KEY_LEN]);
        rng.fill_bytes(bytes.as_mut());
        let cipher = SopsGcm::new_from_slice(bytes.as_ref()).expect("AES-256 takes a 32-byte key");
        DataKey { bytes, cipher }
    }

    /// The raw key, as age wraps it for each recipient (32 bytes, not encoded).
    pub(super) fn bytes(&self) -> &[u8; DATA_KEY_LEN] {
        &self.bytes
    }

    /// Encrypts a string value with a fresh IV. sops writes an empty string
    /// as an empty string, not as ciphertext (`isEmpty` in aes/cipher.go), and
    /// its decrypter reads `""` back as `""`, so this does the same; `None`
    /// means AES-GCM refused the length (over 64 GiB).
    pub(super) fn encrypt_str(
        &self,
        plaintext: &str,
        additional_data: &str,
        rng: &mut impl CryptoRng,
    ) -> Option<String> {
        if plaintext.is_empty() {
            return Some(String::new());
        }
        let mut iv = [0u8; IV_LEN];
        rng.fill_bytes(&mut iv);
        // Encrypted in place: after the call the buffer holds ciphertext only.
        let mut buffer = Zeroizing::new(plaintext.as_bytes().to_vec());
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &Nonce::<U32>::from(iv),
                additional_data.as_bytes(),
                buffer.as_mut_slice().into(),
            )
            .ok()?;
        Some(format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:str]",
            STANDARD.encode(buffer.as_slice()),
            STANDARD.encode(iv),
            STANDARD.encode(tag.as_slice()),
        ))
    }
}

/// The additional data sops binds a value to: its key path joined with `:`,
/// plus a trailing `:` (`data:password:`); list indexes are not part of it.
pub(super) fn additional_data(path: &[&str]) -> String {
    let mut out = String::with_capacity(path.iter().map(|k| k.len() + 1).sum());
    for key in path {
        out.push_str(key);
        out.push(':');
    }
    out
}
