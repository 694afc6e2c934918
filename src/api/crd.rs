//! Generates the four CustomResourceDefinitions as one multi-document YAML
//! stream; `crds/` is this output, checked by a test.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::{ClusterWatchRule, GitProvider, GitTarget, WatchRule};

/// The CRDs of every kind, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![GitProvider::crd(), GitTarget::crd(), WatchRule::crd(), ClusterWatchRule::crd()]
}

/// One CRD as a YAML document that starts with `---`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    Ok(format!("---\n{}", serde_saphyr::to_string_with_options(crd, options)?))
}

/// The file name a CRD is kept under in `crds/`, e.g. `configbutler.ai_gittargets.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// All CRDs as one YAML stream.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    all_crds().iter().map(crd_yaml).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_has_the_status_subresource_and_one_served_version() {
        for crd in all_crds() {
            assert_eq!(crd.spec.group, "configbutler.ai");
            let [version] = crd.spec.versions.as_slice() else { panic!("one version expected") };
            assert_eq!(version.name, "v1alpha1");
            assert!(version.served && version.storage);
            assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        }
    }

    #[test]
    fn yaml_round_trips_to_the_same_crds() {
        let yaml = crds_yaml().unwrap();
        let docs: Vec<CustomResourceDefinition> = serde_saphyr::from_str_multiple(&yaml).unwrap();
        assert_eq!(docs, all_crds());
    }
}
