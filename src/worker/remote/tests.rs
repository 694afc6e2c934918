//! Classification of real git/ssh/curl messages, message cleaning, and the sandbox
//! files. The behaviour against a live server is in `tests/git_remote.rs`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::ByteString;

use super::error::{Class, classify, clean};
use super::sandbox::Sandbox;
use super::*;

const GIT_HINT: &str = "fatal: Could not read from remote repository.\n\nPlease make sure you have the correct \
                        access rights\nand the repository exists.\n";

#[test]
fn soft_serve_messages() {
    let cases = [
        (format!("Error: invalid repo\n{GIT_HINT}"), Class::NotFound),
        (format!("Error: you are not authorized to do this\n{GIT_HINT}"), Class::Auth),
        ("remote: 401 Unauthorized\nfatal: Authentication failed for 'https://h:1/r.git/'\n".into(), Class::Auth),
        (
            "remote: 403 Forbidden\nfatal: unable to access 'https://h:1/r.git/': The requested URL returned error: 403\n"
                .into(),
            Class::Auth,
        ),
        ("remote: 404 Not Found\nfatal: repository 'https://h:1/nope.git/' not found\n".into(), Class::NotFound),
    ];
    for (stderr, class) in cases {
        assert_eq!(classify(&stderr), class, "{stderr}");
    }
}

#[test]
fn generic_server_messages() {
    let cases = [
        ("git@github.com: Permission denied (publickey).\n", Class::Auth),
        ("ERROR: The key you are authenticating with has been marked as read only.\n", Class::Auth),
        ("ERROR: Repository not found.\n", Class::NotFound),
        (
            "remote: Permission to o/r.git denied to u.\nfatal: unable to access 'https://github.com/o/r.git/': \
             The requested URL returned error: 403\n",
            Class::Auth,
        ),
        (
            "remote: HTTP Basic: Access denied\nfatal: Authentication failed for 'https://gitlab.com/o/r.git/'\n",
            Class::Auth,
        ),
        (
            "ERROR: The project you were looking for could not be found or you don't have permission to view it.\n",
            Class::NotFound,
        ),
        ("remote: GitLab: This deploy key does not have write access to this project.\n", Class::Auth),
        ("fatal: could not read Username for 'https://h': terminal prompts disabled\n", Class::Auth),
        ("fatal: unable to access 'https://h/r/': The requested URL returned error: 503\n", Class::Network),
        ("fatal: 'x' does not appear to be a git repository\n", Class::NotFound),
        ("fatal: the remote end hung up unexpectedly\n", Class::Network),
        (" ! [remote rejected] main -> main (pre-receive hook declined)\n", Class::Other),
    ];
    for (stderr, class) in cases {
        assert_eq!(classify(stderr), class, "{stderr}");
    }
}

#[test]
fn network_tls_and_host_key_messages() {
    let cases = [
        (format!("ssh: connect to host 127.0.0.1 port 1: Connection refused\n{GIT_HINT}"), Class::Network),
        (
            "fatal: unable to access 'https://127.0.0.1:1/x.git/': Failed to connect to 127.0.0.1 port 1 after 0 ms: \
             Couldn't connect to server\n"
                .into(),
            Class::Network,
        ),
        (format!("ssh: Could not resolve hostname x.invalid: Name or service not known\n{GIT_HINT}"), Class::Network),
        ("fatal: unable to access 'https://x.invalid/r/': Could not resolve host: x.invalid\n".into(), Class::Network),
        (
            "fatal: unable to access 'https://h/r/': server certificate verification failed. CAfile: none CRLfile: none\n"
                .into(),
            Class::Certificate,
        ),
        (
            "fatal: unable to access 'https://h/r/': SSL certificate problem: unable to get local issuer certificate\n"
                .into(),
            Class::Certificate,
        ),
        (
            "No ED25519 host key is known for [127.0.0.1]:22 and you have requested strict checking.\n\
             Host key verification failed.\n"
                .into(),
            Class::HostKey,
        ),
        (
            "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.\n"
                .into(),
            Class::HostKey,
        ),
    ];
    for (stderr, class) in cases {
        assert_eq!(classify(&stderr), class, "{stderr}");
    }
}

