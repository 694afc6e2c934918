//! Tests for `pointer.rs`: parsing with escapes, removal, and coverage.

use super::*;
use serde_json::json;

#[test]
fn parsing_table() {
    use PointerError::*;
    let cases: Vec<(&str, Result<Vec<&str>, PointerError>)> = vec![
        ("/spec/replicas", Ok(vec!["spec", "replicas"])),
        // ~1 is '/', as in annotation keys.
        (
            "/metadata/annotations/kubectl.kubernetes.io~1restartedAt",
            Ok(vec!["metadata", "annotations", "kubectl.kubernetes.io/restartedAt"]),
        ),
        // ~0 is '~'; ~01 is "~1" (not '/'): ~0 is decoded first.
        ("/data/a~0b", Ok(vec!["data", "a~b"])),
        ("/data/~01", Ok(vec!["data", "~1"])),
        ("/data/~10", Ok(vec!["data", "/0"])),
        (
            "/spec/template/spec/containers/0/image",
            Ok(vec!["spec", "template", "spec", "containers", "0", "image"]),
        ),
        ("/spec/a b", Ok(vec!["spec", "a b"])),
        ("", Err(Reserved("".into()))),
        ("/", Err(EmptySegment("/".into()))),
        ("/spec/", Err(EmptySegment("/spec/".into()))),
        ("/spec//replicas", Err(EmptySegment("/spec//replicas".into()))),
        ("spec/replicas", Err(NoLeadingSlash("spec/replicas".into()))),
        ("spec.replicas", Err(NoLeadingSlash("spec.replicas".into()))),
        ("/data/a~2", Err(BadEscape("/data/a~2".into()))),
        ("/data/a~", Err(BadEscape("/data/a~".into()))),
        ("/metadata/name", Err(Reserved("/metadata/name".into()))),
        ("/metadata", Err(Reserved("/metadata".into()))),
        ("/kind", Err(Reserved("/kind".into()))),
    ];
    for (text, want) in cases {
        let got = Pointer::parse(text).map(|p| p.tokens().to_vec());
        let want = want.map(|tokens| tokens.into_iter().map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(got, want, "{text:?}");
    }
}

#[test]
fn display_escapes_back() {
    for text in ["/spec/replicas", "/metadata/annotations/a~1b", "/data/a~0b~01"] {
        assert_eq!(Pointer::parse(text).unwrap().to_string(), text);
    }
}

fn remove(pointer: &str, mut value: serde_json::Value) -> (bool, serde_json::Value) {
    let removed = Pointer::parse(pointer).unwrap().remove_from(&mut value);
    (removed, value)
}

#[test]
fn removes_a_field_and_the_maps_it_emptied() {
    let object = json!({"spec": {"replicas": 3, "paused": false}});
    assert_eq!(remove("/spec/replicas", object), (true, json!({"spec": {"paused": false}})));

    let only = json!({"metadata": {"name": "n", "annotations": {"a/b": "x"}}});
    assert_eq!(remove("/metadata/annotations/a~1b", only), (true, json!({"metadata": {"name": "n"}})));
}

#[test]
fn a_map_the_user_left_empty_stays() {
    // The pointer names nothing, so `data: {}` (which means something) stays.
    let object = json!({"data": {}, "spec": {}});
    assert_eq!(remove("/data/missing", object.clone()), (false, object));
}

#[test]
fn missing_paths_and_wrong_types_remove_nothing() {
    let object = json!({"spec": {"replicas": 3, "list": [1, 2]}});
    for pointer in
        ["/status", "/spec/replicas/x", "/spec/list/2", "/spec/list/x", "/spec/list/01", "/spec/list/-"]
    {
        assert_eq!(remove(pointer, object.clone()), (false, object.clone()), "{pointer}");
    }
}

#[test]
fn list_indexes_step_into_lists() {
    let object =
        json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
    assert_eq!(
        remove("/spec/containers/1/image", object.clone()),
        (true, json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b"}]}}))
    );
    assert_eq!(
        remove("/spec/containers/0", object),
        (true, json!({"spec": {"containers": [{"name": "b", "image": "b:1"}]}}))
    );
}

#[test]
fn covers_the_field_and_what_lies_below() {
    let pointer = Pointer::parse("/spec/containers/0").unwrap();
    assert!(pointer.covers(&[Step::Key("spec"), Step::Key("containers"), Step::Index(0)]));
    assert!(pointer.covers(&[
        Step::Key("spec"),
        Step::Key("containers"),
        Step::Index(0),
        Step::Key("image")
    ]));
    assert!(!pointer.covers(&[Step::Key("spec"), Step::Key("containers"), Step::Index(1)]));
    assert!(!pointer.covers(&[Step::Key("spec"), Step::Key("containers")]));
    let key = Pointer::parse("/metadata/annotations/a~1b").unwrap();
    assert!(key.covers(&[Step::Key("metadata"), Step::Key("annotations"), Step::Key("a/b")]));
}
