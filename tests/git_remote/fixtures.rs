//! Fixtures for `git_remote`: Secrets as the operator would read them, a local
//! bare repository with commits made by plain git, soft-serve admin commands, and
//! the register of secret values that no message may contain.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use gitops_reverser::worker::credentials::Credentials;
use gitops_reverser::worker::remote::{Remote, RemoteError};
use k8s_openapi::ByteString;

use crate::support::{self, Env};

// ---------------------------------------------------------------- secrets

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Registers a secret value (and, for keys, each long body line) for [`assert_clean`].
pub fn register_secret(value: &str) {
    let mut secrets = SECRETS.lock().unwrap();
    secrets.push(value.trim().to_owned());
    secrets.extend(
        value.lines().map(str::trim).filter(|l| l.len() >= 16 && !l.starts_with("-----")).map(str::to_owned),
    );
}

/// The environment's own secrets: the rw/ro access tokens and private keys.
pub fn register_env_secrets(env: &Env) {
    for var in ["GITENV_HTTPS_PASS_RW", "GITENV_HTTPS_PASS_RO"] {
        register_secret(env.var(var));
    }
    for var in ["GITENV_SSH_KEY_RW", "GITENV_SSH_KEY_RO", "GITENV_ADMIN_KEY"] {
        register_secret(&std::fs::read_to_string(env.var(var)).unwrap());
    }
}

/// Panics if `text` contains any registered secret value.
pub fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS.lock().unwrap().iter().filter(|s| !s.is_empty()) {
        assert!(!text.contains(secret.as_str()), "{what} leaks a secret value: {text}");
    }
}

/// The error's message, after checking its Display and Debug for secrets.
pub fn checked(error: &RemoteError) -> String {
    assert_clean("error Display", &error.to_string());
    assert_clean("error Debug", &format!("{error:?}"));
    error.to_string()
}

/// A remote whose Debug output has been checked for secrets.
pub fn new_remote(url: &str, credentials: Credentials) -> Remote {
    assert_clean("credentials Debug", &format!("{credentials:?}"));
    let remote = Remote::new(url, credentials).unwrap_or_else(|e| panic!("Remote::new: {}", checked(&e)));
    assert_clean("remote Debug", &format!("{remote:?}"));
    remote
}

// ---------------------------------------------------------------- Secrets

pub fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    pairs.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
}

