//! Per-target controller state, and resolving a GitTarget into a provider,
//! credentials and a branch key. A target that cannot be resolved carries a
//! Problem that its status reports.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use zeroize::Zeroize;

use super::Controller;
use super::resolve::{
    ProviderConfig, check_branch, check_host, check_url, commit_policy, from_flux_git_repository,
    from_git_provider,
};
use crate::api::{GitTarget, ProviderKind, Reason};
use crate::route::{BranchKey, TargetKey};
use crate::sanitize::normalize_base_folder;
use crate::status::Problem;
use crate::status::target::Access;
use crate::worker::core::TargetPolicy;
use crate::worker::credentials::{Cleartext, Credentials};
use crate::worker::remote::strip_userinfo;
use crate::worker::signing::SigningKey;

/// Re-read Secrets this often, so rotated credentials are picked up.
const RESOLVED_TTL: Duration = Duration::from_secs(60);
/// Retry a failed resolution (e.g. a missing Secret) this often.
const PROBLEM_TTL: Duration = Duration::from_secs(5);

/// A GitTarget that can be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub provider: ProviderConfig,
    pub credentials: Credentials,
    /// Signs every commit, when the provider names a signing key.
    pub signing: Option<Arc<SigningKey>>,
    pub branch_key: BranchKey,
    pub branch: String,
    pub folder: String,
    /// Its message template (its own or its provider's) and prune policy.
    pub policy: TargetPolicy,
}

impl Resolved {
    /// What a write-access check proves: everything but the commit policy,
    /// which can change without a new check.
    fn connection(&self) -> Resolved {
        Resolved { policy: TargetPolicy::default(), ..self.clone() }
    }
}

/// What a target was resynced as: branch, folder, owned (group, plural)s and
/// a hash of the rules that point at it.
pub type SyncedAs = (BranchKey, String, BTreeSet<(String, String)>, u64, crate::api::Layout);

/// What the controller remembers about one GitTarget.
#[derive(Debug)]
pub struct TargetState {
    pub generation: Option<i64>,
    inputs: String,
    resolved_at: Instant,
    pub outcome: Result<Resolved, Problem>,
    pub access: Access,
    /// The current credentials passed a write check at least once.
    pub verified_once: bool,
    pub check_seq: u64,
    pub checking: bool,
    pub next_check: Option<Instant>,
    /// Checks in a row that panicked: each waits twice as long before the next.
    pub check_panics: u32,
    /// What the target was last resynced as: branch, folder, owned resources.
    pub synced_as: Option<SyncedAs>,
    /// Secrets selected but withheld, as "namespace/name".
    pub withheld: HashSet<String>,
    /// Selected objects that do not sanitize, as "Kind namespace/name", with why.
    pub unsanitizable: BTreeMap<String, String>,
    /// Its changes overflowed the watch's limit and are dropped until its
    /// worker caught up and it is resynced.
    pub backlogged: bool,
    /// Why its provider's push settings are not the ones its branch uses.
    pub settings_overridden: Option<String>,
    /// `spec.suspend`: nothing is committed or pushed for it.
    pub suspended: bool,
    /// `spec.layout`.
    pub layout: crate::api::Layout,
    /// Another target claimed this one's folder first (see
    /// `reject_shared_folders`); it is not written meanwhile.
    pub folder_conflict: Option<Problem>,
    /// It won its folder in the last pass: a newcomer never takes it over.
    pub holds_folder: bool,
}

impl TargetState {
    pub fn resolved(&self) -> Option<&Resolved> {
        self.outcome.as_ref().ok()
    }

    pub fn problem(&self) -> Option<&Problem> {
        self.outcome.as_ref().err().or(self.folder_conflict.as_ref())
    }

    /// Whether this target's own credentials proved write access. Targets
    /// that share a branch share a worker (and its credentials), so a target
    /// is only routed once its own credentials could write. A network error
    /// does not revoke that: changes then queue until the server is back.
    pub fn may_write(&self) -> bool {
        self.folder_conflict.is_none()
            && self.verified_once
            && !matches!(
                &self.access,
                Access::Failed {
                    reason: Reason::AuthenticationFailed
                        | Reason::RepositoryNotFound
                        | Reason::InvalidConfiguration,
                    ..
                }
            )
    }
}

