//! Fresh keys for tests, made by the tools users make them with
//! (`ssh-keygen`, `gpg --batch`), in temp directories: no private key is
//! ever committed. Also the tools' own verification, as a second opinion.

use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

/// Runs `program` with `args` and `stdin`; panics with its stderr if it fails.
fn run(command: Command, stdin: &[u8]) -> Output {
    let what = format!("{command:?}");
    let output = try_run(command, stdin);
    assert!(output.status.success(), "{what} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Runs `program` with `args` and `stdin`.
fn try_run(mut command: Command, stdin: &[u8]) -> Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// An SSH key pair as `ssh-keygen` writes it.
pub struct SshKeyPair {
    _dir: TempDir,
    /// The private key file's text.
    pub private: String,
    /// The `.pub` line, without its newline.
    pub public: String,
    /// `SHA256:…`.
    pub fingerprint: String,
}

/// `ssh-keygen -t kind` (`ed25519`, `rsa`, `ecdsa`), encrypted with
/// `passphrase` if not empty.
pub fn ssh_key(kind: &str, passphrase: &str, comment: &str) -> SshKeyPair {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    let mut keygen = Command::new("ssh-keygen");
    keygen.args(["-q", "-t", kind, "-N", passphrase, "-C", comment, "-f"]).arg(&file);
    if kind == "rsa" {
        keygen.args(["-b", "2048"]);
    }
    run(keygen, b"");
    let public = std::fs::read_to_string(file.with_extension("pub")).unwrap().trim_end().to_owned();
    let mut fingerprint = Command::new("ssh-keygen");
    fingerprint.args(["-l", "-E", "sha256", "-f"]).arg(file.with_extension("pub"));
    let listed = String::from_utf8(run(fingerprint, b"").stdout).unwrap();
    let fingerprint = listed.split_whitespace().nth(1).unwrap().to_owned();
    SshKeyPair { private: std::fs::read_to_string(&file).unwrap(), public, fingerprint, _dir: dir }
}

/// Whether `ssh-keygen -Y check-novalidate -n git` accepts `signature` over `payload`.
pub fn ssh_keygen_accepts(signature: &str, payload: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.sig");
    std::fs::write(&file, signature).unwrap();
    let mut check = Command::new("ssh-keygen");
    check.args(["-Y", "check-novalidate", "-n", "git", "-s"]).arg(&file);
    let mut child = check
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(payload).unwrap();
    child.wait().unwrap().success()
}

/// A private GnuPG home with keys made in it; its agent ends with it.
pub struct GpgHome {
    dir: TempDir,
}

impl GpgHome {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self) -> Command {
        let mut gpg = Command::new("gpg");
        gpg.env("GNUPGHOME", self.dir.path()).args(["--batch", "--no-tty", "--pinentry-mode", "loopback"]);
        gpg
    }

    fn gpg(&self, args: &[&str], stdin: &[u8]) -> String {
        // gpg starts an agent per home on first use; on a loaded machine
        // (the simulations of `cargo test` use both cores) that start can
        // time out. Only such a failure is tried again.
        for attempt in 1..=3 {
            let mut gpg = self.command();
            gpg.args(args);
            let output = try_run(gpg, stdin);
            if output.status.success() {
                return String::from_utf8(output.stdout).unwrap();
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("agent") && attempt < 3, "gpg {args:?} failed: {stderr}");
        }
        unreachable!("the last attempt returns or panics")
    }

    /// A new key for `uid` (`Name <email>`): an `algo` primary key with
    /// `usage` (`sign`, `cert`), encrypted with `passphrase` unless empty.
    /// Returns its fingerprint.
    pub fn generate(&self, uid: &str, algo: &str, usage: &str, passphrase: &str) -> String {
        self.gpg(&["--passphrase", passphrase, "--quick-gen-key", uid, algo, usage, "never"], b"");
        let listed = self.gpg(&["--with-colons", "--list-secret-keys", uid], b"");
        let fpr = listed.lines().find(|l| l.starts_with("fpr:")).expect("a fingerprint line");
        fpr.split(':').nth(9).unwrap().to_owned()
    }

    /// Adds a signing subkey to key `fingerprint`.
    pub fn add_signing_subkey(&self, fingerprint: &str, passphrase: &str) {
        self.gpg(&["--passphrase", passphrase, "--quick-add-key", fingerprint, "ed25519", "sign"], b"");
    }

    /// `gpg --armor --export-secret-keys`, as a user stores it in `git.asc`.
    pub fn export_secret(&self, fingerprint: &str, passphrase: &str) -> String {
        self.gpg(&["--passphrase", passphrase, "--armor", "--export-secret-keys", fingerprint], b"")
    }

    /// `gpg --armor --export`: the public key block.
    pub fn export_public(&self, fingerprint: &str) -> String {
        self.gpg(&["--armor", "--export", fingerprint], b"")
    }

    /// Imports a public key block.
    pub fn import(&self, armored: &str) {
        self.gpg(&["--import"], armored.as_bytes());
    }

    /// `gpg --verify`: the status lines if the signature is good, else `None`.
    pub fn verify(&self, signature: &str, payload: &[u8]) -> Option<String> {
        let sig = self.dir.path().join("detached.sig");
        std::fs::write(&sig, signature).unwrap();
        let data = self.dir.path().join("detached.data");
        std::fs::write(&data, payload).unwrap();
        let output =
            self.command().args(["--status-fd", "1", "--verify"]).arg(&sig).arg(&data).output().unwrap();
        let status = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success() && status.contains("[GNUPG:] GOODSIG ")).then_some(status)
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        // The agent gpg started for this home would outlive the test.
        let _ =
            Command::new("gpgconf").env("GNUPGHOME", self.dir.path()).args(["--kill", "gpg-agent"]).output();
    }
}
