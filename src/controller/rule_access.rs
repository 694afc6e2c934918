//! What a rule's ServiceAccount may read (Flux's tenancy model): a rule that
//! names a ServiceAccount mirrors a resource only if that account may `list`
//! and `watch` it in the rule's scope. Asked with SubjectAccessReviews in the
//! background (the controller never waits on them), cached, and asked again
//! every [`RECHECK`], so that an RBAC change takes effect within a minute.
//! Until the first answer a resource counts as denied: nothing leaks while
//! the question is open.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use tokio::sync::{Notify, Semaphore, mpsc};

/// How long an answer holds before it is asked again.
pub const RECHECK: Duration = Duration::from_secs(30);
/// How soon a review that failed (not denied: failed) is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// Reviews in flight at once: each is an API request.
const CONCURRENT_REVIEWS: usize = 4;
/// The verbs a watch needs.
const VERBS: [&str; 2] = ["list", "watch"];

/// May this ServiceAccount list and watch this resource there?
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Question {
    pub account_namespace: String,
    pub account: String,
    pub group: String,
    pub plural: String,
    /// None: in every namespace (or a cluster-scoped resource).
    pub namespace: Option<String>,
}

impl Question {
    fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.account_namespace, self.account)
    }

    /// `plural.group` as RBAC rules name it, with where.
    pub fn describe(&self) -> String {
        let resource = if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        };
        match &self.namespace {
            Some(ns) => format!("{resource} in namespace {ns}"),
            None => format!("{resource} cluster-wide"),
        }
    }
}

/// What is known about one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Denied (or the review failed), with why.
    Denied(String),
    /// Not answered yet: treated as denied.
    Unknown,
}

#[derive(Debug)]
struct Answer {
    verdict: Verdict,
    /// When to ask again.
    due: Instant,
}

/// The cache of answers and the reviews in flight.
pub struct RuleAccess {
    calls: kube::Client,
    answers: HashMap<Question, Answer>,
    asking: HashSet<Question>,
    results: mpsc::UnboundedReceiver<(Question, Result<Verdict, String>)>,
    sender: mpsc::UnboundedSender<(Question, Result<Verdict, String>)>,
    changed: Arc<Notify>,
    running: Arc<Semaphore>,
}

impl RuleAccess {
    pub fn new(calls: kube::Client, changed: Arc<Notify>) -> Self {
        let (sender, results) = mpsc::unbounded_channel();
        Self {
            calls,
            answers: HashMap::new(),
            asking: HashSet::new(),
            results,
            sender,
            changed,
            running: Arc::new(Semaphore::new(CONCURRENT_REVIEWS)),
        }
    }

    /// The last answer (a stale one too, while it is asked again); asks
    /// when there is none or it is due.
    pub fn verdict(&mut self, question: &Question, now: Instant) -> Verdict {
        self.collect(now);
        let known = self.answers.get(question);
        if known.is_none_or(|a| a.due <= now) && self.asking.insert(question.clone()) {
            self.ask(question.clone());
        }
        known.map_or(Verdict::Unknown, |a| a.verdict.clone())
    }

    /// Forgets the questions no rule asks any more.
    pub fn retain(&mut self, asked: &HashSet<Question>) {
        self.answers.retain(|q, _| asked.contains(q));
    }

    fn collect(&mut self, now: Instant) {
        while let Ok((question, result)) = self.results.try_recv() {
            self.asking.remove(&question);
            let answer = match result {
                Ok(verdict) => Answer { verdict, due: now + RECHECK },
                Err(error) => Answer {
                    verdict: Verdict::Denied(format!("the access review failed: {error}")),
                    due: now + RETRY,
                },
            };
            if self.answers.get(&question).is_none_or(|a| a.verdict != answer.verdict) {
                tracing::info!(question = %question.describe(), user = %question.user(), verdict = ?answer.verdict, "ServiceAccount access");
            }
            self.answers.insert(question, answer);
        }
    }