/// A claim on a folder of a branch: (newcomer, created, target, (branch,
/// folder)); a newcomer did not hold the folder in the last pass.
type FolderClaim = (bool, Option<k8s_openapi::jiff::Timestamp>, TargetKey, (BranchKey, String));

/// The claims that lose to an earlier claim on the same folder (pure): the
/// target that holds it keeps it, then the earliest creation wins (whole
/// seconds: a newcomer may tie), then the smaller name.
fn later_claims(mut claims: Vec<FolderClaim>) -> Vec<(TargetKey, (BranchKey, String))> {
    claims.sort();
    let mut seen: HashSet<(BranchKey, String)> = HashSet::new();
    claims
        .into_iter()
        .filter(|(_, _, _, slot)| !seen.insert(slot.clone()))
        .map(|(_, _, key, slot)| (key, slot))
        .collect()
}

pub fn key_of(target: &GitTarget) -> TargetKey {
    TargetKey::new(target.namespace().unwrap_or_default(), target.name_any())
}

impl Controller {
    /// Resolves every GitTarget whose inputs changed or whose result aged.
    pub(super) async fn resolve_targets(&mut self) {
        let targets = self.stores.targets.state();
        let present: HashSet<TargetKey> = targets.iter().map(|t| key_of(t)).collect();
        self.targets.retain(|key, _| present.contains(key));
        for target in &targets {
            let key = key_of(target);
            let inputs = self.inputs_of(target);
            if let Some(state) = self.targets.get_mut(&key) {
                state.suspended = target.spec.suspend;
                state.layout = target.spec.layout;
                let ttl = if state.outcome.is_ok() { RESOLVED_TTL } else { PROBLEM_TTL };
                if state.inputs == inputs && state.resolved_at.elapsed() < ttl {
                    continue;
                }
            }
            let outcome = self.resolve(target).await;
            match self.targets.get_mut(&key) {
                Some(state) => {
                    if state.outcome.as_ref().ok().map(Resolved::connection)
                        != outcome.as_ref().ok().map(Resolved::connection)
                    {
                        // New URL, branch or credentials: the old check says nothing.
                        state.access = Access::Checking;
                        state.verified_once = false;
                        state.next_check = None;
                        state.check_seq += 1;
                        state.checking = false;
                    }
                    state.outcome = outcome;
                    state.inputs = inputs;
                    state.resolved_at = Instant::now();
                    state.generation = target.metadata.generation;
                }
                None => {
                    self.targets.insert(
                        key,
                        TargetState {
                            generation: target.metadata.generation,
                            inputs,
                            resolved_at: Instant::now(),
                            outcome,
                            access: Access::Checking,
                            verified_once: false,
                            check_seq: 0,
                            checking: false,
                            next_check: None,
                            check_panics: 0,
                            synced_as: None,
                            withheld: HashSet::new(),
                            unsanitizable: BTreeMap::new(),
                            backlogged: false,
                            settings_overridden: None,
                            suspended: target.spec.suspend,
                            layout: target.spec.layout,
                            folder_conflict: None,
                            holds_folder: false,
                        },
                    );
                }
            }
        }
    }

    /// Two targets writing the same folder of the same branch would delete
    /// each other's files. Only a target whose own credentials proved it may
    /// push claims a folder (one that cannot write blocks nobody). The
    /// target that held the folder in the last pass keeps it, else the
    /// oldest claim wins (creation time, then name), so a newcomer cannot
    /// take a folder in use, even one created in the same second. The
    /// message names neither target: each would learn of the other's
    /// namespace. Run after the access checks of the pass, before routing.
    pub(super) fn reject_shared_folders(&mut self) {
        let created: HashMap<TargetKey, _> = self
            .stores
            .targets
            .state()
            .iter()
            .map(|t| (key_of(t), t.metadata.creation_timestamp.clone().map(|c| c.0)))
            .collect();
        let claims = self.targets.iter_mut().filter_map(|(key, state)| {
            state.folder_conflict = None;
            let newcomer = !std::mem::take(&mut state.holds_folder);
            let resolved = state.resolved().filter(|_| state.may_write())?;
            let slot = (resolved.branch_key.clone(), resolved.folder.clone());
            state.holds_folder = true;
            Some((newcomer, created.get(key).cloned().flatten(), key.clone(), slot))
        });
        for (key, (branch, folder)) in later_claims(claims.collect()) {
            let problem = Problem::new(
                Reason::InvalidConfiguration,
                format!(
                    "another GitTarget already writes folder {folder:?} of branch {:?} in {}; give each GitTarget its own baseFolder",
                    branch.branch,
                    strip_userinfo(&branch.url)
                ),
            );
            let state = self.targets.get_mut(&key).expect("key from the map");
            state.folder_conflict = Some(problem);
            state.holds_folder = false;
        }
    }

