//! Computes and writes the status of every object this replica owns. Writes
//! only what changed; counters alone at most every 2 s per GitTarget, and
//! at most [`COUNTER_WRITES_PER_SECOND`] over all of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use tracing::warn;

use super::Controller;
use super::targets::key_of;
use crate::api::{ConditionType, GitProviderStatus, GitTargetStatus, ProviderKind, Reason, SigningKeyStatus};
use crate::route::{RuleSource, TargetKey};
use crate::shard::hash::shard_of_bytes;
use crate::status::conditions::{self, Desired, Status};
use crate::status::target::{Observation, desired};
use crate::telemetry::TargetLabels;
use crate::worker::remote::strip_userinfo;

/// Counters such as queuedEvents change constantly; write them this often.
const COUNTER_WRITE_INTERVAL: Duration = Duration::from_secs(2);
/// Counter-only GitTarget status writes per second over all the targets a
/// replica owns. Each is an etcd write and an event on every replica's
/// watch: 100 targets under load made 63 a second, a third of the API
/// server's writes, and 1,000 targets could make 500.
const COUNTER_WRITES_PER_SECOND: f64 = 5.0;

/// How often the counters of one GitTarget are written when this replica
/// owns `owned` of them (pure): every 2 s, stretched to stay in the budget.
fn counter_write_interval(owned: usize) -> Duration {
    COUNTER_WRITE_INTERVAL.max(Duration::from_secs_f64(owned as f64 / COUNTER_WRITES_PER_SECOND))
}

/// GitTarget status writes in flight at once: one by one, 32 targets whose
/// counters changed held a controller pass (and with it a handover) for
/// hundreds of milliseconds.
const STATUS_WRITES_AT_ONCE: usize = 8;

/// What was last written per object, so a lagging cache never causes a
/// duplicate write or a duplicate Event.
#[derive(Default)]
pub struct Written {
    targets: BTreeMap<TargetKey, (GitTargetStatus, Instant)>,
    resources: BTreeMap<String, (Vec<Condition>, Option<SigningKeyStatus>)>,
}

impl Controller {
    pub(super) async fn publish_statuses(&mut self) {
        let now = SystemTime::now();
        let mut ready = Vec::new();
        let mut writes = Vec::new();
        let mut owned = 0;
        for target in self.stores.targets.state() {
            let key = key_of(&target);
            let Some(state) = self.targets.get(&key) else { continue };
            let shard = match state.resolved() {
                Some(r) => self.settings.shards.shard_of(&r.branch_key),
                None => shard_of_bytes(format!("gt/{key}").as_bytes(), self.settings.shards.shards),
            };
            if !self.ownership.is_active(shard) {
                // Another replica writes it; forget what we wrote, it may change meanwhile.
                self.written.targets.remove(&key);
                continue;
            }
            owned += 1;
            // A suspended target's branch may go on for others: not its worker.
            let worker = state
                .resolved()
                .filter(|_| !state.suspended)
                .and_then(|r| self.workers.get(&r.branch_key))
                .map(|w| w.handle.state.borrow().clone());
            let (url, branch) = state.resolved().map_or((String::new(), String::new()), |r| {
                (strip_userinfo(&r.provider.url), r.branch.clone())
            });
            let observation = Observation {
                generation: target.metadata.generation,
                problem: state.problem(),
                access: &state.access,
                worker: worker.as_ref(),
                withheld_secrets: state.withheld.len(),
                unsanitizable: &state.unsanitizable,
                backlogged: state.backlogged,
                settings_overridden: state.settings_overridden.as_deref(),
                suspended: state.suspended,
                url: &url,
                branch: &branch,
                owner: Some((&self.settings.instance, shard)),
            };
            let previous =
                self.written.targets.get(&key).map(|(s, _)| s.clone()).or_else(|| target.status.clone());
            let next = desired(previous.as_ref(), &observation, now);
            ready.push((
                TargetLabels { namespace: key.namespace.clone(), name: key.name.clone() },
                next.conditions
                    .iter()
                    .any(|c| c.type_ == ConditionType::Ready.as_str() && c.status == "True"),
            ));
            let before = previous.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
            // A transition is written at once; messages with counters in
            // them ("3 events queued") change with every push, and go at
            // the counters' pace.
            let conditions_changed = !conditions::same_states(&before, &next.conditions)
                || previous.as_ref().map(|p| p.observed_generation) != Some(next.observed_generation);
            let counters_changed = previous.as_ref().is_none_or(|p| {
                !conditions::same(&before, &next.conditions)
                    || p.worker_status != next.worker_status
                    || p.git_status.as_ref().map(|g| (g.branch_exists, &g.last_commit_sha))
                        != next.git_status.as_ref().map(|g| (g.branch_exists, &g.last_commit_sha))
            });
            if !conditions_changed && !counters_changed {
                continue;
            }
            let counters_only = !conditions_changed;
            writes.push((target, key, before, next, counters_only));
        }
        let interval = counter_write_interval(owned);
        let written = &self.written;
        writes.retain(|(_, key, _, _, counters_only)| {
            !counters_only || written.targets.get(key).is_none_or(|(_, at)| at.elapsed() >= interval)
        });
        let writer = &self.writer;
        let written: Vec<_> = futures::stream::iter(writes)
            .map(|(target, key, before, next, _)| async move {
                match writer.patch(target.as_ref(), &next).await {
                    Ok(()) => {
                        writer.record_transitions(target.as_ref(), &before, &next.conditions).await;
                        Some((key, next))
                    }
                    Err(error) => {
                        warn!(target = %key, %error, "cannot write GitTarget status");
                        None
                    }
                }
            })
            .buffer_unordered(STATUS_WRITES_AT_ONCE)
            .collect()
            .await;
        for (key, next) in written.into_iter().flatten() {
            self.written.targets.insert(key, (next, Instant::now()));
        }
        self.settings.metrics.set_targets_ready(ready);
        self.publish_rules().await;
        self.publish_providers().await;
    }

