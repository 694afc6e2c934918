//! The rule table: compiled WatchRules and ClusterWatchRules, the watches
//! they need, and the targets each event goes to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::catalog::{ResourceCatalog, ServedResource, WILDCARD_EXCLUDED};
use super::keys::TargetKey;
use super::selector::{Selector, SelectorError};
use crate::api::{ClusterWatchRuleSpec, Operation, Rule, WatchRuleSpec};
use crate::quiet::{Ignore, PointerError};

/// Where a compiled rule came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleSource {
    WatchRule { namespace: String, name: String },
    ClusterWatchRule { name: String },
}

/// One entry of a rule's `rules` list, ready for matching.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub source: RuleSource,
    pub target: TargetKey,
    /// Some for a WatchRule: it sees only its own namespace.
    pub namespace: Option<String>,
    operations: Vec<Operation>,
    api_groups: Vec<String>,
    api_versions: Vec<String>,
    resources: Vec<String>,
    selector: Option<Selector>,
    /// (group, plural) its ServiceAccount may not read: never selected.
    denied: BTreeSet<(String, String)>,
    /// Its ignore rules; None (the common case) costs nothing per event.
    ignore: Option<Arc<Ignore>>,
    /// Its rule is suspended: it selects nothing, but what it owns stays.
    suspended: bool,
}

/// Why a rule could not be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("rules[{index}]: {source}")]
pub struct RuleError {
    pub index: usize,
    #[source]
    pub source: RuleProblem,
}

/// What is wrong with one entry of a rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleProblem {
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error("ignoreFields: {0}")]
    IgnoreField(#[from] PointerError),
}

/// Where a watch looks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every namespace, or a cluster-scoped resource.
    All,
    Namespace(String),
}

/// One shared watch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchSpec {
    pub resource: ServedResource,
    pub scope: Scope,
}

/// The watches every rule together needs, and what could not be watched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchPlan {
    pub watches: BTreeSet<WatchSpec>,
    /// Per rule source, messages about selections that cannot be served.
    pub problems: BTreeMap<RuleSource, Vec<String>>,
}

/// The operations a target records for an object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpMask(u8);

impl OpMask {
    fn bit(op: Operation) -> u8 {
        match op {
            Operation::Create => 1,
            Operation::Update => 2,
            Operation::Delete => 4,
            Operation::All => 7,
        }
    }

    pub fn add(&mut self, op: Operation) {
        self.0 |= Self::bit(op);
    }

    pub fn covers(self, op: Operation) -> bool {
        self.0 & Self::bit(op) == Self::bit(op)
    }
}

/// What a target makes of an object it selects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selected {
    /// The operations it records.
    pub mask: OpMask,
    /// The ignore rules of every selecting entry, merged; None if none has any.
    pub ignore: Option<Arc<Ignore>>,
}

/// All compiled rules.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    rules: Vec<CompiledRule>,
}

impl RouteTable {
    /// Replaces the rules of a WatchRule. Its sink is always in its own namespace.
    pub fn set_watch_rule(
        &mut self,
        namespace: &str,
        name: &str,
        spec: &WatchRuleSpec,
    ) -> Result<(), RuleError> {
        let source = RuleSource::WatchRule { namespace: namespace.into(), name: name.into() };
        let target = TargetKey::new(namespace, &spec.sink_ref.name);
        self.replace(source, target, Some(namespace.to_owned()), &spec.rules, spec.suspend)
    }

    /// Replaces the rules of a ClusterWatchRule.
    pub fn set_cluster_watch_rule(
        &mut self,
        name: &str,
        spec: &ClusterWatchRuleSpec,
    ) -> Result<(), RuleError> {
        let source = RuleSource::ClusterWatchRule { name: name.into() };
        let target = TargetKey::new(&spec.sink_ref.namespace, &spec.sink_ref.name);
        self.replace(source, target, None, &spec.rules, spec.suspend)
    }

    /// Keeps only the rules whose target passes `keep`.
    pub fn retain_targets(&mut self, keep: impl Fn(&TargetKey) -> bool) {
        self.rules.retain(|rule| keep(&rule.target));
    }

    pub fn remove(&mut self, source: &RuleSource) {
        self.rules.retain(|rule| &rule.source != source);
    }

