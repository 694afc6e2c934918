//! The resources the API server serves, as discovery reports them.

/// One served (group, version, resource).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServedResource {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// This version is the group's preferred version.
    pub preferred: bool,
    /// Supports list and watch.
    pub watchable: bool,
}

impl ServedResource {
    /// `group/version` as in `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }
}

/// Resources that a `resources: ["*"]` rule skips because they churn
/// constantly or are derived from other objects. Naming one explicitly still
/// selects it.
pub const WILDCARD_EXCLUDED: &[(&str, &str)] = &[
    ("", "events"),
    ("events.k8s.io", "events"),
    ("", "endpoints"),
    ("discovery.k8s.io", "endpointslices"),
    ("coordination.k8s.io", "leases"),
    ("", "pods"),
    ("apps", "replicasets"),
    ("apps", "controllerrevisions"),
];

/// Everything discovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceCatalog {
    resources: Vec<ServedResource>,
}

impl ResourceCatalog {
    pub fn new(mut resources: Vec<ServedResource>) -> Self {
        resources.sort();
        Self { resources }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ServedResource> {
        self.resources.iter()
    }

    /// The served version of (group, plural) that a watch should use:
    /// the preferred one if `wanted` allows it, else the first wanted one.
    pub fn pick_version(&self, group: &str, plural: &str, wanted: &[String]) -> Option<&ServedResource> {
        let candidates: Vec<&ServedResource> =
            self.resources.iter().filter(|r| r.group == group && r.plural == plural && r.watchable).collect();
        let any = wanted.iter().any(|v| v == "*");
        candidates
            .iter()
            .find(|r| r.preferred && (any || wanted.contains(&r.version)))
            .or_else(|| wanted.iter().find_map(|v| candidates.iter().find(|r| &r.version == v)))
            .or_else(|| if any { candidates.first() } else { None })
            .copied()
    }

    /// Finds a served resource by group and plural, any version.
    pub fn find(&self, group: &str, plural: &str) -> Option<&ServedResource> {
        self.resources.iter().find(|r| r.group == group && r.plural == plural)
    }
}
