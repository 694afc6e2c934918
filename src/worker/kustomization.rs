//! The `kustomization.yaml` a GitTarget with `layout: kustomize` keeps in
//! its base folder (pure): every object file below the folder, sorted, so
//! that Flux or `kubectl apply -k` applies the folder as it is.
//!
//! It is rewritten in the same commit as the files whenever the set of
//! object files changes (a create or a delete), never for an update, and
//! the same set always renders the same bytes, so it makes no commit of
//! its own.

/// The file's name in the base folder.
pub const FILE_NAME: &str = "kustomization.yaml";

/// The file for these object files, relative to the base folder.
pub fn render<'a>(resources: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut resources: Vec<&str> = resources.into_iter().collect();
    resources.sort_unstable();
    resources.dedup();
    let mut out = String::from(
        "# Kept by gitops-reverser (layout: kustomize): every object file of this folder.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n",
    );
    if resources.is_empty() {
        out.push_str("resources: []\n");
    } else {
        out.push_str("resources:\n");
        for resource in resources {
            // A JSON string is a YAML double-quoted scalar: any name is safe.
            out.push_str(&format!("- {}\n", serde_json::Value::from(resource)));
        }
    }
    out.into_bytes()
}

/// Its full path for a (normalised) base folder.
pub fn path(base_folder: &str) -> String {
    if base_folder.is_empty() { FILE_NAME.to_owned() } else { format!("{base_folder}/{FILE_NAME}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_file_once_sorted_and_quoted() {
        let text = String::from_utf8(render([
            "ns/core/configmaps/b.yaml",
            "_cluster/x:y.yaml",
            "ns/core/configmaps/b.yaml",
        ]))
        .unwrap();
        assert_eq!(
            text,
            "# Kept by gitops-reverser (layout: kustomize): every object file of this folder.\n\
             apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n\
             - \"_cluster/x:y.yaml\"\n- \"ns/core/configmaps/b.yaml\"\n"
        );
        let parsed: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(parsed["resources"][0], "_cluster/x:y.yaml");
    }

    #[test]
    fn the_same_set_renders_the_same_bytes_and_none_is_an_empty_list() {
        assert_eq!(render(["b", "a"]), render(["a", "b"]));
        assert!(String::from_utf8(render([])).unwrap().ends_with("resources: []\n"));
        assert_eq!(path(""), "kustomization.yaml");
        assert_eq!(path("clusters/prod"), "clusters/prod/kustomization.yaml");
    }
}