    fn ask(&self, question: Question) {
        let (api, sender, changed, running) = (
            Api::<SubjectAccessReview>::all(self.calls.clone()),
            self.sender.clone(),
            self.changed.clone(),
            self.running.clone(),
        );
        tokio::spawn(async move {
            let Ok(_slot) = running.acquire_owned().await else { return };
            let mut verdict = Ok(Verdict::Allowed);
            for verb in VERBS {
                let review = review(&question, verb);
                match api.create(&PostParams::default(), &review).await {
                    Ok(answered) => {
                        if let Some(denied) = denial(&question, verb, &answered) {
                            verdict = Ok(Verdict::Denied(denied));
                            break;
                        }
                    }
                    Err(error) => {
                        verdict = Err(error.to_string());
                        break;
                    }
                }
            }
            let _ = sender.send((question, verdict));
            changed.notify_one();
        });
    }
}

/// The review of `verb` on the question's resource, as its ServiceAccount.
fn review(question: &Question, verb: &str) -> SubjectAccessReview {
    let namespace = &question.account_namespace;
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(question.user()),
            // What the API server gives a ServiceAccount's token.
            groups: Some(vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_owned(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                group: Some(question.group.clone()),
                resource: Some(question.plural.clone()),
                namespace: question.namespace.clone(),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// Why the answered review denies, or None if it allows.
fn denial(question: &Question, verb: &str, answered: &SubjectAccessReview) -> Option<String> {
    let status = answered.status.as_ref();
    if status.is_some_and(|s| s.allowed) {
        return None;
    }
    let mut why = format!(
        "ServiceAccount {}/{} may not {verb} {}",
        question.account_namespace,
        question.account,
        question.describe()
    );
    if let Some(error) = status.and_then(|s| s.evaluation_error.as_deref()).filter(|e| !e.is_empty()) {
        why.push_str(&format!(" ({error})"));
    }
    Some(why)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus;

    use super::*;

    fn question(namespace: Option<&str>) -> Question {
        Question {
            account_namespace: "team-a".into(),
            account: "mirror".into(),
            group: "rbac.authorization.k8s.io".into(),
            plural: "roles".into(),
            namespace: namespace.map(str::to_owned),
        }
    }

    #[test]
    fn the_review_asks_as_the_service_account_with_its_groups() {
        let review = review(&question(Some("team-a")), "watch");
        assert_eq!(review.spec.user.as_deref(), Some("system:serviceaccount:team-a:mirror"));
        let groups = review.spec.groups.unwrap();
        assert!(groups.contains(&"system:serviceaccounts:team-a".to_owned()), "{groups:?}");
        let attributes = review.spec.resource_attributes.unwrap();
        assert_eq!(attributes.verb.as_deref(), Some("watch"));
        assert_eq!(attributes.resource.as_deref(), Some("roles"));
        assert_eq!(attributes.group.as_deref(), Some("rbac.authorization.k8s.io"));
        assert_eq!(attributes.namespace.as_deref(), Some("team-a"));
        // Cluster-wide: no namespace at all, not an empty one.
        let cluster = super::review(&question(None), "list");
        assert_eq!(cluster.spec.resource_attributes.unwrap().namespace, None);
    }

    #[test]
    fn a_denial_names_the_account_the_verb_and_the_resource() {
        let mut answered = SubjectAccessReview::default();
        assert!(denial(&question(Some("team-a")), "list", &answered).is_some(), "no status is no permission");
        answered.status = Some(SubjectAccessReviewStatus { allowed: false, ..Default::default() });
        assert_eq!(
            denial(&question(Some("team-a")), "list", &answered).unwrap(),
            "ServiceAccount team-a/mirror may not list roles.rbac.authorization.k8s.io in namespace team-a"
        );
        answered.status = Some(SubjectAccessReviewStatus { allowed: true, ..Default::default() });
        assert_eq!(denial(&question(None), "watch", &answered), None);
        let core = Question { group: String::new(), plural: "configmaps".into(), ..question(None) };
        assert_eq!(core.describe(), "configmaps cluster-wide");
    }
}
