//! `spec.encryption` of a GitTarget → the [`Sealer`] its Secrets are sealed
//! with: the age recipients (inline, or read from Secret and ConfigMap keys)
//! and the cluster's digest key (a Secret of the operator's own, made on
//! first use and shared by every replica); and the Secrets never written.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};

use super::Controller;
use crate::api::{EncryptionSpec, Reason, RecipientsKind, RecipientsSource, recipients_in_file};
use crate::route::BranchKey;
use crate::sops::rules::CreationRules;
use crate::sops::{DigestKey, Recipients, Sealer};
use crate::status::Problem;
use crate::watch::exclusions::SecretExclusions;

/// The data key of the digest key Secret.
pub const DIGEST_KEY_FIELD: &str = "digest.key";

fn invalid(message: String) -> Problem {
    Problem::new(Reason::InvalidConfiguration, message)
}

/// The recipients `spec` names, given the text of each `recipientsFrom`
/// source in order. Errors name the field and how to fix it.
pub fn recipients_of(spec: &EncryptionSpec, sources: &[String]) -> Result<Recipients, Problem> {
    let mut all: Vec<(String, &str)> = spec
        .age
        .recipients
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("spec.encryption.age.recipients[{i}]"), r.as_str()))
        .collect();
    for (i, (source, text)) in spec.age.recipients_from.iter().zip(sources).enumerate() {
        for recipient in recipients_in_file(text) {
            all.push((format!("spec.encryption.age.recipientsFrom[{i}] ({})", describe(source)), recipient));
        }
    }
    if all.is_empty() {
        return Err(invalid(
            "spec.encryption.age names no recipient (its recipientsFrom keys are empty); add an age public key (age1...)"
                .to_owned(),
        ));
    }
    Recipients::parse(all.iter().map(|(_, r)| *r)).map_err(|error| {
        let field = match &error {
            crate::sops::SopsError::InvalidRecipient { index, .. } => {
                all.get(*index).map(|(f, _)| f.as_str())
            }
            _ => None,
        };
        invalid(format!(
            "{}: {error}; list age X25519 public keys (age1..., as age-keygen -y prints them)",
            field.unwrap_or("spec.encryption.age")
        ))
    })
}

fn describe(source: &RecipientsSource) -> String {
    let kind = match source.kind {
        RecipientsKind::Secret => "Secret",
        RecipientsKind::ConfigMap => "ConfigMap",
    };
    format!("{kind} {:?} key {:?}", source.name, source.key)
}

impl Controller {
    /// The sealer of a target with `spec.encryption`.
    pub(super) async fn sealer(&self, ns: &str, spec: &EncryptionSpec) -> Result<Arc<Sealer>, Problem> {
        let mut sources = Vec::with_capacity(spec.age.recipients_from.len());
        for source in &spec.age.recipients_from {
            sources.push(self.recipients_source(ns, source).await?);
        }
        let key = self.digest_key().await?;
        if !spec.follow_sops_config {
            return Ok(Arc::new(Sealer::new(recipients_of(spec, &sources)?, key)));
        }
        // The branch's rules come in at routing (`Controller::following`).
        let named = !spec.age.recipients.is_empty() || !spec.age.recipients_from.is_empty();
        let recipients = if named { Some(recipients_of(spec, &sources)?) } else { None };
        Ok(Arc::new(Sealer::following(recipients, None, key)))
    }

    async fn recipients_source(&self, ns: &str, source: &RecipientsSource) -> Result<String, Problem> {
        let missing = || {
            invalid(format!(
                "{} (spec.encryption.age.recipientsFrom) not found in namespace {ns:?}; create it with the age recipients, one per line",
                describe(source)
            ))
        };
        let unreadable = |e: kube::Error| invalid(format!("cannot read {}: {e}", describe(source)));
        let bytes: Option<Vec<u8>> = match source.kind {
            RecipientsKind::Secret => {
                let found = Api::<Secret>::namespaced(self.calls.clone(), ns)
                    .get_opt(&source.name)
                    .await
                    .map_err(unreadable)?;
                let found = found.ok_or_else(missing)?;
                found.data.and_then(|mut d| d.remove(&source.key)).map(|b| b.0)
            }
            RecipientsKind::ConfigMap => {
                let found = Api::<ConfigMap>::namespaced(self.calls.clone(), ns)
                    .get_opt(&source.name)
                    .await
                    .map_err(unreadable)?;
                let found = found.ok_or_else(missing)?;
                found.data.and_then(|mut d| d.remove(&source.key)).map(String::into_bytes)
            }
        };
        let bytes = bytes.ok_or_else(missing)?;
        String::from_utf8(bytes).map_err(|_| invalid(format!("{} is not UTF-8 text", describe(source))))
    }