    /// What resolution depends on, besides the Secret's content.
    fn inputs_of(&self, target: &GitTarget) -> String {
        let ns = target.namespace().unwrap_or_default();
        let name = &target.spec.provider_ref.name;
        let provider_version = match target.spec.provider_ref.kind {
            ProviderKind::GitProvider => self
                .stores
                .providers
                .find(|p| p.namespace().as_deref() == Some(&ns) && &p.name_any() == name)
                .and_then(|p| p.metadata.resource_version.clone()),
            ProviderKind::GitRepository => self.stores.flux_repositories.as_ref().and_then(|store| {
                store
                    .find(|r| {
                        r.metadata.namespace.as_deref() == Some(&ns) && r.metadata.name.as_ref() == Some(name)
                    })
                    .and_then(|r| r.metadata.resource_version.clone())
            }),
        };
        format!("{:?}/{:?}", target.metadata.generation, provider_version)
    }

    async fn resolve(&self, target: &GitTarget) -> Result<Resolved, Problem> {
        let ns = target.namespace().unwrap_or_default();
        let reference = &target.spec.provider_ref;
        let (provider, provider_template) = match reference.kind {
            ProviderKind::GitProvider => {
                let found = self
                    .stores
                    .providers
                    .find(|p| p.namespace().as_deref() == Some(&ns) && p.name_any() == reference.name)
                    .ok_or_else(|| {
                        Problem::new(
                            Reason::InvalidConfiguration,
                            format!("GitProvider {:?} not found in namespace {ns:?}; create it or fix spec.providerRef.name", reference.name),
                        )
                    })?;
                let template = found.spec.commit.as_ref().and_then(|c| c.message_template.clone());
                (from_git_provider(&found), template)
            }
            ProviderKind::GitRepository => {
                let store = self.stores.flux_repositories.as_ref().ok_or_else(|| {
                    Problem::new(
                        Reason::InvalidConfiguration,
                        "the Flux GitRepository CRD (source.toolkit.fluxcd.io/v1) is not installed",
                    )
                })?;
                let found = store
                    .find(|r| {
                        r.metadata.namespace.as_deref() == Some(&ns)
                            && r.metadata.name.as_deref() == Some(&reference.name)
                    })
                    .ok_or_else(|| {
                        Problem::new(
                            Reason::InvalidConfiguration,
                            format!("Flux GitRepository {:?} not found in namespace {ns:?}", reference.name),
                        )
                    })?;
                (from_flux_git_repository(&found)?, None)
            }
        };
        let policy = commit_policy(&target.spec, provider_template.as_deref(), &provider.describe)?;
        check_url(&provider)?;
        check_branch(&target.spec.branch, &provider)?;
        check_host(&provider, &self.settings.allowed_git_hosts)?;
        let credentials = self.credentials(&ns, &provider).await?;
        let signing = self.signing_key(&ns, &provider).await?;
        Ok(Resolved {
            branch_key: BranchKey::new(&provider.url, &target.spec.branch),
            branch: target.spec.branch.clone(),
            folder: normalize_base_folder(&target.spec.base_folder),
            credentials,
            signing,
            provider,
            policy,
        })
    }

