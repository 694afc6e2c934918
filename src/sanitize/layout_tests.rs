//! Tests for `layout.rs`: examples, generated round trips, base folders.

use super::*;
use std::collections::HashSet;

fn res(group: &str, plural: &str, namespaced: bool) -> ResourceRef {
    ResourceRef {
        group: group.into(),
        version: "v1".into(),
        kind: "Kind".into(),
        plural: plural.into(),
        namespaced,
    }
}

fn key(namespace: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey { namespace: namespace.map(Into::into), name: name.into() }
}

#[test]
fn examples() {
    let cases = [
        (res("apps", "deployments", true), key(Some("team-a"), "web"), "team-a/apps/deployments/web.yaml"),
        (
            res("", "configmaps", true),
            key(Some("default"), "app.conf"),
            "default/core/configmaps/app.conf.yaml",
        ),
        (
            res("rbac.authorization.k8s.io", "clusterroles", false),
            key(None, "system:controller:foo"),
            "_cluster/rbac.authorization.k8s.io/clusterroles/system%3Acontroller%3Afoo.yaml",
        ),
        (
            res("", "namespaces", false),
            key(Some(""), "kube-system"),
            "_cluster/core/namespaces/kube-system.yaml",
        ),
        (res("x.io", "things", true), key(Some("ns"), "Upper_Case"), "ns/x.io/things/%55pper%5F%43ase.yaml"),
        (res("x.io", "things", true), key(Some("ns"), ".hidden"), "ns/x.io/things/%2Ehidden.yaml"),
        (res("x.io", "things", true), key(Some("ns"), ".."), "ns/x.io/things/%2E..yaml"),
        (res("x.io", "things", true), key(Some("ns"), "50%"), "ns/x.io/things/50%25.yaml"),
        (res("x.io", "things", true), key(Some("ns"), "ü"), "ns/x.io/things/%C3%BC.yaml"),
        (res("core", "things", false), key(None, ""), "_cluster/%63ore/things/%.yaml"),
    ];
    for (r, k, want) in cases {
        let path = object_path(&r, &k);
        assert_eq!(path, want);
        let back = decode_object_path(&path).unwrap();
        let ns = k.namespace.filter(|ns| !ns.is_empty());
        assert_eq!(back, DecodedPath { namespace: ns, group: r.group, plural: r.plural, name: k.name });
    }
}

#[test]
fn foreign_and_non_canonical_paths_do_not_decode() {
    for path in [
        "README.md",
        "a/b.yaml",
        "ns/core/configmaps",
        "ns/core/configmaps/x.yml",
        "ns/core/configmaps/x.yaml/extra",
        "extra/ns/core/configmaps/x.yaml",
        "/ns/core/configmaps/x.yaml",
        "ns//configmaps/x.yaml",
        "ns/core/configmaps/%3a.yaml", // lowercase hex
        "ns/core/configmaps/%61.yaml", // 'a' needs no escape
        "ns/core/configmaps/X.yaml",   // uppercase is always escaped
        "ns/core/configmaps/a_b.yaml", // so is '_'
        "ns/core/configmaps/.x.yaml",  // leading '.'
        "ns/core/configmaps/%2.yaml",  // truncated escape
        "ns/core/configmaps/%FF.yaml", // not UTF-8
        "%/core/configmaps/x.yaml",    // empty namespace is spelled _cluster
        "%5Fcluster/core/configmaps/x.yaml/",
        "ns/%/configmaps/x.yaml", // the core group is spelled core
        "ns/core/configmaps/.yaml",
    ] {
        assert_eq!(decode_object_path(path), None, "{path}");
    }
    // A namespace literally named "_cluster" is not the cluster scope.
    let p = decode_object_path("%5Fcluster/core/configmaps/x.yaml").unwrap();
    assert_eq!(p.namespace.as_deref(), Some("_cluster"));
}

/// Deterministic xorshift so the "property" test needs no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn generated_names() -> Vec<String> {
    const ALPHABET: &[&str] = &[
        "a", "z", "0", "9", "-", ".", "..", "A", "Z", ":", "%", "%2F", "_", "/", " ", "~", "+", "@", "\\",
        "ü", "ß", "日", "🚀", "\u{0}", "\t", "\n", "core", "_cluster", ".yaml",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut names: Vec<String> =
        ["", ".", "..", "...", "core", "_cluster", "a", "A", "%"].iter().map(|s| s.to_string()).collect();
    for _ in 0..20_000 {
        let len = 1 + rng.next() % 12;
        names.push((0..len).map(|_| rng.pick(ALPHABET)).collect());
    }
    names
}

#[test]
fn generated_segments_round_trip_and_are_path_safe() {
    let mut folded = HashSet::new();
    let mut distinct = HashSet::new();
    for name in generated_names() {
        let enc = encode_segment(&name);
        assert!(!enc.is_empty(), "{name:?}");
        assert!(!enc.starts_with('.'), "{name:?} -> {enc}");
        assert!(!enc.contains('/'), "{name:?} -> {enc}");
        assert!(
            enc.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'%' | b'A'..=b'F')),
            "{name:?} -> {enc}"
        );
        assert_eq!(decode_segment(&enc).as_deref(), Some(name.as_str()), "{enc}");
        // Distinct names stay distinct even on a case-insensitive filesystem.
        if distinct.insert(name.clone()) {
            assert!(folded.insert(enc.to_ascii_lowercase()), "case collision for {name:?}");
        }
    }
}

