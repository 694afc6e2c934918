//! The isolated environment every git and ssh process of one remote runs in.
//!
//! In: the checked URL and the credentials. Out: a private 0700 temp directory
//! holding the credentials as 0600 files, and [`Sandbox::command`], a `git`
//! command that starts from an empty environment and sees only what is set here.
//!
//! How each credential reaches git, never through argv, a URL or the environment:
//! - basic auth: `GIT_ASKPASS` names a script that prints `username`/`password`
//!   from files beside it (shell builtins only, so not even a `cat` argv), and
//!   only to a prompt for the provider's own origin (`askpass`);
//! - bearer token: `http.<url>.extraHeader` in the 0600 `GIT_CONFIG_GLOBAL`
//!   file, scoped to the provider's URL;
//! - SSH: `-i <file>` and `UserKnownHostsFile=<file>` in `GIT_SSH_COMMAND`; a
//!   passphrase is answered by an `SSH_ASKPASS` script (`SSH_ASKPASS_REQUIRE=force`);
//! - TLS: `GIT_SSL_CAINFO`, `GIT_SSL_CERT`, `GIT_SSL_KEY` name files.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::{Zeroize, Zeroizing};

use super::url::RemoteUrl;
use crate::worker::credentials::{Auth, Credentials, Transport};

const SSH_ASKPASS: &str = r#"#!/bin/sh
# ssh asks "Enter passphrase for key '...': " (SSH_ASKPASS_REQUIRE=force). Nothing else
# is answered: host keys are never confirmed interactively.
case "$1" in
"Enter passphrase for"*) ;;
*) exit 1 ;;
esac
IFS= read -r value < "${0%/*}/passphrase"
printf '%s\n' "$value"
"#;

/// Where distributions keep the system CA bundle, for `GIT_SSL_CAINFO` when the
/// Secret has no `ca.crt` (the environment is cleared, so curl's own lookup of
/// `SSL_CERT_FILE` and friends would not apply).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// How long an idle shared SSH connection stays open.
const CONTROL_PERSIST: Duration = Duration::from_secs(60);
/// Room ssh needs beside a control socket's path (it binds a temporary
/// name first) within the 108 bytes of a Unix socket address.
const MAX_CONTROL_PATH: usize = 80;

/// Proxy settings are the operator's, not the user's: they pass through.
const PASSED_THROUGH: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

#[derive(Debug)]
pub(super) struct Sandbox {
    dir: tempfile::TempDir,
    /// Variables for every child; the ssh command is added per call (its timeout).
    vars: Vec<(&'static str, OsString)>,
    /// `GIT_SSH_COMMAND` without `ConnectTimeout`, for ssh:// remotes.
    ssh_command: Option<String>,
    /// The `ControlMaster` options that share one connection, if possible.
    shared_connection: Option<String>,
    /// Whether ssh uses `shared_connection`.
    sharing: bool,
}

impl Sandbox {
    pub fn new(url: &RemoteUrl, credentials: &Credentials) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&super::leftovers::own_prefix())
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let path = dir.path().to_owned();
        let file = |name: &str| path.join(name);
        let mut vars: Vec<(&'static str, OsString)> = vec![
            ("HOME", path.clone().into()),
            ("LC_ALL", "C".into()), // messages are classified by their English text
            ("GIT_CONFIG_NOSYSTEM", "1".into()),
            ("GIT_CONFIG_GLOBAL", file("gitconfig").into()),
            ("GIT_TERMINAL_PROMPT", "0".into()),
            ("GIT_ASKPASS", file("askpass").into()),
            // The temp dir is no repository; never let git discover one above it.
            ("GIT_CEILING_DIRECTORIES", path.parent().unwrap_or(Path::new("/")).into()),
            // Only the URL's own protocol (redirects are off: git's askpass
            // would answer the redirect target too).
            ("GIT_ALLOW_PROTOCOL", allowed_protocols(url.transport).into()),
        ];
        for name in PASSED_THROUGH {
            if let Some(value) = std::env::var_os(name) {
                vars.push((name, value));
            }
        }

