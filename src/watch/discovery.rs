//! Discovery: asks the API server which resources it serves, so rules
//! resolve to real resources and new CRDs are picked up without a restart.

use kube::Client;
use kube::discovery::{Discovery, Scope, verbs};

use crate::route::{ResourceCatalog, ServedResource};

/// Lists every served resource, with its scope, preferred version and
/// whether it can be listed and watched.
pub async fn discover(client: &Client) -> Result<ResourceCatalog, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut resources = Vec::new();
    for group in discovery.groups() {
        let preferred = group.preferred_version_or_latest().to_owned();
        for version in group.versions() {
            for (resource, capabilities) in group.versioned_resources(version) {
                resources.push(ServedResource {
                    group: resource.group,
                    version: resource.version,
                    kind: resource.kind,
                    plural: resource.plural,
                    namespaced: capabilities.scope == Scope::Namespaced,
                    preferred: version == preferred,
                    watchable: capabilities.supports_operation(verbs::LIST)
                        && capabilities.supports_operation(verbs::WATCH),
                });
            }
        }
    }
    Ok(ResourceCatalog::new(resources))
}
