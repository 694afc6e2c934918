//! The `Secret` newtype: a credential value that cannot be printed and is
//! wiped when dropped.
//!
//! In: a string read from a Kubernetes Secret. Out: the same string, reachable
//! only through [`Secret::expose`]; `Debug` and `Display` print `[redacted]`.
//! Redaction is by type, so a `{:?}` of any struct holding one is safe to log.
//! Each copy overwrites its bytes with zeros on drop (`zeroize`), so a value
//! does not linger in freed memory once its credentials are replaced.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A credential value (password, token, private key, passphrase).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Overwrites the value with zeros, keeping its buffer (what drop does).
    fn wipe(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl ZeroizeOnDrop for Secret {}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: only for writing it to a 0600 file or a config file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Fragments of the value worth searching for in text that must not leak it:
    /// the whole value, and for multi-line values (keys) each long line of it.
    pub(crate) fn fragments(&self) -> impl Iterator<Item = &str> {
        let whole = std::iter::once(self.0.trim()).filter(|s| !s.is_empty());
        let lines = self.0.lines().map(str::trim).filter(|line| {
            // PEM armour lines are public; base64 body lines are not.
            line.len() >= 16 && !line.starts_with("-----") && self.0.contains('\n')
        });
        whole.chain(lines)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2-token");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2-token");
    }

    #[test]
    fn every_credential_is_wiped_on_drop() {
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<Secret>();
        let mut secret = Secret::new("hunter2-token");
        let (bytes, len) = (secret.0.as_ptr(), secret.0.len());
        secret.wipe();
        assert_eq!(secret.expose(), "");
        // SAFETY: `wipe` keeps the allocation (zeroize clears the string and
        // then writes zeros over its whole capacity); `secret` still owns it.
        let after = unsafe { std::slice::from_raw_parts(bytes, len) };
        assert!(after.iter().all(|b| *b == 0), "{after:?}");
    }

    #[test]
    fn fragments_cover_key_body_lines_but_not_armour() {
        let key = Secret::new(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\nshort\n-----END OPENSSH PRIVATE KEY-----\n",
        );
        let fragments: Vec<&str> = key.fragments().collect();
        assert!(fragments.contains(&"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE"));
        assert!(!fragments.contains(&"-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(!fragments.contains(&"short"));
        assert_eq!(Secret::new("pw").fragments().collect::<Vec<_>>(), ["pw"]);
    }
}