    async fn publish_rules(&mut self) {
        let targets: BTreeMap<TargetKey, bool> =
            self.targets.iter().map(|(k, s)| (k.clone(), s.problem().is_none())).collect();
        for rule in self.stores.watch_rules.state() {
            let source = RuleSource::WatchRule {
                namespace: rule.namespace().unwrap_or_default(),
                name: rule.name_any(),
            };
            let sink = TargetKey::new(rule.namespace().unwrap_or_default(), &rule.spec.sink_ref.name);
            let ready = self.rule_ready(&source, &sink, &targets, rule.spec.suspend);
            self.write_resource(
                rule.as_ref(),
                format!("wr/{}", source_name(&source)),
                rule.status.as_ref().map(|s| (&s.conditions[..], s.observed_generation, None)),
                rule.metadata.generation,
                ready,
                None,
            )
            .await;
        }
        for rule in self.stores.cluster_watch_rules.state() {
            let source = RuleSource::ClusterWatchRule { name: rule.name_any() };
            let sink = TargetKey::new(&rule.spec.sink_ref.namespace, &rule.spec.sink_ref.name);
            let ready = self.rule_ready(&source, &sink, &targets, rule.spec.suspend);
            self.write_resource(
                rule.as_ref(),
                format!("cwr/{}", source_name(&source)),
                rule.status.as_ref().map(|s| (&s.conditions[..], s.observed_generation, None)),
                rule.metadata.generation,
                ready,
                None,
            )
            .await;
        }
    }

    fn rule_ready(
        &self,
        source: &RuleSource,
        sink: &TargetKey,
        targets: &BTreeMap<TargetKey, bool>,
        suspended: bool,
    ) -> Desired {
        let problems = self.rule_problems.get(source).cloned().unwrap_or_default();
        let (status, reason, message) = match targets.get(sink) {
            None => (
                Status::False,
                Reason::InvalidConfiguration,
                format!(
                    "GitTarget {:?} not found in namespace {:?}; create it or fix spec.sinkRef",
                    sink.name, sink.namespace
                ),
            ),
            Some(_) if problems.iter().any(|p| p.starts_with("rules[")) => {
                (Status::False, Reason::InvalidConfiguration, problems.join("; "))
            }
            Some(_) if suspended => (
                Status::False,
                Reason::Suspended,
                "suspended (spec.suspend): records nothing, and what it wrote stays; when resumed, its GitTarget \
                 catches up with one sync commit"
                    .to_owned(),
            ),
            Some(_) if self.rule_denials.contains_key(source) => (
                Status::False,
                Reason::AccessDenied,
                format!(
                    "{}: none of it is mirrored (the rest is); grant the ServiceAccount list and watch, or narrow the rule",
                    self.rule_denials[source].join("; ")
                ),
            ),
            Some(ok) => {
                let mut message = format!("writing to GitTarget {sink}");
                if !ok {
                    message.push_str(" (which is not Ready; see its status)");
                }
                if !problems.is_empty() {
                    message.push_str(&format!("; ignored: {}", problems.join("; ")));
                }
                (Status::True, Reason::Ready, message)
            }
        };
        Desired { type_: ConditionType::Ready, status, reason, message }
    }

