//! `GitProvider`: the connection layer (repository URL, credentials, branch
//! allow-list, push batching).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::commit::CommitSettings;
use super::schema::DURATION_PATTERN;

/// GitProvider defines a connection to a git host.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "configbutler.ai",
    version = "v1alpha1",
    kind = "GitProvider",
    namespaced,
    status = "GitProviderStatus",
    shortname = "gp",
    category = "gitops-reverser",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    derive = "PartialEq",
    doc = "GitProvider defines a connection to a git host: URL, credentials and write policy."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!self.url.startsWith('http://') || (has(self.insecure) && self.insecure)")
        .message("an http:// url is unencrypted (credentials and commits cross the network in clear text): use https://, or set insecure: true to accept that")
        .field_path(".url")
)]
pub struct GitProviderSpec {
    /// URL of the repository: ssh://, https:// or http://. Credentials never
    /// go in the URL; they come from secretRef.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("self.matches('^(ssh|https|http)://[^/]+')")
            .message("url must start with ssh://, https:// or http:// followed by a host (scp-like 'git@host:path' is not supported; write ssh://git@host/path)"),
        validation = Rule::new("!self.matches('^https?://[^/]*@')")
            .message("url must not carry credentials (user:password@); put them in the Secret named by secretRef"),
        validation = Rule::new("!self.matches('^[a-z]+://[^/]*:[^/]*@')")
            .message("url must not carry a password (user:password@), whatever the scheme; put it in the Secret named by secretRef"),
        validation = Rule::new("!self.matches('^[a-z]+://([^/]*@)?-')")
            .message("url must not have a user name or host that starts with '-'")
    )]
    pub url: String,

    /// SecretRef names the Secret, in the same namespace, that holds the
    /// credentials (Flux's keys: identity/known_hosts, username/password,
    /// bearerToken, ca.crt, tls.crt/tls.key).
    pub secret_ref: SecretReference,

    /// AllowedBranches restricts which branches can be written to. Entries are
    /// globs (`release/*`). Empty means every branch is allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    pub allowed_branches: Vec<String>,

    /// Push defines the strategy for pushing commits (batching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushStrategy>,

    /// Insecure allows an http:// URL, over which the credentials of
    /// secretRef and the commits travel in clear text. Without it such a
    /// URL is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,

    /// SigningKey signs every commit written through this provider with the
    /// key in the named Secret. Without a usable key nothing is committed:
    /// commits are never written unsigned instead. The status shows the
    /// public key (or fingerprint) to register with the git host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKeySpec>,

    /// Commit shapes the commit messages of every GitTarget that uses this
    /// provider (a GitTarget's own `commit` replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitSettings>,
}

/// A commit signing key, as Flux's ImageUpdateAutomation names one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeySpec {
    /// SecretRef names the Secret, in the same namespace, that holds the
    /// private key: `git.asc` (armored OpenPGP key, as in Flux) or `identity`
    /// (OpenSSH key), and `passphrase` if the key is encrypted.
    pub secret_ref: SecretReference,

    /// Format of the signature, as git's gpg.format: `openpgp` or `ssh`.
    /// Defaults to the kind of key the Secret holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SigningFormat>,
}

/// A signature format git verifies.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SigningFormat {
    /// sshsig (`gpg.format=ssh`).
    Ssh,
    /// OpenPGP (`gpg.format=openpgp`, git's default).
    Openpgp,
}

/// A reference to a Secret in the referrer's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// PushStrategy batches commits into pushes. Commits are always one per
/// change; only pushes are batched.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PushStrategy {
    /// Interval is the maximum time to wait before pushing queued commits,
    /// as a Go duration such as `5s` or `1m30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('24h')")
        .message("push.interval must be at most 24h (a change waits that long at most before a push)"))]
    pub interval: Option<String>,

    /// MaxCommits is the maximum number of commits to queue before pushing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_commits: Option<i32>,
}

/// Status of a GitProvider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GitProviderStatus {
    /// Ready, with a reason and a message saying how to fix a problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The last generation that was reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The public half of spec.signingKey, to register with the git host
    /// (e.g. as a signing key of the account that pushes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKeyStatus>,
}

/// The public half of a commit signing key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyStatus {
    /// `ssh` or `openpgp`.
    pub format: SigningFormat,
    /// SSH: the public key line (`ssh-ed25519 AAAA… comment`), as an
    /// allowed_signers file or a git host's "signing key" form takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// SSH: `SHA256:…`; OpenPGP: the primary key's fingerprint (hex), whose
    /// public key block (`gpg --armor --export FINGERPRINT`) the host takes.
    pub fingerprint: String,
}
