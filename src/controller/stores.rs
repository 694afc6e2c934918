//! Reflector stores of the operator's own kinds and of Flux GitRepositories.
//! These objects are few and small, so caching them whole is fine (unlike
//! watched objects). Every change wakes the controller.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tracing::warn;

use crate::api::{ClusterWatchRule, GitProvider, GitTarget, WatchRule};

/// Read-only views of the cached objects.
#[derive(Clone)]
pub struct Stores {
    pub providers: Store<GitProvider>,
    pub targets: Store<GitTarget>,
    pub watch_rules: Store<WatchRule>,
    pub cluster_watch_rules: Store<ClusterWatchRule>,
    /// None while the Flux CRD is not installed.
    pub flux_repositories: Option<Store<DynamicObject>>,
}

/// Flux's GitRepository, source.toolkit.fluxcd.io/v1.
pub fn flux_git_repository() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(crate::api::FLUX_SOURCE_GROUP, "v1", "GitRepository"),
        "gitrepositories",
    )
}

impl Stores {
    /// Caches every namespace, or only `namespace` (ClusterWatchRules are
    /// cluster-scoped and always cached whole).
    /// Every store has its first full list: until then, a target or rule
    /// missing from a store may merely not be loaded yet.
    pub fn ready(&self) -> bool {
        fn listed<K: kube::Resource + Clone>(store: &Store<K>) -> bool
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
        }
        listed(&self.providers)
            && listed(&self.targets)
            && listed(&self.watch_rules)
            && listed(&self.cluster_watch_rules)
            && self.flux_repositories.as_ref().is_none_or(listed)
    }

    pub fn start(client: &kube::Client, namespace: Option<&str>, changed: Arc<Notify>) -> Self {
        Self {
            providers: typed(scoped(client, namespace), changed.clone()),
            targets: typed(scoped(client, namespace), changed.clone()),
            watch_rules: typed(scoped(client, namespace), changed.clone()),
            cluster_watch_rules: typed(Api::all(client.clone()), changed),
            flux_repositories: None,
        }
    }

    /// Starts caching Flux GitRepositories once their CRD is served.
    pub fn start_flux(&mut self, client: &kube::Client, namespace: Option<&str>, changed: Arc<Notify>) {
        if self.flux_repositories.is_some() {
            return;
        }
        let resource = flux_git_repository();
        let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
        let reader = writer.as_reader();
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        spawn(reflector::reflector(writer, watcher(api, watcher::Config::default())), changed);
        self.flux_repositories = Some(reader);
    }
}

fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn typed<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    spawn(reflector::reflector(writer, watcher(api, watcher::Config::default())), changed);
    reader
}

fn spawn<K, S>(stream: S, changed: Arc<Notify>)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.default_backoff());
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => warn!(%error, "watch of configuration objects failed; retrying"),
            }
        }
    });
}
