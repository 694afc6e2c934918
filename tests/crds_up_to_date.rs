//! `crds/` must be exactly what the code generates, so the chart and users
//! never install a schema the binary does not speak.

use std::path::PathBuf;

use gitops_reverser::api::{all_crds, crd_file_name, crd_yaml};

/// The checkout under test: `cargo test` names it at run time, which stays right
/// when a shared target directory holds a binary built in another checkout.
fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

#[test]
fn crds_folder_matches_generated_crds() {
    let dir = repo_root().join("crds");
    let mut expected_files = Vec::new();
    for crd in all_crds() {
        let name = crd_file_name(&crd);
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            on_disk == crd_yaml(&crd).unwrap(),
            "crds/{name} is out of date; regenerate with: cargo run -- crd --output-dir crds"
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(present, expected_files, "crds/ holds files the code does not generate");
}
