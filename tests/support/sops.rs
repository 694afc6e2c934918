//! The real `sops` binary (built by tests/env/install) with an age private
//! key given in its environment only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use age::secrecy::ExposeSecret;

pub fn binary() -> PathBuf {
    let sops = super::repo_root().join("target/env/bin/sops");
    assert!(sops.exists(), "{} is missing: run tests/env/install", sops.display());
    sops
}

/// `sops --decrypt` of `file` (as JSON), in a scratch home so no user
/// configuration or key file takes part.
pub fn decrypt(file: &[u8], identity: &age::x25519::Identity) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("secret.sops.yaml");
    std::fs::write(&path, file).unwrap();
    decrypt_file(scratch.path(), &path, identity)
}

pub fn decrypt_file(dir: &Path, file: &Path, identity: &age::x25519::Identity) -> Output {
    Command::new(binary())
        .args(["--decrypt", "--input-type", "yaml", "--output-type", "json"])
        .arg(file)
        .current_dir(dir)
        .env_clear()
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("SOPS_AGE_KEY", identity.to_string().expose_secret())
        .output()
        .expect("run sops")
}

/// The decrypted Secret's `data`, keys → base64 values.
pub fn decrypted_data(file: &[u8], identity: &age::x25519::Identity) -> serde_json::Value {
    let out = decrypt(file, identity);
    assert!(out.status.success(), "sops --decrypt: {}", String::from_utf8_lossy(&out.stderr));
    let decrypted: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sops prints JSON");
    decrypted["data"].clone()
}