    async fn publish_providers(&mut self) {
        for provider in self.stores.providers.state() {
            let (ns, name) = (provider.namespace().unwrap_or_default(), provider.name_any());
            let users: Vec<_> = self
                .stores
                .targets
                .state()
                .into_iter()
                .filter(|t| {
                    t.namespace().as_deref() == Some(&ns)
                        && t.spec.provider_ref.kind == ProviderKind::GitProvider
                        && t.spec.provider_ref.name == name
                })
                .filter_map(|t| self.targets.get(&key_of(&t)))
                .collect();
            // A provider is as good as the credentials its targets could build from it.
            let problem = users.iter().find_map(|state| {
                let problem = state.problem()?.clone();
                (problem.reason == Reason::InvalidConfiguration && problem.message.contains("Secret"))
                    .then_some(problem)
            });
            // The key as its targets read it: the controller reads Secrets for targets only.
            let signing = users
                .iter()
                .filter(|_| provider.spec.signing_key.is_some())
                .find_map(|state| state.resolved()?.signing.as_deref())
                .map(signing_status);
            let ready = match problem {
                Some(problem) => Desired {
                    type_: ConditionType::Ready,
                    status: Status::False,
                    reason: problem.reason,
                    message: problem.message,
                },
                None => Desired {
                    type_: ConditionType::Ready,
                    status: Status::True,
                    reason: Reason::Ready,
                    message: "configuration accepted; each GitTarget verifies write access itself".into(),
                },
            };
            self.write_resource(
                provider.as_ref(),
                format!("gp/{ns}/{name}"),
                provider
                    .status
                    .as_ref()
                    .map(|s| (&s.conditions[..], s.observed_generation, s.signing_key.as_ref())),
                provider.metadata.generation,
                ready,
                signing,
            )
            .await;
        }
    }

    /// Writes the Ready condition of a GitProvider or (Cluster)WatchRule;
    /// `signing` is a provider's public signing key (always `None` for rules).
    async fn write_resource<K>(
        &mut self,
        object: &K,
        key: String,
        current: Option<(&[Condition], Option<i64>, Option<&SigningKeyStatus>)>,
        generation: Option<i64>,
        ready: Desired,
        signing: Option<SigningKeyStatus>,
    ) where
        K: crate::status::writer::StatusApi,
    {
        if !self.ownership.is_active(shard_of_bytes(key.as_bytes(), self.settings.shards.shards)) {
            self.written.resources.remove(&key);
            return;
        }
        let (before, signing_before) = self
            .written
            .resources
            .get(&key)
            .cloned()
            .or_else(|| current.map(|(conditions, _, signing)| (conditions.to_vec(), signing.cloned())))
            .unwrap_or_default();
        let now = crate::status::target::to_time(SystemTime::now());
        // A provider's status; a rule's is the same without `signingKey`.
        let next = GitProviderStatus {
            conditions: conditions::build(&before, &[ready], generation, &now),
            observed_generation: generation,
            signing_key: signing,
        };
        if conditions::same(&before, &next.conditions)
            && signing_before == next.signing_key
            && current.is_some_and(|(_, observed, _)| observed == generation)
        {
            return;
        }
        match self.writer.patch(object, &next).await {
            Ok(()) => {
                self.writer.record_transitions(object, &before, &next.conditions).await;
                self.written.resources.insert(key, (next.conditions, next.signing_key));
            }
            Err(error) => warn!(object = %key, %error, "cannot write status"),
        }
    }
}

/// The public half of a signing key, for a GitProvider's status.
fn signing_status(key: &crate::worker::signing::SigningKey) -> SigningKeyStatus {
    use crate::worker::signing::Format;
    SigningKeyStatus {
        format: match key.format() {
            Format::Ssh => crate::api::SigningFormat::Ssh,
            Format::OpenPgp => crate::api::SigningFormat::Openpgp,
        },
        public_key: key.public_key().map(str::to_owned),
        fingerprint: key.fingerprint().to_owned(),
    }
}

fn source_name(source: &RuleSource) -> String {
    match source {
        RuleSource::WatchRule { namespace, name } => format!("{namespace}/{name}"),
        RuleSource::ClusterWatchRule { name } => name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_written_every_two_seconds_until_the_budget_stretches_it() {
        assert_eq!(counter_write_interval(0), COUNTER_WRITE_INTERVAL);
        assert_eq!(counter_write_interval(10), COUNTER_WRITE_INTERVAL);
        assert_eq!(counter_write_interval(33), Duration::from_secs_f64(6.6));
        assert_eq!(counter_write_interval(1000), Duration::from_secs(200));
    }
}
