//! The local environment (`tests/env/up`): its variables, new repositories,
//! and the server-side push log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The branch a new repository is seeded with (see `Env::seed`); the load
/// never writes it, and its push is not one of the run's.
pub const SEED_BRANCH: &str = "loadtest-seed";

/// One line of the server's push log.
#[derive(Debug, Clone)]
pub struct Push {
    /// Server time (unix seconds) when the ref was updated.
    pub at: f64,
    pub branch: String,
    pub old: String,
    pub new: String,
}

pub struct Env {
    pub root: PathBuf,
    vars: HashMap<String, String>,
    server: GitServer,
}

/// Which of the environment's git servers holds the run's repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GitServer {
    SoftServe,
    Sshd,
}

impl GitServer {
    /// The key of its URL in `tests/env/new-repo`'s output.
    fn url_key(self) -> &'static str {
        match self {
            Self::SoftServe => "ssh_url",
            Self::Sshd => "sshd_url",
        }
    }

    /// Its pid file: the CPU it used counts its reaped children (sshd's
    /// per-connection processes) too.
    pub fn pid_file(self) -> &'static str {
        match self {
            Self::SoftServe => "target/env/run/soft.pid",
            Self::Sshd => "target/env/run/sshd.pid",
        }
    }
}

impl Env {
    /// Runs `tests/env/up` (installing on first use) and reads env.sh.
    pub fn up(root: &Path) -> Result<Self, String> {
        let status = Command::new(root.join("tests/env/up")).status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("tests/env/up failed: {status}"));
        }
        let text = std::fs::read_to_string(root.join("target/env/env.sh")).map_err(|e| e.to_string())?;
        let vars = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|a| a.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        Ok(Self { root: root.to_owned(), vars, server: GitServer::SoftServe })
    }

    pub fn with_server(self, server: GitServer) -> Self {
        Self { server, ..self }
    }

    pub fn server(&self) -> GitServer {
        self.server
    }

    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).map(String::as_str).unwrap_or_else(|| panic!("env.sh lacks {name}"))
    }

    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.var(name)).unwrap_or_default()
    }

    /// Creates a repository with one empty commit on [`SEED_BRANCH`] and
    /// returns its SSH URL on the chosen server.
    pub fn new_repo(&self, name: &str) -> Result<String, String> {
        let out = Command::new(self.root.join("tests/env/new-repo"))
            .arg(name)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let urls: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let url = urls[self.server.url_key()].as_str().unwrap_or_default().to_owned();
        self.seed(&url, name)?;
        Ok(url)
    }

    /// soft-serve points HEAD at the first branch pushed to an empty
    /// repository; a push to HEAD's branch also locks HEAD, and a push killed
    /// at its deadline can leave that lock behind, failing every later push
    /// to the branch. Seeding the repository keeps HEAD off the load's branches.
    fn seed(&self, url: &str, name: &str) -> Result<(), String> {
        let dir = std::env::temp_dir().join(format!("loadtest-seed-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let pushed = (|| {
            self.git(&dir, &["init", "--quiet", "--bare"])?;
            let tree = self.git(&dir, &["mktree"])?;
            let commit = self.git(
                &dir,
                &[
                    "-c",
                    "user.name=loadtest",
                    "-c",
                    "user.email=loadtest@localhost",
                    "commit-tree",
                    tree.trim(),
                    "-m",
                    "seed",
                ],
            )?;
            let refspec = format!("{}:refs/heads/{SEED_BRANCH}", commit.trim());
            self.git(&dir, &["push", "--quiet", url, &refspec])
        })();
        let _ = std::fs::remove_dir_all(&dir);
        pushed.map(|_| ())
    }

    /// Pushes the server logged for `repo`, in log order.
    pub fn pushes(&self, repo: &str) -> Vec<Push> {
        std::fs::read_to_string(self.var("GITENV_PUSHLOG"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() >= 7 && f[1] == repo).then(|| Push {
                    at: f[0].parse().unwrap_or(0.0),
                    branch: f[4].trim_start_matches("refs/heads/").to_owned(),
                    old: f[5].to_owned(),
                    new: f[6].to_owned(),
                })
            })
            .collect()
    }

    pub async fn client(&self) -> Result<kube::Client, String> {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.var("KUBECONFIG")).map_err(|e| e.to_string())?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| e.to_string())?;
        kube::Client::try_from(config).map_err(|e| e.to_string())
    }

    /// Runs git with the read-write SSH key and an isolated configuration.
    pub fn git(&self, dir: &Path, args: &[&str]) -> Result<String, String> {
        self.git_in(dir, args, None).map(|out| String::from_utf8_lossy(&out).into_owned())
    }

    /// Runs git, feeding `input` on stdin; returns stdout's bytes.
    pub fn git_in(&self, dir: &Path, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let ssh = format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
            self.var("GITENV_SSH_KEY_RW"),
            self.var("GITENV_KNOWN_HOSTS")
        );
        let mut child = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", ssh)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let writer = input.map(|bytes| {
            let mut stdin = child.stdin.take().expect("piped stdin");
            let bytes = bytes.to_vec();
            std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &bytes))
        });
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        if !out.status.success() {
            return Err(format!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(out.stdout)
    }
}
