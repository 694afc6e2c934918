//! `spec.encryption` of a GitTarget: Secrets are written only encrypted,
//! as SOPS files for age recipients, which Flux's kustomize-controller
//! decrypts (`spec.decryption.provider: sops`).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Encryption makes the Secrets its GitTarget's rules select be written as
/// `<name>.sops.yaml`: `data` and `stringData` encrypted with SOPS for the
/// age recipients below, everything else readable. Without it Secrets are
/// never written (the Ready condition counts them).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(
        "(has(self.followSopsConfig) && self.followSopsConfig) || (has(self.age) && (has(self.age.recipients) ? size(self.age.recipients) : 0) + (has(self.age.recipientsFrom) ? size(self.age.recipientsFrom) : 0) > 0)"
    )
        .message("encryption.age needs at least one recipient: list an age public key (age1...) in recipients, name a Secret or ConfigMap key holding them in recipientsFrom, or set followSopsConfig to take them from the branch's .sops.yaml")
)]
pub struct EncryptionSpec {
    /// The file format; `sops` is the only one.
    pub provider: EncryptionProvider,
    /// The age recipients every Secret of this target is encrypted for
    /// (with `followSopsConfig`: while the branch has no `.sops.yaml`).
    #[serde(default)]
    pub age: AgeRecipients,
    /// Follow the branch's `/.sops.yaml`, as `sops` would: each Secret is
    /// encrypted for the age keys of the first `creation_rules` entry whose
    /// `path_regex` matches its file's path from the repository root. A
    /// Secret no rule gives age keys is not written, and the GitTarget says
    /// why.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_sops_config: bool,
}

/// The file formats an encrypted Secret can have.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionProvider {
    /// SOPS (github.com/getsops/sops) with age, as Flux decrypts it.
    Sops,
}

/// Age public keys, inline or from Secret and ConfigMap keys.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgeRecipients {
    /// Age X25519 public keys (`age1...`, as `age-keygen -y` prints them).
    #[serde(default)]
    // A pattern, not CEL: a rule over every item costs past the API
    // server's budget.
    #[schemars(length(max = 32), inner(regex(pattern = r"^age1[02-9ac-hj-np-z]{58}$")))]
    pub recipients: Vec<String>,
    /// Keys of Secrets or ConfigMaps, in the GitTarget's namespace, each
    /// holding one or more recipients, one per line (`#` comments allowed,
    /// as in an age recipients file).
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub recipients_from: Vec<RecipientsSource>,
}

/// One key of a Secret or ConfigMap that lists age recipients.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecipientsSource {
    /// `Secret` or `ConfigMap`.
    pub kind: RecipientsKind,
    /// Name of the object, in the GitTarget's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The data key holding the recipients.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Where recipients can be read from.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipientsKind {
    Secret,
    ConfigMap,
}

/// The recipients of an age recipients file: one per line, blank lines and
/// `#` comments skipped.
pub fn recipients_in_file(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipients_file_skips_comments_and_blank_lines() {
        let file = "# team keys\nage1abc\n\n  age1def  \n#age1old\n";
        assert_eq!(recipients_in_file(file).collect::<Vec<_>>(), ["age1abc", "age1def"]);
    }
}
