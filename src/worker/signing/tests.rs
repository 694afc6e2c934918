//! The signer against keys made by ssh-keygen and gpg, with the tools' own
//! verification as the judge of what it signs.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use super::testkeys::{GpgHome, ssh_key, ssh_keygen_accepts};
use super::*;

const PAYLOAD: &[u8] =
    b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@example.com> 1700000000 +0000\n\
committer A <a@example.com> 1700000000 +0000\n\nmessage\n";

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    pairs.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
}

/// Signs, checks its own signature, refuses it over other bytes, and
/// returns it.
fn sign_and_check(key: &SigningKey) -> String {
    let signature = key.sign(PAYLOAD).unwrap();
    key.verify(PAYLOAD, signature.as_bytes()).unwrap();
    let mut tampered = PAYLOAD.to_vec();
    tampered[PAYLOAD.len() - 2] ^= 1;
    let refused = key.verify(&tampered, signature.as_bytes()).unwrap_err();
    assert!(matches!(refused, SigningError::NotVerified { .. }), "{refused}");
    signature
}

#[test]
fn ssh_ed25519_signatures_are_what_ssh_keygen_verifies() {
    let pair = ssh_key("ed25519", "", "signer@example.com");
    let key = SigningKey::ssh(&pair.private, None).unwrap();
    assert_eq!(key.format(), Format::Ssh);
    assert_eq!(key.public_key(), Some(pair.public.as_str()));
    assert_eq!(key.fingerprint(), pair.fingerprint);
    let signature = sign_and_check(&key);
    assert!(signature.starts_with("-----BEGIN SSH SIGNATURE-----\n"), "{signature}");
    assert!(signature.ends_with("-----END SSH SIGNATURE-----\n"), "{signature}");
    assert!(ssh_keygen_accepts(&signature, PAYLOAD));
    assert!(!ssh_keygen_accepts(&signature, b"other bytes"));
}

#[test]
fn ssh_rsa_signatures_are_what_ssh_keygen_verifies() {
    let pair = ssh_key("rsa", "", "rsa@example.com");
    let key = SigningKey::ssh(&pair.private, None).unwrap();
    assert_eq!(key.public_key(), Some(pair.public.as_str()));
    let signature = sign_and_check(&key);
    assert!(ssh_keygen_accepts(&signature, PAYLOAD));
}

#[test]
fn another_keys_signature_does_not_verify() {
    let (a, b) = (ssh_key("ed25519", "", "a"), ssh_key("ed25519", "", "b"));
    let (a, b) = (SigningKey::ssh(&a.private, None).unwrap(), SigningKey::ssh(&b.private, None).unwrap());
    let signature = a.sign(PAYLOAD).unwrap();
    assert!(b.verify(PAYLOAD, signature.as_bytes()).is_err());
    assert_ne!(a, b);
}

#[test]
fn ssh_passphrase_protected_key() {
    let pair = ssh_key("ed25519", "correct horse", "enc@example.com");
    let key = SigningKey::ssh(&pair.private, Some("correct horse")).unwrap();
    assert!(ssh_keygen_accepts(&sign_and_check(&key), PAYLOAD));
    assert_eq!(
        SigningKey::ssh(&pair.private, None).unwrap_err(),
        SigningError::PassphraseMissing { format: Format::Ssh }
    );
    let wrong = SigningKey::ssh(&pair.private, Some("battery staple")).unwrap_err();
    assert_eq!(wrong, SigningError::WrongPassphrase { format: Format::Ssh });
    let shown = format!("{wrong} {wrong:?}");
    assert!(!shown.contains("battery") && !shown.contains("correct"), "{shown}");
}

#[test]
fn openpgp_signatures_are_what_gpg_verifies() {
    let gpg = GpgHome::new();
    let fingerprint = gpg.generate("Signer <signer@example.com>", "ed25519", "sign", "");
    let key = SigningKey::openpgp(&gpg.export_secret(&fingerprint, ""), None).unwrap();
    assert_eq!(key.format(), Format::OpenPgp);
    assert_eq!(key.fingerprint(), fingerprint);
    assert_eq!(key.public_key(), None);
    let signature = sign_and_check(&key);
    assert!(signature.starts_with("-----BEGIN PGP SIGNATURE-----\n"), "{signature}");
    let status = gpg.verify(&signature, PAYLOAD).expect("gpg verifies the signature");
    assert!(status.contains(&format!("VALIDSIG {fingerprint}")), "{status}");
    assert!(gpg.verify(&signature, b"other bytes").is_none());
}

#[test]
fn openpgp_rsa_key() {
    let gpg = GpgHome::new();
    let fingerprint = gpg.generate("Rsa <rsa@example.com>", "rsa2048", "sign", "");
    let key = SigningKey::openpgp(&gpg.export_secret(&fingerprint, ""), None).unwrap();
    assert!(gpg.verify(&sign_and_check(&key), PAYLOAD).is_some());
}

