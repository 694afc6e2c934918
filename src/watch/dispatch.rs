//! Turns one watch event into work items for branch workers (pure).
//!
//! In: the object (as JSON), its resource, the routing snapshot and the
//! watch's index. Out: (target, WorkItem) pairs, and the targets that had a
//! Secret withheld because no encryption is configured.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::exclusions::SecretExclusions;
use super::index::{ObjectIndex, Quiet, TargetId};
use crate::api::Operation;
use crate::quiet::Ignore;
use crate::route::{RouteTable, Scope, Selected, ServedResource, TargetKey, WatchSpec};
use crate::sanitize::{self, Clean, ObjectKey, ResourceRef, SanitizeError};
use crate::sops::Sealer;
use crate::telemetry::trace::{EventTrace, TARGET};
use crate::worker::queue::{ChangeMeta, SweepScope, WorkItem};

/// What dispatch needs to know about a target that has a running worker.
#[derive(Clone, Debug)]
pub struct TargetInfo {
    pub id: TargetId,
    /// Normalised base folder.
    pub base_folder: String,
    /// `spec.encryption`: how its Secrets are sealed. None: they are withheld.
    pub sealer: Option<Arc<Sealer>>,
}

/// The routing state every watch reads: rules and active targets.
#[derive(Clone, Debug, Default)]
pub struct Routing {
    pub table: RouteTable,
    pub targets: HashMap<TargetKey, TargetInfo>,
    ids: HashMap<TargetId, TargetKey>,
    /// Secrets no target writes.
    pub secret_exclusions: SecretExclusions,
}

impl Routing {
    pub fn new(table: RouteTable, targets: HashMap<TargetKey, TargetInfo>) -> Self {
        let ids = targets.iter().map(|(key, info)| (info.id, key.clone())).collect();
        Self { table, targets, ids, secret_exclusions: SecretExclusions::default() }
    }

    pub fn with_secret_exclusions(mut self, exclusions: SecretExclusions) -> Self {
        self.secret_exclusions = exclusions;
        self
    }

    fn key_of(&self, id: TargetId) -> Option<&TargetKey> {
        self.ids.get(&id)
    }
}

/// The outcome of one event.
#[derive(Debug, Default)]
pub struct Dispatched {
    pub items: Vec<(TargetKey, WorkItem)>,
    /// Targets that selected a Secret which was not written.
    pub withheld_secrets: Vec<TargetKey>,
    /// The event changed nothing any target records (e.g. a status update).
    pub unchanged: bool,
}

/// An object that selecting targets cannot be given: it does not sanitize.
/// Their files keep the last version written until it does.
#[derive(Debug)]
pub struct Unsanitizable {
    /// The targets that select it (and have a running worker).
    pub targets: Vec<TargetKey>,
    pub error: SanitizeError,
}

/// The parts of an object's metadata that routing needs.
struct Meta<'a> {
    namespace: Option<&'a str>,
    name: &'a str,
    labels: BTreeMap<String, String>,
    resource_version: Option<&'a str>,
    /// Who made this version (None for a delete: the API server does not say).
    manager: Option<&'a str>,
}

fn meta_of(object: &Value) -> Option<Meta<'_>> {
    let metadata = object.get("metadata")?;
    let labels = metadata
        .get("labels")
        .and_then(Value::as_object)
        .map(|map| map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default();
    Some(Meta {
        namespace: metadata.get("namespace").and_then(Value::as_str),
        name: metadata.get("name").and_then(Value::as_str)?,
        labels,
        resource_version: metadata.get("resourceVersion").and_then(Value::as_str),
        manager: crate::quiet::managed::newest_manager(object),
    })
}

fn change_meta(
    target: &TargetKey,
    operation: Operation,
    resource: &ServedResource,
    meta: &Meta,
    at: Instant,
    resync: bool,
) -> ChangeMeta {
    ChangeMeta {
        target: target.clone(),
        operation,
        api_version: resource.api_version(),
        kind: resource.kind.clone(),
        plural: resource.plural.clone(),
        namespace: meta.namespace.map(str::to_owned),
        name: meta.name.to_owned(),
        resource_version: meta.resource_version.map(str::to_owned),
        manager: meta.manager.map(str::to_owned),
        received_at: at,
        resync,
        // A child of the event's span; a listed object waits without one.
        trace: EventTrace::current(target, !resync),
    }
}

/// The sanitizer's view of a served resource.
pub fn resource_ref(resource: &ServedResource) -> ResourceRef {
    ResourceRef {
        group: resource.group.clone(),
        version: resource.version.clone(),
        kind: resource.kind.clone(),
        plural: resource.plural.clone(),
        namespaced: resource.namespaced,
    }
}