#[test]
fn generated_paths_round_trip() {
    let names = generated_names();
    for (i, name) in names.iter().enumerate() {
        let other = &names[(i * 7 + 3) % names.len()];
        let ns = (i % 3 != 0 && !other.is_empty()).then(|| other.clone());
        let group = if i % 5 == 0 { String::new() } else { names[(i * 11) % names.len()].clone() };
        let r = res(&group, &names[(i * 13 + 1) % names.len()], ns.is_some());
        let k = ObjectKey { namespace: ns.clone(), name: name.clone() };
        let path = object_path(&r, &k);
        assert_eq!(path.split('/').count(), 4, "{path}");
        let back = decode_object_path(&path).unwrap_or_else(|| panic!("{path}"));
        assert_eq!(back, DecodedPath { namespace: ns, group, plural: r.plural, name: name.clone() });
    }
}

#[test]
fn base_folders() {
    for (raw, want) in [
        ("", ""),
        (".", ""),
        ("./", ""),
        ("/", ""),
        ("./a/", "a"),
        ("a//b/", "a/b"),
        ("/a/./b/", "a/b"),
        ("a/../b", "b"),
        ("../../x", "x"),
        ("clusters/prod", "clusters/prod"),
    ] {
        assert_eq!(normalize_base_folder(raw), want, "{raw:?}");
    }
    assert_eq!(join_base("", "ns/core/cm/x.yaml"), "ns/core/cm/x.yaml");
    assert_eq!(join_base("./a//b/", "ns/core/cm/x.yaml"), "a/b/ns/core/cm/x.yaml");

    assert_eq!(strip_base("a/b", "a/b/ns/core/cm/x.yaml"), Some("ns/core/cm/x.yaml"));
    assert_eq!(strip_base("./a/b/", "a/b/x"), Some("x"));
    assert_eq!(strip_base("", "x/y"), Some("x/y"));
    assert_eq!(strip_base("", ""), None);
    assert_eq!(strip_base("a/b", "a/b"), None);
    assert_eq!(strip_base("a/b", "a/b/"), None);
    assert_eq!(strip_base("a/b", "a/bc/x"), None);
    assert_eq!(strip_base("a/b", "a/x"), None);
    assert_eq!(strip_base("a/b", "x/a/b/y"), None);

    // Another target's files in a nested folder never decode as ours.
    let theirs = join_base("a/x", "ns/core/configmaps/c.yaml");
    let rest = strip_base("a", &theirs).unwrap();
    assert_eq!(decode_object_path(rest), None);
}

#[test]
fn over_long_names_are_shortened_to_fit_a_file_system() {
    let resource = ResourceRef {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
        namespaced: true,
    };
    for name in ["n".repeat(253), "A".repeat(100), format!("{}:{}", "a".repeat(198), "b".repeat(54))] {
        let key = ObjectKey { namespace: Some("ns".into()), name: name.clone() };
        let path = object_path(&resource, &key);
        let file = path.rsplit('/').next().unwrap();
        assert!(file.len() <= 255, "{} bytes: {file}", file.len());
        assert_eq!(path, object_path(&resource, &key), "stable");
        let decoded = decode_object_path(&path).expect("a shortened path still decodes");
        assert_eq!((decoded.namespace.as_deref(), decoded.plural.as_str()), (Some("ns"), "configmaps"));
        let mut other = name.clone();
        other.push('x');
        let other_path = object_path(&resource, &ObjectKey { namespace: Some("ns".into()), name: other });
        assert_ne!(path, other_path, "names sharing a prefix get different files");
    }
    let short = object_path(&resource, &ObjectKey { namespace: Some("ns".into()), name: "n".repeat(250) });
    assert!(short.ends_with(&format!("{}.yaml", "n".repeat(250))), "a name that fits is kept whole");
}

/// A Secret's file is only ever sealed: `.sops.yaml`, and only that reads
/// back as a Secret (a hand-written `x.yaml` beside it is not an object).
#[test]
fn secrets_are_sops_files() {
    let secrets = res("", "secrets", true);
    let path = object_path(&secrets, &key(Some("shop"), "db.creds"));
    assert_eq!(path, "shop/core/secrets/db.creds.sops.yaml");
    let decoded = decode_object_path(&path).unwrap();
    assert_eq!((decoded.plural.as_str(), decoded.name.as_str()), ("secrets", "db.creds"));
    assert!(decode_object_path("shop/core/secrets/db.yaml").is_none());
    // Other kinds keep .yaml, and a "secrets" of another group too.
    let other = res("example.com", "secrets", true);
    assert_eq!(object_path(&other, &key(Some("shop"), "x")), "shop/example.com/secrets/x.yaml");
    let long = "s".repeat(300);
    let shortened = object_path(&secrets, &key(Some("shop"), &long));
    assert!(
        shortened.ends_with(".sops.yaml") && shortened.rsplit('/').next().unwrap().len() <= 255,
        "{shortened}"
    );
    assert_eq!(decode_object_path(&shortened).unwrap().plural, "secrets");
}