pub fn read_file(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

pub fn ssh_credentials(env: &Env, key_var: &str, url: &str) -> Credentials {
    let data = secret(&[
        ("identity", &read_file(env.var(key_var))),
        ("known_hosts", &read_file(env.var("GITENV_KNOWN_HOSTS"))),
    ]);
    Credentials::from_secret_data("git-ssh", &data, url).unwrap()
}

pub fn basic_credentials(env: &Env, which: &str, url: &str) -> Credentials {
    let data = secret(&[
        ("username", env.var(&format!("GITENV_HTTPS_USER_{which}"))),
        ("password", env.var(&format!("GITENV_HTTPS_PASS_{which}"))),
        ("ca.crt", &read_file(env.var("GITENV_CA_CRT"))),
    ]);
    Credentials::from_secret_data("git-https", &data, url).unwrap()
}

pub fn bearer_credentials(env: &Env, token: &str, url: &str) -> Credentials {
    let data = secret(&[("bearerToken", token), ("ca.crt", &read_file(env.var("GITENV_CA_CRT")))]);
    Credentials::from_secret_data("git-bearer", &data, url).unwrap()
}

// ---------------------------------------------------------------- soft-serve

/// Runs a soft-serve SSH command as the owner of `key`; returns stdout.
pub fn soft(env: &Env, key: &Path, args: &[&str]) -> String {
    let output = Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(key)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", env.var("GITENV_KNOWN_HOSTS")))
        .args(["-p", env.var("GITENV_SSH_PORT"), "127.0.0.1"])
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("run ssh");
    assert!(output.status.success(), "soft {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The repository name of a `new_repo` URL.
pub fn repo_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap().trim_end_matches(".git")
}

/// A JWT for `repo` signed by soft-serve, minted with the rw key.
pub fn mint_jwt(env: &Env, repo: &str) -> String {
    let token = soft(env, Path::new(env.var("GITENV_SSH_KEY_RW")), &["jwt", repo]).trim().to_owned();
    assert!(token.starts_with("eyJ"), "not a JWT: {token}");
    register_secret(&token);
    token
}

/// Lines of the server's push log for `repo`.
pub fn pushlog(env: &Env, repo: &str) -> Vec<String> {
    let log = std::fs::read_to_string(env.var("GITENV_PUSHLOG")).unwrap_or_default();
    log.lines().filter(|line| line.split(' ').nth(1) == Some(repo)).map(str::to_owned).collect()
}

// ---------------------------------------------------------------- local repository

/// A local bare repository, with commits made by plain git (the gix layer is elsewhere).
pub struct LocalRepo {
    dir: tempfile::TempDir,
}

impl LocalRepo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Self { dir };
        repo.git(&["init", "--bare", "--quiet"], None);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git on this repository, feeding `stdin`; returns trimmed stdout.
    pub fn git(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.git_with(args, stdin, &[])
    }

    /// [`Self::git`] with more environment variables.
    fn git_with(&self, args: &[&str], stdin: Option<&str>, vars: &[(&str, &str)]) -> String {
        let mut child = Command::new("git")
            .arg(format!("--git-dir={}", self.path().display()))
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .envs(vars.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// A commit holding one file, on top of `parent`.
    pub fn commit(&self, parent: Option<&str>, file: &str, content: &str) -> String {
        self.commit_dated(parent, file, content, None)
    }

    /// [`Self::commit`] made at `date` (as git reads `GIT_COMMITTER_DATE`), or now.
    pub fn commit_dated(
        &self,
        parent: Option<&str>,
        file: &str,
        content: &str,
        date: Option<&str>,
    ) -> String {
        let blob = self.git(&["hash-object", "-w", "--stdin"], Some(content));
        let tree = self.git(&["mktree"], Some(&format!("100644 blob {blob}\t{file}\n")));
        let mut args = vec!["commit-tree", &tree, "-m", file];
        if let Some(parent) = parent {
            args.extend(["-p", parent]);
        }
        let vars: Vec<(&str, &str)> =
            date.map(|d| vec![("GIT_COMMITTER_DATE", d), ("GIT_AUTHOR_DATE", d)]).unwrap_or_default();
        self.git_with(&args, None, &vars)
    }

    pub fn rev(&self, name: &str) -> Option<String> {
        let output = Command::new("git")
            .arg(format!("--git-dir={}", self.path().display()))
            .args(["rev-parse", "--verify", "--quiet", name])
            .output()
            .unwrap();
        output.status.success().then(|| String::from_utf8(output.stdout).unwrap().trim().to_owned())
    }
}

/// A `PATH` whose `git` and `ssh` log their argv and environment to `log`, then
/// run the real programs.
pub struct RecordingPath {
    pub dir: tempfile::TempDir,
}

impl RecordingPath {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        for program in ["git", "ssh"] {
            let real = which(program);
            let script = format!(
                "#!/bin/sh\n{{ printf 'argv %s' '{program}'; for a in \"$@\"; do printf ' [%s]' \"$a\"; done; \
                 printf '\\n'; env | sed 's/^/env /'; }} >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            );
            write_executable(&dir.path().join(program), &script);
        }
        Self { dir }
    }

    pub fn search_path(&self) -> String {
        format!("{}:/usr/local/bin:/usr/bin:/bin", self.dir.path().display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

pub fn write_executable(path: &Path, script: &str) {
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// The absolute path of `program` on this process's PATH.
pub fn which(program: &str) -> PathBuf {
    let output = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().unwrap();
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// The environment, with its secrets registered for scanning.
pub fn env() -> &'static Env {
    let env = support::env();
    register_env_secrets(env);
    env
}
