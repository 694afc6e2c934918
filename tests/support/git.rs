//! Runs the plain `git` CLI the way the operator will: no user or system
//! config, no prompts, credentials from files or an askpass helper (never
//! argv or URLs), host keys checked against a known_hosts file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// How to authenticate to the git server.
#[derive(Clone, Debug)]
pub enum Auth {
    Ssh { key: PathBuf, known_hosts: PathBuf },
    Https { user: String, pass: String, ca: PathBuf },
}

impl Auth {
    pub fn ssh_rw(env: &super::Env) -> Self {
        Self::Ssh {
            key: env.var("GITENV_SSH_KEY_RW").into(),
            known_hosts: env.var("GITENV_KNOWN_HOSTS").into(),
        }
    }
    pub fn ssh_ro(env: &super::Env) -> Self {
        Self::Ssh {
            key: env.var("GITENV_SSH_KEY_RO").into(),
            known_hosts: env.var("GITENV_KNOWN_HOSTS").into(),
        }
    }
    pub fn https_rw(env: &super::Env) -> Self {
        Self::Https {
            user: env.var("GITENV_HTTPS_USER_RW").into(),
            pass: env.var("GITENV_HTTPS_PASS_RW").into(),
            ca: env.var("GITENV_CA_CRT").into(),
        }
    }
    pub fn https_ro(env: &super::Env) -> Self {
        Self::Https {
            user: env.var("GITENV_HTTPS_USER_RO").into(),
            pass: env.var("GITENV_HTTPS_PASS_RO").into(),
            ca: env.var("GITENV_CA_CRT").into(),
        }
    }
}

/// A scratch HOME with an askpass helper, shared by the git calls of one test.
pub struct GitClient {
    home: tempfile::TempDir,
    auth: Auth,
}

impl GitClient {
    pub fn new(auth: Auth) -> Self {
        let home = tempfile::tempdir().expect("temp HOME");
        let askpass = home.path().join("askpass");
        std::fs::write(
            &askpass,
            "#!/bin/sh\ncase \"$1\" in Username*) printf '%s\\n' \"$TEST_GIT_USER\";; *) printf '%s\\n' \"$TEST_GIT_PASS\";; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
        Self { home, auth }
    }

    /// A fresh work directory inside this client's scratch space.
    pub fn workdir(&self, name: &str) -> PathBuf {
        let dir = self.home.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs `git args...` in `dir`.
    pub fn run(&self, dir: &Path, args: &[&str]) -> Output {
        self.command(dir, args).output().expect("run git")
    }

    /// Runs `git args...` in `dir` with `input` on stdin (for `cat-file --batch`).
    pub fn run_input(&self, dir: &Path, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .command(dir, args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run git");
        // Written from a thread: git may fill stdout before it has read all of stdin.
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().expect("wait for git");
        writer.join().unwrap().expect("write git's stdin");
        output
    }

    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("git");
        command
            .args(args)
            .current_dir(dir)
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .env_remove("SSH_AUTH_SOCK");
        match &self.auth {
            Auth::Ssh { key, known_hosts } => {
                command.env(
                    "GIT_SSH_COMMAND",
                    format!(
                        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} \
                         -o StrictHostKeyChecking=yes -o BatchMode=yes",
                        key.display(),
                        known_hosts.display()
                    ),
                );
            }
            Auth::Https { user, pass, ca } => {
                command
                    .env("GIT_ASKPASS", self.home.path().join("askpass"))
                    .env("TEST_GIT_USER", user)
                    .env("TEST_GIT_PASS", pass)
                    .env("GIT_SSL_CAINFO", ca);
            }
        }
        command
    }

    /// Runs git and panics with its stderr unless it succeeds.
    pub fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let output = self.run(dir, args);
        assert!(output.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// Stderr of a git run, for assertions and messages.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The branch as the server has it: every file and every commit subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BranchView {
    pub files: std::collections::BTreeMap<String, String>,
    /// Newest first.
    pub subjects: Vec<String>,
    pub head: String,
}

impl BranchView {
    /// Files below `prefix`, with the prefix stripped.
    pub fn under(&self, prefix: &str) -> std::collections::BTreeMap<String, String> {
        self.files
            .iter()
            .filter_map(|(path, content)| Some((path.strip_prefix(prefix)?.to_owned(), content.clone())))
            .collect()
    }
}

impl GitClient {
    /// Clones `branch` of `url` and reads it whole; None if the branch does not exist.
    pub fn read_branch(&self, url: &str, branch: &str) -> Option<BranchView> {
        let scratch = self.workdir("views");
        let listed = self.run(&scratch, &["ls-remote", url, &format!("refs/heads/{branch}")]);
        if !listed.status.success() || listed.stdout.is_empty() {
            return None;
        }
        let dir = scratch.join(format!("clone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        self.ok(&scratch, &["clone", "--quiet", "--branch", branch, url, dir.to_str().unwrap()]);
        let head = self.ok(&dir, &["rev-parse", "HEAD"]).trim().to_owned();
        let names = self.ok(&dir, &["ls-tree", "-r", "--name-only", "HEAD"]);
        let files = names
            .lines()
            .map(|name| (name.to_owned(), std::fs::read_to_string(dir.join(name)).unwrap_or_default()))
            .collect();
        let subjects = self.ok(&dir, &["log", "--format=%s"]).lines().map(str::to_owned).collect();
        let _ = std::fs::remove_dir_all(&dir);
        Some(BranchView { files, subjects, head })
    }
}