/// An object was created or changed, or listed (`listing`) during a resync.
pub fn on_apply(
    routing: &Routing,
    resource: &ServedResource,
    object: &Value,
    index: &mut ObjectIndex,
    at: Instant,
    listing: bool,
) -> Result<Dispatched, Unsanitizable> {
    let dispatched = route_apply(routing, resource, object, index, at, listing);
    // The common case costs nothing more: sent to all, and nothing withheld before.
    if dispatched.as_ref().is_ok_and(|d| d.withheld_secrets.is_empty()) && !index.withholds_any() {
        return dispatched;
    }
    let Some(meta) = meta_of(object) else { return dispatched };
    // The targets not sent it keep their files of it, even past a relist.
    let withheld: Vec<TargetId> = match &dispatched {
        Ok(dispatched) => {
            dispatched.withheld_secrets.iter().map(|target| routing.targets[target].id).collect()
        }
        Err(_) => routing
            .table
            .selecting(resource, meta.namespace, &meta.labels)
            .into_keys()
            .filter_map(|target| routing.targets.get(&target).map(|info| info.id))
            .collect(),
    };
    index.withhold(&ObjectIndex::key(meta.namespace, meta.name), withheld);
    dispatched
}

fn route_apply(
    routing: &Routing,
    resource: &ServedResource,
    object: &Value,
    index: &mut ObjectIndex,
    at: Instant,
    listing: bool,
) -> Result<Dispatched, Unsanitizable> {
    let rref = resource_ref(resource);
    let Some(meta) = meta_of(object) else { return Ok(Dispatched::default()) };
    let mut selected: Vec<(TargetKey, Selected)> =
        tracing::info_span!(target: TARGET, "route").in_scope(|| {
            routing
                .table
                .selecting(resource, meta.namespace, &meta.labels)
                .into_iter()
                .filter(|(target, _)| routing.targets.contains_key(target))
                .collect()
        });
    // A Secret goes on only sealed, to the targets that seal; the others
    // are told it was withheld. The sanitizer refuses to render one.
    let secret = sanitize::is_secret(&rref);
    if secret && let Some(why) = routing.secret_exclusions.excludes(object) {
        tracing::debug!(namespace = meta.namespace, name = meta.name, "Secret not written: {why}");
        return Ok(Dispatched::default());
    }
    let mut withheld_secrets = Vec::new();
    if secret {
        let (sealing, withheld): (Vec<_>, Vec<_>) =
            selected.into_iter().partition(|(target, _)| routing.targets[target].sealer.is_some());
        withheld_secrets = withheld.into_iter().map(|(target, _)| target).collect();
        selected = sealing;
        if selected.is_empty() {
            // Nothing is deleted either: a target whose encryption went
            // away keeps the sealed files it wrote (a Flux that applies the
            // folder must not prune the Secrets for it).
            return Ok(Dispatched { withheld_secrets, ..Dispatched::default() });
        }
    }
    let (clean, yaml, hash) = tracing::info_span!(target: TARGET, "sanitize")
        .in_scope(|| {
            if secret {
                // The first sealer's digest stands for the object in the
                // index: it changes with the Secret for every target (and a
                // target's new recipients resync it, with a fresh index).
                let clean = sanitize::clean_secret(object, &rref)?;
                let digest = selected
                    .first()
                    .and_then(|(target, _)| {
                        let info = &routing.targets[target];
                        let path = sanitize::join_base(&info.base_folder, &clean.path);
                        info.sealer.as_ref()?.digest(&path, &clean.value).ok()
                    })
                    .unwrap_or_default();
                let hash = xxhash_rust::xxh3::xxh3_64(digest.as_bytes());
                return Ok((clean, Vec::new(), hash));
            }
            let clean = sanitize::clean(object, &rref)?;
            let (yaml, hash) = clean.render(&clean.value)?;
            Ok((clean, yaml, hash))
        })
        .map_err(|error| Unsanitizable {
            targets: selected.iter().map(|(target, _)| target.clone()).collect(),
            error,
        })?;
    let key = ObjectIndex::key(meta.namespace, meta.name);
    let previous = index.get(&key).cloned();
    // Ignore rules cost nothing unless a selecting target has some, or had.
    let quiet_before = index.take_quiet(&key);
    let mut quiet = Quiet::default();
    let mut variants = Variants::default();

    let mut out = Dispatched { withheld_secrets, ..Dispatched::default() };
    let content: Arc<[u8]> = yaml.into();
    let same_bytes = previous.as_ref().is_some_and(|p| p.hash == hash);
    let mut ids_now = Vec::with_capacity(selected.len());
    for (target, selection) in &selected {
        let info = &routing.targets[target];
        ids_now.push(info.id);
        let ignore = selection.ignore.as_deref();
        let written_before = quiet_before.as_ref().and_then(|q| q.hash_of(info.id));
        let was_selected = previous.as_ref().is_some_and(|p| p.targets.contains(&info.id));
        if was_selected && same_bytes {
            keep_hash(&mut quiet, ignore, info.id, written_before);
            continue;
        }
        let operation = if was_selected { Operation::Update } else { Operation::Create };
        if !selection.mask.covers(operation) {
            keep_hash(&mut quiet, ignore, info.id, written_before);
            continue;
        }
        let (content, hash) = match ignore.filter(|i| !i.fields().is_empty()) {
            _ if secret => {
                let sealer = info.sealer.as_ref().expect("only sealing targets select a Secret here");
                let path = sanitize::join_base(&info.base_folder, &clean.path);
                let sealed = sealer.seal(&path, &clean.value).map_err(|source| Unsanitizable {
                    targets: vec![target.clone()],
                    error: SanitizeError::Seal {
                        namespace: meta.namespace.unwrap_or_default().to_owned(),
                        name: meta.name.to_owned(),
                        source: Box::new(source),
                    },
                })?;
                (Arc::from(sealed.file), hash)
            }
            None => (content.clone(), hash),
            Some(ignore) => {
                let (content, hash) = variants
                    .get(ignore, &clean)
                    .map_err(|error| Unsanitizable { targets: vec![target.clone()], error })?;
                quiet.set_hash(info.id, hash);
                (content, hash)
            }
        };
        if was_selected && let Some(ignore) = ignore {
            // Only ignored fields changed: the file would be the same.
            if written_before == Some(hash) {
                continue;
            }
            let before = quiet_before.as_ref().and_then(|q| q.clean.as_deref());
            if !ignore.managers().is_empty()
                && before.is_some_and(|before| ignore.only_ignored_changes(before, &clean.value, object))
            {
                // Not written: the file keeps what it last wrote.
                keep_hash(&mut quiet, Some(ignore), info.id, written_before);
                continue;
            }
        }
        let path = sanitize::join_base(&info.base_folder, &clean.path);
        let meta = change_meta(target, operation, resource, &meta, at, listing);
        out.items.push((target.clone(), WorkItem::Write { path, content, meta }));
    }
    // Targets that selected the object before but no longer do (labels changed).
    for id in previous.iter().flat_map(|p| p.targets.iter()).filter(|id| !ids_now.contains(id)) {
        let Some(target) = routing.key_of(*id) else { continue };
        if routing.table.records(target, &resource.group, &resource.plural, Operation::Delete) {
            let path = sanitize::join_base(&routing.targets[target].base_folder, &clean.path);
            let meta = change_meta(target, Operation::Delete, resource, &meta, at, listing);
            out.items.push((target.clone(), WorkItem::Delete { path, meta }));
        }
    }
    out.unchanged = out.items.is_empty() && out.withheld_secrets.is_empty();
    index.insert(&key, hash, ids_now);
    if selected.iter().any(|(_, s)| s.ignore.as_ref().is_some_and(|i| !i.managers().is_empty())) {
        quiet.clean = Some(match quiet_before.and_then(|q| q.clean).filter(|_| same_bytes) {
            Some(unchanged) => unchanged,
            None => Arc::new(clean.value),
        });
    }
    index.put_quiet(&key, quiet);
    Ok(out)
}