    fn replace(
        &mut self,
        source: RuleSource,
        target: TargetKey,
        namespace: Option<String>,
        rules: &[Rule],
        suspended: bool,
    ) -> Result<(), RuleError> {
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let selector = rule
                    .label_selector
                    .as_ref()
                    .map(Selector::compile)
                    .transpose()
                    .map_err(|source| RuleError { index, source: source.into() })?;
                let ignore = Ignore::compile(&rule.ignore_fields, &rule.ignore_managers)
                    .map_err(|source| RuleError { index, source: source.into() })?
                    .map(Arc::new);
                Ok(CompiledRule {
                    source: source.clone(),
                    target: target.clone(),
                    namespace: namespace.clone(),
                    operations: rule.operations.clone(),
                    api_groups: rule.api_groups.clone(),
                    api_versions: rule.api_versions.clone(),
                    resources: rule.resources.clone(),
                    selector,
                    denied: BTreeSet::new(),
                    ignore,
                    suspended,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.remove(&source);
        self.rules.extend(compiled);
        Ok(())
    }

    /// The resources of `catalog` that `source`'s rules select and may
    /// watch, each with where: its namespace for a WatchRule's namespaced
    /// resource, None (everywhere) otherwise. One entry per (group, plural).
    pub fn selected_resources(
        &self,
        source: &RuleSource,
        catalog: &ResourceCatalog,
    ) -> BTreeMap<(String, String), Option<String>> {
        let mut selected = BTreeMap::new();
        for rule in self.rules.iter().filter(|rule| &rule.source == source) {
            for resource in catalog.iter().filter(|r| rule.selects_any(r) && rule.can_watch(r)) {
                let scope = rule.namespace.clone().filter(|_| resource.namespaced);
                selected.insert((resource.group.clone(), resource.plural.clone()), scope);
            }
        }
        selected
    }

    /// Stops `source`'s rules from selecting these (group, plural) pairs:
    /// its ServiceAccount may not read them.
    pub fn deny(&mut self, source: &RuleSource, denied: &BTreeSet<(String, String)>) {
        for rule in self.rules.iter_mut().filter(|rule| &rule.source == source) {
            rule.denied.extend(denied.iter().cloned());
        }
    }

    /// Every target some rule writes to.
    pub fn targets(&self) -> BTreeSet<TargetKey> {
        self.rules.iter().map(|rule| rule.target.clone()).collect()
    }

    /// The targets whose rules select this object, each with the operations
    /// it records and its ignore rules. Selection alone decides where a file
    /// belongs; the mask decides which changes are written.
    pub fn selecting(
        &self,
        resource: &ServedResource,
        namespace: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> BTreeMap<TargetKey, Selected> {
        let mut selected: BTreeMap<TargetKey, Selected> = BTreeMap::new();
        for rule in self.rules.iter().filter(|rule| rule.selects(resource) && rule.reaches(namespace)) {
            if rule.selector.as_ref().is_none_or(|s| s.matches(labels)) {
                let entry = selected.entry(rule.target.clone()).or_default();
                for op in &rule.operations {
                    entry.mask.add(*op);
                }
                if let Some(ignore) = &rule.ignore {
                    entry.ignore = Some(match entry.ignore.take() {
                        None => ignore.clone(),
                        Some(merged) if merged == *ignore => merged,
                        Some(merged) => Arc::new(merged.union(ignore)),
                    });
                }
            }
        }
        selected
    }

    /// Whether `target` records `operation` on some resource matching (group, plural).
    pub fn records(&self, target: &TargetKey, group: &str, plural: &str, operation: Operation) -> bool {
        self.rules.iter().any(|rule| {
            &rule.target == target
                && rule.group_matches(group)
                && rule.resources.iter().any(|r| r == plural || r == "*")
                && !rule.suspended
                && !rule.is_denied(group, plural)
                && rule.operations.iter().any(|op| op.covers(operation))
        })
    }

    /// The targets that want this event.
    pub fn route(
        &self,
        resource: &ServedResource,
        namespace: Option<&str>,
        labels: &BTreeMap<String, String>,
        operation: Operation,
    ) -> BTreeSet<TargetKey> {
        self.rules
            .iter()
            .filter(|rule| rule.selects(resource) && rule.reaches(namespace))
            .filter(|rule| rule.operations.iter().any(|op| op.covers(operation)))
            .filter(|rule| rule.selector.as_ref().is_none_or(|s| s.matches(labels)))
            .map(|rule| rule.target.clone())
            .collect()
    }

    /// Whether some rule of `target` selects (and may watch) `resource`.
    pub fn selects_resource(&self, target: &TargetKey, resource: &ServedResource) -> bool {
        self.rules
            .iter()
            .any(|rule| &rule.target == target && rule.selects(resource) && rule.can_watch(resource))
    }

    /// Whether a watch of `scope` can deliver objects to `target`: one of its
    /// rules sees that namespace (a WatchRule sees only its own). A target's
    /// resync relists only such watches, so one tenant's resync never
    /// relists another tenant's namespace.
    pub fn feeds(&self, target: &TargetKey, scope: &Scope) -> bool {
        match scope {
            Scope::All => true,
            Scope::Namespace(ns) => self
                .rules
                .iter()
                .any(|rule| &rule.target == target && rule.namespace.as_ref().is_none_or(|own| own == ns)),
        }
    }

    /// The (group, plural) pairs whose files a target owns, for sweeping.
    /// A suspended rule's count: what it wrote is kept, not swept.
    pub fn owned_resources(
        &self,
        target: &TargetKey,
        catalog: &ResourceCatalog,
    ) -> BTreeSet<(String, String)> {
        self.rules
            .iter()
            .filter(|rule| &rule.target == target)
            .flat_map(|rule| {
                catalog.iter().filter(|r| {
                    (rule.selects(r) || (rule.suspended && rule.selects_any(r))) && rule.can_watch(r)
                })
            })
            .map(|r| (r.group.clone(), r.plural.clone()))
            .collect()
    }

    /// The targets `source`'s rules write to.
    pub fn targets_of(&self, source: &RuleSource) -> BTreeSet<TargetKey> {
        self.rules.iter().filter(|rule| &rule.source == source).map(|rule| rule.target.clone()).collect()
    }

    /// The rules that are suspended.
    pub fn suspended(&self) -> BTreeSet<RuleSource> {
        self.rules.iter().filter(|rule| rule.suspended).map(|rule| rule.source.clone()).collect()
    }

    /// The shared watches all rules need: one per (resource, scope), and a
    /// namespace watch is dropped where an all-namespaces watch covers it.
    pub fn plan(&self, catalog: &ResourceCatalog) -> WatchPlan {
        let mut scopes: BTreeMap<(String, String), (BTreeSet<Scope>, Vec<String>)> = BTreeMap::new();
        let mut plan = WatchPlan::default();
        for rule in &self.rules {
            for resource in catalog.iter().filter(|r| rule.selects(r)) {
                if !rule.can_watch(resource) {
                    if rule.names_explicitly(resource) {
                        plan.problems.entry(rule.source.clone()).or_default().push(format!(
                            "{} is cluster-scoped and a WatchRule sees only its own namespace; use a ClusterWatchRule",
                            resource.plural
                        ));
                    }
                    continue;
                }
                let scope = match &rule.namespace {
                    Some(ns) if resource.namespaced => Scope::Namespace(ns.clone()),
                    _ => Scope::All,
                };
                let entry = scopes.entry((resource.group.clone(), resource.plural.clone())).or_default();
                entry.0.insert(scope);
                entry.1.extend(rule.api_versions.iter().cloned());
            }
            for missing in rule.resources.iter().filter(|r| *r != "*") {
                if !catalog.iter().any(|r| &r.plural == missing && rule.group_matches(&r.group)) {
                    plan.problems.entry(rule.source.clone()).or_default().push(format!(
                        "resource {missing:?} is not served by the API server in the selected groups"
                    ));
                }
            }
        }
        for ((group, plural), (scope_set, versions)) in scopes {
            let Some(resource) = catalog.pick_version(&group, &plural, &versions) else { continue };
            let scopes: Vec<Scope> = if scope_set.contains(&Scope::All) {
                vec![Scope::All]
            } else {
                scope_set.into_iter().collect()
            };
            for scope in scopes {
                plan.watches.insert(WatchSpec { resource: resource.clone(), scope });
            }
        }
        plan
    }
}

impl CompiledRule {
    fn group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == "*" || g == group)
    }

    /// Group and resource match, whatever the version, and its
    /// ServiceAccount (if any) may read it.
    fn selects(&self, resource: &ServedResource) -> bool {
        !self.suspended && self.selects_any(resource) && !self.is_denied(&resource.group, &resource.plural)
    }

    fn is_denied(&self, group: &str, plural: &str) -> bool {
        !self.denied.is_empty() && self.denied.iter().any(|(g, p)| g == group && p == plural)
    }

    /// Group and resource match, whatever the version.
    fn selects_any(&self, resource: &ServedResource) -> bool {
        self.group_matches(&resource.group)
            && resource.watchable
            && self.resources.iter().any(|r| {
                r == &resource.plural
                    || (r == "*"
                        && !WILDCARD_EXCLUDED.contains(&(resource.group.as_str(), resource.plural.as_str())))
            })
    }

    fn names_explicitly(&self, resource: &ServedResource) -> bool {
        self.resources.contains(&resource.plural)
    }

    /// A WatchRule never reaches cluster-scoped objects.
    fn can_watch(&self, resource: &ServedResource) -> bool {
        self.namespace.is_none() || resource.namespaced
    }

    fn reaches(&self, namespace: Option<&str>) -> bool {
        match (&self.namespace, namespace) {
            (None, _) => true,
            (Some(own), Some(ns)) => own == ns,
            (Some(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests;