    async fn credentials(&self, ns: &str, provider: &ProviderConfig) -> Result<Credentials, Problem> {
        let Some(name) = &provider.secret else {
            return Credentials::anonymous(&provider.url)
                .map_err(|e| Problem::new(e.reason(), e.to_string()));
        };
        let mut data = self.secret_data(ns, name, provider, "the git credentials").await?;
        let cleartext = if provider.insecure { Cleartext::Allow } else { Cleartext::Refuse };
        let credentials = Credentials::from_secret(name, &data, &provider.url, cleartext)
            .map_err(|e| Problem::new(e.reason(), e.to_string()));
        // The values live on in `Credentials` (wiped on drop); wipe this copy now.
        data.values_mut().for_each(|value| value.0.zeroize());
        credentials
    }

    /// The provider's commit signing key. A key that is missing or cannot
    /// sign is the target's problem: it is not written at all, never unsigned.
    async fn signing_key(
        &self,
        ns: &str,
        provider: &ProviderConfig,
    ) -> Result<Option<Arc<SigningKey>>, Problem> {
        let Some(signing) = &provider.signing else { return Ok(None) };
        let name = &signing.secret;
        let mut data = self.secret_data(ns, name, provider, "the commit signing key (signingKey)").await?;
        let key = SigningKey::from_secret_data(name, &data, signing.format)
            .map_err(|e| Problem::new(e.reason(), format!("{} signs commits, but: {e}", provider.describe)));
        // The key lives on decrypted in `SigningKey` (wiped on drop); wipe this copy now.
        data.values_mut().for_each(|value| value.0.zeroize());
        key.map(|key| Some(Arc::new(key)))
    }

    /// The `data` of Secret `name`; `holds` says what it is for, in messages.
    async fn secret_data(
        &self,
        ns: &str,
        name: &str,
        provider: &ProviderConfig,
        holds: &str,
    ) -> Result<BTreeMap<String, ByteString>, Problem> {
        let invalid = |message: String| Problem::new(Reason::InvalidConfiguration, message);
        let secret = Api::<Secret>::namespaced(self.calls.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| invalid(format!("cannot read Secret {name:?} in namespace {ns:?}: {e}")))?
            .ok_or_else(|| {
                invalid(format!(
                    "Secret {name:?} (named by {}) not found in namespace {ns:?}; create it with {holds}",
                    provider.describe
                ))
            })?;
        Ok(secret.data.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    /// Issue 16: the name that sorted first won a shared folder, so anyone
    /// could squat a victim's folder with a target named "a..." that could
    /// not even push (the caller passes only targets that proved write access).
    #[test]
    fn the_oldest_claim_on_a_folder_wins_whatever_the_names() {
        let branch = BranchKey::new("ssh://git/repo", "main");
        let slot = (branch.clone(), "apps".to_owned());
        let at = |s: i64| Some(Timestamp::from_second(s).unwrap());
        let victim = TargetKey::new("team-b", "zz-prod");
        let squatter = TargetKey::new("team-a", "aa-squat");
        let elsewhere = TargetKey::new("team-c", "other");
        let claims = vec![
            (true, at(200), squatter.clone(), slot.clone()),
            (true, at(100), victim.clone(), slot.clone()),
            (true, at(300), elsewhere.clone(), (branch, "other".to_owned())),
        ];
        assert_eq!(later_claims(claims), vec![(squatter, slot)]);
    }

    /// Creation times are whole seconds: a newcomer created in the second
    /// its victim was, with a name that sorts first, took the folder (seen
    /// in CI). The target that holds a folder keeps it.
    #[test]
    fn the_target_that_holds_a_folder_keeps_it_against_a_newcomer_of_the_same_second() {
        let slot = (BranchKey::new("ssh://git/repo", "main"), "apps".to_owned());
        let at = Some(Timestamp::from_second(100).unwrap());
        let victim = TargetKey::new("team-b", "zz-prod");
        let copy = TargetKey::new("team-a", "ab-copy");
        let claims = vec![(true, at, copy.clone(), slot.clone()), (false, at, victim.clone(), slot.clone())];
        assert_eq!(later_claims(claims), vec![(copy.clone(), slot.clone())]);
        let newcomers = vec![(true, at, copy, slot.clone()), (true, at, victim.clone(), slot.clone())];
        assert_eq!(later_claims(newcomers), vec![(victim, slot)], "between newcomers, the name decides");
    }
}