/// Carries a target's last-written hash (or its absence) over to the
/// object's next [`Quiet`] entry, when it has field ignores.
fn keep_hash(quiet: &mut Quiet, ignore: Option<&Ignore>, id: TargetId, written: Option<u64>) {
    if ignore.is_some_and(|ignore| !ignore.fields().is_empty()) {
        match written {
            Some(hash) => quiet.set_hash(id, hash),
            None => quiet.hashes.retain(|(target, _)| *target != id),
        }
    }
}

/// The file of one object for each distinct set of ignore rules among its
/// targets, rendered once each and only when some target needs it.
#[derive(Default)]
struct Variants {
    rendered: Vec<(Ignore, Arc<[u8]>, u64)>,
}

impl Variants {
    fn get(&mut self, ignore: &Ignore, clean: &Clean) -> Result<(Arc<[u8]>, u64), SanitizeError> {
        if let Some((_, content, hash)) = self.rendered.iter().find(|(i, _, _)| i.fields() == ignore.fields())
        {
            return Ok((content.clone(), *hash));
        }
        let mut value = clean.value.clone();
        ignore.strip(&mut value);
        let (yaml, hash) = clean.render(&value)?;
        let content: Arc<[u8]> = yaml.into();
        self.rendered.push((ignore.clone(), content.clone(), hash));
        Ok((content, hash))
    }
}