fn basic(username: &str, password: &str) -> Credentials {
    let data: BTreeMap<String, ByteString> = [("username", username), ("password", password)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
    Credentials::from_secret_data("auth", &data, "https://h/r.git").unwrap()
}

#[test]
fn clean_removes_secrets_userinfo_paths_noise_and_control_characters() {
    let credentials = basic("alice", "s3cr3t-token");
    let stderr = format!(
        "remote: \x1b[31mdenied s3cr3t-token\x1b[0m        \n\
         fatal: unable to access 'https://alice:s3cr3t-token@h/r.git/': boom\n\
         Load key \"/tmp/sandbox/identity\": invalid format\n{GIT_HINT}"
    );
    let detail = clean(&stderr, &credentials, Path::new("/tmp/sandbox"));
    assert_eq!(
        detail,
        "denied [redacted]; fatal: unable to access 'https://h/r.git/': boom; \
         Load key \"identity\": invalid format"
    );
    assert_eq!(clean("", &credentials, Path::new("/x")), "git gave no error message");
    assert!(clean(&"x".repeat(2000), &credentials, Path::new("/x")).chars().count() <= 601);
}

#[test]
fn every_error_has_a_reason() {
    let url = || "https://h/r.git".to_owned();
    let detail = String::new;
    let cases = [
        (RemoteError::InvalidConfiguration(detail()), Reason::InvalidConfiguration),
        (RemoteError::Credentials(CredentialsError::SecretRequired), Reason::InvalidConfiguration),
        (
            RemoteError::NoWriteAccess { op: Op::DryRunPush, url: url(), detail: detail(), hint: detail() },
            Reason::AuthenticationFailed,
        ),
        (
            RemoteError::RepositoryNotFound { op: Op::LsRemote, url: url(), detail: detail() },
            Reason::RepositoryNotFound,
        ),
        (
            RemoteError::HostKeyRejected { op: Op::LsRemote, url: url(), detail: detail(), hint: detail() },
            Reason::NetworkError,
        ),
        (
            RemoteError::Timeout { op: Op::Push, url: url(), after: Duration::from_secs(1) },
            Reason::NetworkError,
        ),
        (RemoteError::Git { op: Op::Push, url: url(), detail: detail() }, Reason::GitOperationFailed),
    ];
    for (error, reason) in cases {
        assert_eq!(error.reason(), reason, "{error}");
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn sandbox_holds_credentials_in_private_files_only() {
    let credentials = basic("alice", "s3cr3t-token");
    let url = url::parse("https://h/r.git").unwrap();
    let sandbox = Sandbox::new(&url, &credentials).unwrap();
    let dir = sandbox.path();
    assert_eq!(mode(dir), 0o700);
    for file in ["username", "password", "gitconfig"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&dir.join("askpass")), 0o700);
    // Issue 16: askpass answers whoever asks; git must not follow a
    // redirect to another host and ask there.
    let config = std::fs::read_to_string(dir.join("gitconfig")).unwrap();
    assert!(config.contains("[http]\n\tfollowRedirects = false\n"), "{config}");
    for (name, value) in sandbox.vars() {
        let value = value.to_string_lossy();
        assert!(!value.contains("s3cr3t-token") && !value.contains("alice"), "{name}={value}");
    }
    // The askpass script answers git's two prompts for this origin from the
    // files, and nothing else (every rule: `askpass.rs`).
    let ask = |prompt: &str| {
        let output = std::process::Command::new(dir.join("askpass")).arg(prompt).output().unwrap();
        (output.status.success(), String::from_utf8(output.stdout).unwrap())
    };
    assert_eq!(ask("Username for 'https://h': "), (true, "alice\n".to_owned()));
    assert_eq!(ask("Password for 'https://alice@h': "), (true, "s3cr3t-token\n".to_owned()));
    assert!(!ask("Are you sure you want to continue connecting (yes/no)? ").0);
    assert!(!ask("Username for 'https://elsewhere': ").0);
    assert!(!ask("Password for 'https://alice@elsewhere': ").0);
    let kept = dir.to_owned();
    drop(sandbox);
    assert!(!kept.exists(), "the sandbox is removed with the remote");
}

#[test]
fn bearer_token_goes_to_the_private_config_file() {
    let data: BTreeMap<String, ByteString> =
        [("bearerToken".to_owned(), ByteString(b"eyJ.tok\"en".to_vec()))].into_iter().collect();
    let credentials = Credentials::from_secret_data("auth", &data, "https://h/r.git").unwrap();
    let sandbox = Sandbox::new(&url::parse("https://h/r.git").unwrap(), &credentials).unwrap();
    let config = std::fs::read_to_string(sandbox.path().join("gitconfig")).unwrap();
    assert!(
        config
            .contains("[http \"https://h/r.git\"]\n\textraHeader = \"Authorization: Bearer eyJ.tok\\\"en\""),
        "{config}"
    );
    assert!(!sandbox.path().join("password").exists());
    // git itself reads the header for the provider's URL only.
    let header_for = |url: &str| {
        let output = std::process::Command::new("git")
            .args(["config", "--file"])
            .arg(sandbox.path().join("gitconfig"))
            .args(["--get-urlmatch", "http.extraHeader", url])
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(header_for("https://h/r.git"), "Authorization: Bearer eyJ.tok\"en\n");
    assert_eq!(header_for("https://h/r.git/info/refs"), "Authorization: Bearer eyJ.tok\"en\n");
    for elsewhere in ["https://other/r.git", "https://h/other.git", "http://h/r.git", "https://h:444/r.git"] {
        assert_eq!(header_for(elsewhere), "", "{elsewhere}");
    }
}

#[test]
fn remote_refuses_mismatched_or_unsafe_input() {
    let credentials = basic("alice", "pw");
    let error = Remote::new("ssh://h/r.git", credentials.clone()).unwrap_err();
    assert_eq!(error.reason(), Reason::InvalidConfiguration);
    let error = Remote::new("https://alice:pw@h/r.git", credentials).unwrap_err();
    assert!(!error.to_string().contains("pw@"), "{error}");
}

/// Workers spawn these futures on a multi-threaded runtime.
#[allow(dead_code)]
fn remote_and_its_futures_are_send(remote: &Remote, git_dir: &Path) {
    fn send<T: Send>(_: T) {}
    fn sync<T: Send + Sync>() {}
    sync::<Remote>();
    send(remote.branch_tip("main"));
    send(remote.verify_write_access("main"));
    send(remote.fetch(git_dir, "main"));
    send(remote.push(git_dir, "", "main", None));
}

#[tokio::test]
async fn maintenance_packs_loose_objects_and_consolidates_packs() {
    let dir = tempfile::tempdir().unwrap();
    let git_dir = dir.path().join("repo.git");
    let git = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new("git")
            .arg(format!("--git-dir={}", git_dir.display()))
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "git {args:?} failed");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    std::process::Command::new("git").args(["init", "--quiet", "--bare"]).arg(&git_dir).status().unwrap();
    // `gc --auto` estimates loose objects from the objects/17 folder alone, so
    // plant two blobs there plus a few elsewhere; all reachable from main.
    let mut contents: Vec<String> = (0..5).map(|i| format!("object {i}\n")).collect();
    let planted = (0u32..)
        .map(|i| format!("planted {i}\n"))
        .filter(|c| crate::worker::repo::LocalRepo::blob_id(c.as_bytes()).to_string().starts_with("17"))
        .take(2);
    contents.extend(planted);
    let mut tree_listing = String::new();
    for (i, content) in contents.iter().enumerate() {
        let blob = git(&["hash-object", "-w", "--stdin"], content);
        tree_listing.push_str(&format!("100644 blob {blob}\tf{i}\n"));
    }
    let tree = git(&["mktree"], &tree_listing);
    let commit = git(&["commit-tree", &tree, "-m", "c"], "");
    git(&["update-ref", "refs/heads/main", &commit], "");
    let loose = |text: &str| -> u32 {
        text.lines().find_map(|l| l.strip_prefix("count: ")).unwrap().parse().unwrap()
    };
    let total = contents.len() as u32 + 2;
    assert_eq!(loose(&git(&["count-objects", "-v"], "")), total);

    let url = "https://git.example.com/repo.git";
    let remote = Remote::new(url, Credentials::anonymous(url).unwrap()).unwrap();
    remote.maintain(&git_dir, 6_700).await.unwrap();
    assert_eq!(loose(&git(&["count-objects", "-v"], "")), total, "below the threshold nothing is packed");
    remote.maintain(&git_dir, 10).await.unwrap();
    let after = git(&["count-objects", "-v"], "");
    assert_eq!(loose(&after), 0, "{after}");
    assert_eq!(git(&["cat-file", "-t", &commit], ""), "commit", "history intact");

    // Every fetch keeps its own pack: past PACK_LIMIT, maintenance makes one.
    let mut tip = commit.clone();
    for i in 0..=PACK_LIMIT {
        tip = git(&["commit-tree", &tree, "-p", &tip, "-m", &format!("fetched {i}")], "");
        git(&["update-ref", "refs/heads/main", &tip], "");
        git(&["repack", "-d", "-q"], "");
    }
    let packs = |text: &str| -> u32 {
        text.lines().find_map(|l| l.strip_prefix("packs: ")).unwrap().parse().unwrap()
    };
    let before = git(&["count-objects", "-v"], "");
    assert!(packs(&before) > PACK_LIMIT, "{before}");
    remote.maintain(&git_dir, 6_700).await.unwrap();
    let after = git(&["count-objects", "-v"], "");
    assert_eq!(packs(&after), 1, "{after}");
    assert_eq!(git(&["rev-list", "--count", &tip], ""), (PACK_LIMIT + 2).to_string(), "history intact");
}

/// Issue 16: a hostile server's pack could fill the data volume every
/// branch of the replica shares. A child cannot write a file past the
/// limit: the write stops there and the process dies of SIGXFSZ. (The limit
/// is set in the forked child before it runs the writer, as the operator
/// sets it on itself before it runs git, so this test process keeps its own.)
#[test]
fn a_git_child_cannot_write_a_file_past_the_limit() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pack");
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg(format!("head -c 100000 /dev/zero > {}", file.display()));
    // SAFETY: getrlimit and setrlimit are async-signal-safe and allocate nothing.
    unsafe { command.pre_exec(|| super::run::limit_file_size(4096)) };
    let status = command.status().unwrap();
    assert!(!status.success(), "{status:?}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 4096);
}