        let mut config = String::from(
            "# One remote of gitops-reverser; mode 0600.\n\
             [gc]\n\tauto = 0\n[maintenance]\n\tauto = false\n\
             [core]\n\thooksPath = /dev/null\n\
             [protocol]\n\tversion = 2\n\
             [transfer]\n\tcredentialsInUrl = die\n\
             [http]\n\tfollowRedirects = false\n",
        );
        let username = match credentials.auth() {
            Auth::Basic { username, .. } => Some(username.expose()),
            _ => None,
        };
        let askpass = Zeroizing::new(super::askpass::script(&url.origin, username));
        write_private(&file("askpass"), askpass.as_bytes(), 0o700)?;
        let mut ssh_command = None;
        let mut shared_connection = None;
        match credentials.auth() {
            Auth::Anonymous => {}
            Auth::Basic { username, password } => {
                write_private(&file("username"), username.expose().as_bytes(), 0o600)?;
                write_private(&file("password"), password.expose().as_bytes(), 0o600)?;
            }
            Auth::Bearer(token) => {
                // Scoped to the provider's URL: git sends it to no other
                // (urlmatch: same scheme, host, port and path prefix).
                config.push_str(&format!(
                    "[http {}]\n\textraHeader = \"Authorization: Bearer ",
                    config_quote(url.for_git.trim_end_matches('/'))
                ));
                // Printable ASCII (checked); escaped for git's config syntax.
                config.push_str(&Zeroizing::new(config_escape(token.expose())));
                config.push_str("\"\n");
            }
            Auth::SshKey(key) => {
                write_private(&file("identity"), key.identity.expose().as_bytes(), 0o600)?;
                write_private(&file("known_hosts"), key.known_hosts.as_bytes(), 0o600)?;
                let mut command = format!(
                    "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none \
                     -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
                     -o StrictHostKeyChecking=yes -o UpdateHostKeys=no -o CheckHostIP=no \
                     -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
                     -o ServerAliveInterval=15 -o ServerAliveCountMax=3",
                    shell_quote(&file("identity")),
                    shell_quote(&file("known_hosts")),
                );
                shared_connection = control_socket(url, key).map(|socket| {
                    format!(
                        " -o ControlMaster=auto -o ControlPersist={} -o ControlPath={}",
                        CONTROL_PERSIST.as_secs(),
                        shell_quote(Path::new(&socket.to_string_lossy().replace('%', "%%"))),
                    )
                });
                match &key.passphrase {
                    // BatchMode would skip an encrypted key without asking; instead no
                    // prompt but the passphrase one is possible, and askpass answers it.
                    Some(passphrase) => {
                        write_private(&file("passphrase"), passphrase.expose().as_bytes(), 0o600)?;
                        write_private(&file("ssh-askpass"), SSH_ASKPASS.as_bytes(), 0o700)?;
                        vars.push(("SSH_ASKPASS", file("ssh-askpass").into()));
                        vars.push(("SSH_ASKPASS_REQUIRE", "force".into()));
                        command.push_str(" -o NumberOfPasswordPrompts=1");
                    }
                    None => command.push_str(" -o BatchMode=yes"),
                }
                vars.push(("GIT_SSH_VARIANT", "ssh".into()));
                ssh_command = Some(command);
            }
        }
        write_private(&file("gitconfig"), config.as_bytes(), 0o600)?;
        config.zeroize(); // it may hold the token