    /// `sealer` with the creation rules of the `.sops.yaml` the branch's
    /// worker last fetched, if it follows them. A `.sops.yaml` that does not
    /// parse withholds every Secret, saying why.
    pub(super) fn following(&mut self, sealer: &Arc<Sealer>, branch: &BranchKey) -> Arc<Sealer> {
        if !sealer.follows() {
            return sealer.clone();
        }
        let config = self.workers.get(branch).and_then(|w| w.handle.state.borrow().sops_config.clone());
        let rules = match config {
            None => None,
            Some(bytes) => {
                let cached = self.sops_rules.get(branch).filter(|(seen, _)| *seen == bytes);
                let parsed = match cached {
                    Some((_, parsed)) => parsed.clone(),
                    None => {
                        let parsed = CreationRules::parse(&bytes).map(|rules| rules.map(Arc::new));
                        self.sops_rules.insert(branch.clone(), (bytes, parsed.clone()));
                        parsed
                    }
                };
                match parsed {
                    Ok(rules) => rules,
                    Err(problem) => Some(Arc::new(CreationRules::broken(problem))),
                }
            }
        };
        Arc::new(sealer.with_rules(rules))
    }

    /// The Secrets no target writes: every credential Secret any GitProvider
    /// or Flux GitRepository names (whoever's shard it is), and the digest key.
    pub(super) fn secret_exclusions(&self) -> SecretExclusions {
        if self.settings.write_all_secrets {
            return SecretExclusions::none();
        }
        let mut credentials = vec![self.settings.digest_key_secret.clone()];
        for provider in self.stores.providers.state() {
            let ns = provider.namespace().unwrap_or_default();
            credentials.push((ns.clone(), provider.spec.secret_ref.name.clone()));
            if let Some(signing) = &provider.spec.signing_key {
                credentials.push((ns, signing.secret_ref.name.clone()));
            }
        }
        for repository in self.stores.flux_repositories.iter().flat_map(|store| store.state()) {
            let secret = repository.data["spec"]["secretRef"]["name"].as_str();
            if let (Some(ns), Some(name)) = (repository.metadata.namespace.clone(), secret) {
                credentials.push((ns, name.to_owned()));
            }
        }
        SecretExclusions::new(credentials)
    }

    /// The cluster's digest key: read from its Secret, or made once.
    async fn digest_key(&self) -> Result<DigestKey, Problem> {
        self.digest_key
            .get_or_try_init(|| async {
                let (ns, name) = (&self.settings.digest_key_secret.0, &self.settings.digest_key_secret.1);
                let api = Api::<Secret>::namespaced(self.calls.clone(), ns);
                let unusable = |why: String| {
                    invalid(format!(
                        "the operator's digest key (Secret {name:?} in namespace {ns:?}) is unusable: {why}; Secrets are withheld until it is fixed (delete it to have a new one made)"
                    ))
                };
                let read = |secret: Secret| {
                    let bytes = secret.data.and_then(|mut d| d.remove(DIGEST_KEY_FIELD)).map(|b| b.0);
                    bytes.and_then(DigestKey::new).ok_or_else(|| unusable(format!("no {DIGEST_KEY_FIELD} of 32 bytes or more")))
                };
                if let Some(found) = api.get_opt(name).await.map_err(|e| unusable(e.to_string()))? {
                    return read(found);
                }
                let key = DigestKey::generate();
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_owned(),
                            "gitops-reverser".to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([(DIGEST_KEY_FIELD.to_owned(), ByteString(key.bytes().to_vec()))])),
                    ..Secret::default()
                };
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => Ok(key),
                    // Another replica made it first: use theirs.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        read(api.get(name).await.map_err(|e| unusable(e.to_string()))?)
                    }
                    Err(e) => Err(unusable(e.to_string())),
                }
            })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AgeRecipients;

    fn spec(recipients: &[&str], from: usize) -> EncryptionSpec {
        EncryptionSpec {
            provider: crate::api::EncryptionProvider::Sops,
            age: AgeRecipients {
                recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
                recipients_from: (0..from)
                    .map(|i| RecipientsSource {
                        kind: RecipientsKind::ConfigMap,
                        name: format!("keys{i}"),
                        key: "age".into(),
                    })
                    .collect(),
            },
            follow_sops_config: false,
        }
    }

    #[test]
    fn recipients_come_inline_and_from_files() {
        let a = age::x25519::Identity::generate().to_public().to_string();
        let b = age::x25519::Identity::generate().to_public().to_string();
        let recipients = recipients_of(&spec(&[&a], 1), &[format!("# ops\n{b}\n")]).unwrap();
        assert_eq!(recipients.to_strings(), [a, b]);
    }

    #[test]
    fn a_bad_recipient_names_its_field_and_the_fix() {
        let good = age::x25519::Identity::generate().to_public().to_string();
        let problem = recipients_of(&spec(&[&good], 1), &["age1notakey\n".to_owned()]).unwrap_err();
        assert_eq!(problem.reason, Reason::InvalidConfiguration);
        assert!(
            problem.message.contains("recipientsFrom[0] (ConfigMap \"keys0\" key \"age\")"),
            "{}",
            problem.message
        );
        assert!(problem.message.contains("age-keygen -y"), "{}", problem.message);
        let problem = recipients_of(&spec(&[], 1), &["# nothing yet\n".to_owned()]).unwrap_err();
        assert!(problem.message.contains("names no recipient"), "{}", problem.message);
    }
}