/// An object was deleted (`listing`: found missing by a relist).
pub fn on_delete(
    routing: &Routing,
    resource: &ServedResource,
    object: &Value,
    index: &mut ObjectIndex,
    at: Instant,
    listing: bool,
) -> Dispatched {
    let Some(mut meta) = meta_of(object) else { return Dispatched::default() };
    // Its managedFields name who wrote it last, not who deleted it.
    meta.manager = None;
    let key = ObjectIndex::key(meta.namespace, meta.name);
    let targets: Vec<TargetKey> =
        tracing::info_span!(target: TARGET, "route").in_scope(|| match index.remove(&key) {
            Some(entry) => entry.targets.iter().filter_map(|id| routing.key_of(*id).cloned()).collect(),
            None => routing.table.selecting(resource, meta.namespace, &meta.labels).into_keys().collect(),
        });
    let items = delete_items(routing, resource, &meta, targets, at, listing);
    Dispatched { unchanged: items.is_empty(), items, withheld_secrets: Vec::new() }
}

/// Delete items for `targets` that record deletes of `resource`.
fn delete_items(
    routing: &Routing,
    resource: &ServedResource,
    meta: &Meta,
    targets: impl IntoIterator<Item = TargetKey>,
    at: Instant,
    listing: bool,
) -> Vec<(TargetKey, WorkItem)> {
    let relative = sanitize::object_path(
        &resource_ref(resource),
        &ObjectKey { namespace: meta.namespace.map(str::to_owned), name: meta.name.to_owned() },
    );
    targets
        .into_iter()
        .filter(|target| routing.table.records(target, &resource.group, &resource.plural, Operation::Delete))
        .filter_map(|target| {
            let path = sanitize::join_base(&routing.targets.get(&target)?.base_folder, &relative);
            let meta = change_meta(&target, Operation::Delete, resource, meta, at, listing);
            Some((target, WorkItem::Delete { path, meta }))
        })
        .collect()
}

/// After a complete list: objects the index knew that the list no longer
/// has are deleted, then every target of this watch gets a sweep with the
/// full set of its live files, so files of objects deleted while nobody
/// watched disappear too.
pub fn on_list_complete(
    routing: &Routing,
    spec: &WatchSpec,
    listed: &HashSet<String>,
    index: &mut ObjectIndex,
    at: Instant,
) -> Vec<(TargetKey, WorkItem)> {
    let resource = &spec.resource;
    let rref = resource_ref(resource);
    let mut items = Vec::new();
    for (key, entry) in index.retain_live(listed) {
        let (namespace, name) = split_key(&key);
        let meta = Meta { namespace, name, labels: BTreeMap::new(), resource_version: None, manager: None };
        // Route the delete to the targets the object was written to.
        let targets = entry.targets.iter().filter_map(|id| routing.key_of(*id).cloned());
        items.extend(delete_items(routing, resource, &meta, targets, at, true));
    }
    let namespace = match &spec.scope {
        Scope::Namespace(ns) => Some(ns.clone()),
        Scope::All => None,
    };
    for (target, info) in &routing.targets {
        let selects = routing.table.records(target, &resource.group, &resource.plural, Operation::Delete)
            && routing.table.selects_resource(target, resource);
        if !selects {
            continue;
        }
        let live = index
            .kept_by(info.id)
            .map(|key| {
                let (namespace, name) = split_key(key);
                let relative = sanitize::object_path(
                    &rref,
                    &ObjectKey { namespace: namespace.map(str::to_owned), name: name.to_owned() },
                );
                sanitize::join_base(&info.base_folder, &relative)
            })
            .collect();
        let scope = SweepScope {
            target: target.clone(),
            group: resource.group.clone(),
            plural: resource.plural.clone(),
            namespace: namespace.clone(),
        };
        items.push((target.clone(), WorkItem::Sweep { scope, live }));
    }
    items
}

fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((namespace, name)) => (Some(namespace), name),
        None => (None, key),
    }
}

#[cfg(test)]
mod quiet_tests;
#[cfg(test)]
mod tests;