        if credentials.transport() == Transport::Https {
            let tls = credentials.tls();
            match &tls.ca {
                Some(ca) => {
                    write_private(&file("ca.crt"), ca.as_bytes(), 0o600)?;
                    vars.push(("GIT_SSL_CAINFO", file("ca.crt").into()));
                }
                None => {
                    if let Some(bundle) = system_ca_bundle() {
                        vars.push(("GIT_SSL_CAINFO", bundle.into()));
                    }
                }
            }
            if let Some(client) = &tls.client {
                write_private(&file("tls.crt"), client.cert.as_bytes(), 0o600)?;
                write_private(&file("tls.key"), client.key.expose().as_bytes(), 0o600)?;
                vars.push(("GIT_SSL_CERT", file("tls.crt").into()));
                vars.push(("GIT_SSL_KEY", file("tls.key").into()));
            }
        }
        Ok(Self { dir, vars, ssh_command, shared_connection, sharing: true })
    }

    /// Whether ssh shares one connection per repository and identity
    /// (default) or connects anew for every git command.
    pub fn share_connection(&mut self, sharing: bool) {
        self.sharing = sharing;
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `git` command with only this sandbox's environment, run in the sandbox.
    pub fn command(&self, search_path: &OsString, connect_timeout: Duration) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program_in(search_path, "git"));
        command.env_clear().env("PATH", search_path).envs(self.vars.iter().map(|(k, v)| (k, v)));
        if let Some(ssh) = &self.ssh_command {
            let seconds = connect_timeout.as_secs().clamp(1, 30);
            let shared = self.shared_connection.as_deref().filter(|_| self.sharing).unwrap_or_default();
            command.env("GIT_SSH_COMMAND", format!("{ssh}{shared} -o ConnectTimeout={seconds}"));
        }
        command.current_dir(self.dir.path());
        command
    }

    /// The variables set for every child (names and values; values are paths or flags).
    #[cfg(test)]
    pub fn vars(&self) -> &[(&'static str, OsString)] {
        &self.vars
    }
}

/// The control socket that every ssh of this repository and identity
/// shares (OpenSSH `ControlMaster`): one handshake per repository, not one
/// per fetch or push. `None` if no private folder can hold it.
///
/// The name is a digest of everything that makes the connection: the URL
/// (user, host, port, repository), the identity, its passphrase and the
/// trusted host keys. A different identity or host list never reuses
/// another's connection, and the folder is 0700, so no other user can.
/// The master ssh detaches from git with its stdio on /dev/null, and leaves
/// on its own after [`CONTROL_PERSIST`] without sessions.
fn control_socket(url: &RemoteUrl, key: &crate::worker::credentials::SshKey) -> Option<PathBuf> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("gitops-reverser-ssh-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .ok()
            .map(tempfile::TempDir::keep)
    });
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let passphrase = key.passphrase.as_ref().map(|p| p.expose().as_bytes()).unwrap_or_default();
    for part in
        [url.for_git.as_bytes(), key.identity.expose().as_bytes(), passphrase, key.known_hosts.as_bytes()]
    {
        digest.update(&(part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    let name: String = digest.finish().as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    let socket = dir.as_ref()?.join(name);
    (socket.as_os_str().len() <= MAX_CONTROL_PATH).then_some(socket)
}

/// `name` as found on `search_path`, or `name` itself if it is not there.
///
/// std starts a child with `posix_spawn` only when a changed PATH comes with
/// a program path; a bare name makes it `fork()` the whole operator.
fn program_in(search_path: &OsString, name: &str) -> PathBuf {
    std::env::split_paths(search_path)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The operator's PATH, or a conventional one if it has none.
pub(super) fn default_search_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}

fn allowed_protocols(transport: Transport) -> &'static str {
    match transport {
        Transport::Ssh => "ssh",
        Transport::Https => "https",
        Transport::Http => "http",
    }
}

fn system_ca_bundle() -> Option<PathBuf> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    from_env.into_iter().chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from)).find(|path| path.is_file())
}

/// Creates `path` with `mode` from the start (no window with wider permissions).
fn write_private(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    file.write_all(contents)
}

/// `text` as a double-quoted git config subsection name or value (`[http "..."]`).
fn config_quote(text: &str) -> String {
    format!("\"{}\"", config_escape(text))
}

/// Escapes the two characters git's config syntax gives meaning inside quotes;
/// the callers' text has no line breaks (checked).
fn config_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Single-quotes a path for the shell that runs `GIT_SSH_COMMAND`.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}