#[test]
fn openpgp_signing_subkey_signs_when_the_primary_only_certifies() {
    let gpg = GpgHome::new();
    let fingerprint = gpg.generate("Sub <sub@example.com>", "ed25519", "cert", "pw");
    gpg.add_signing_subkey(&fingerprint, "pw");
    let key = SigningKey::openpgp(&gpg.export_secret(&fingerprint, "pw"), Some("pw")).unwrap();
    assert_eq!(key.fingerprint(), fingerprint, "the status names the primary key");
    let status = gpg.verify(&sign_and_check(&key), PAYLOAD).expect("gpg verifies the signature");
    // VALIDSIG <signing key> ... <primary key>: a subkey made it.
    let valid = status.lines().find(|l| l.contains("VALIDSIG")).unwrap();
    assert!(!valid.contains(&format!("VALIDSIG {fingerprint}")) && valid.ends_with(&fingerprint), "{valid}");
}

#[test]
fn openpgp_passphrase_protected_key() {
    let gpg = GpgHome::new();
    let fingerprint = gpg.generate("Enc <enc@example.com>", "ed25519", "sign", "s3cret-pass");
    let armored = gpg.export_secret(&fingerprint, "s3cret-pass");
    let key = SigningKey::openpgp(&armored, Some("s3cret-pass")).unwrap();
    assert!(gpg.verify(&sign_and_check(&key), PAYLOAD).is_some());
    assert_eq!(
        SigningKey::openpgp(&armored, None).unwrap_err(),
        SigningError::PassphraseMissing { format: Format::OpenPgp }
    );
    let wrong = SigningKey::openpgp(&armored, Some("not-the-pass")).unwrap_err();
    assert_eq!(wrong, SigningError::WrongPassphrase { format: Format::OpenPgp });
    let shown = format!("{wrong} {wrong:?}");
    assert!(!shown.contains("not-the-pass") && !shown.contains("s3cret"), "{shown}");
}

#[test]
fn debug_shows_the_public_half_only() {
    let pair = ssh_key("ed25519", "", "debug@example.com");
    let key = SigningKey::ssh(&pair.private, None).unwrap();
    let shown = format!("{key:?}");
    assert!(shown.contains("[redacted]") && shown.contains(&pair.fingerprint), "{shown}");
    let body = pair.private.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>();
    assert!(body.iter().all(|line| !shown.contains(line)), "{shown}");
}

#[test]
fn the_secret_decides_the_format_unless_told() {
    let pair = ssh_key("ed25519", "pw", "secret@example.com");
    let ssh = data(&[("identity", &pair.private), ("passphrase", "pw\n")]);
    let key = SigningKey::from_secret_data("sign", &ssh, None).unwrap();
    assert_eq!(key.format(), Format::Ssh);

    let gpg = GpgHome::new();
    let fingerprint = gpg.generate("S <s@example.com>", "ed25519", "sign", "");
    let openpgp = data(&[("git.asc", &gpg.export_secret(&fingerprint, ""))]);
    let key = SigningKey::from_secret_data("sign", &openpgp, None).unwrap();
    assert_eq!(key.format(), Format::OpenPgp);

    let both = data(&[("identity", &pair.private), ("git.asc", "x")]);
    let error = SigningKey::from_secret_data("sign", &both, None).unwrap_err();
    assert!(matches!(error, SigningError::Ambiguous { .. }), "{error}");
    let key = SigningKey::from_secret_data(
        "sign",
        &data(&[("identity", &pair.private), ("passphrase", "pw"), ("git.asc", "x")]),
        Some(Format::Ssh),
    )
    .unwrap();
    assert_eq!(key.format(), Format::Ssh, "the format picks the key");

    let error = SigningKey::from_secret_data("sign", &data(&[("username", "u")]), None).unwrap_err();
    assert!(
        matches!(error, SigningError::NoKey { .. }) && error.to_string().contains("Secret `sign`"),
        "{error}"
    );
    let error = SigningKey::from_secret_data("sign", &openpgp, Some(Format::Ssh)).unwrap_err();
    assert_eq!(error.key(), Some("identity"), "{error}");
}

#[test]
fn errors_name_the_secret_and_key() {
    let pair = ssh_key("ed25519", "pw", "e@example.com");
    let cases = [
        (data(&[("identity", &pair.private)]), "passphrase", "passphrase"),
        (data(&[("identity", &pair.private), ("passphrase", "nope")]), "passphrase", "does not decrypt"),
        (data(&[("identity", &pair.public)]), "identity", "public key"),
        (data(&[("identity", "  \n")]), "identity", "is empty"),
        (data(&[("git.asc", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n")]), "git.asc", "public key"),
        (data(&[("git.asc", "garbage")]), "git.asc", "PRIVATE KEY BLOCK"),
    ];
    for (data, key, says) in cases {
        let error = SigningKey::from_secret_data("signing", &data, None).unwrap_err();
        let message = error.to_string();
        assert_eq!(error.key(), Some(key), "{message}");
        assert!(message.contains("Secret `signing`") && message.contains(says), "{message}");
        assert!(!message.contains("nope"), "{message}");
        assert_eq!(error.reason(), Reason::InvalidConfiguration);
    }
}
