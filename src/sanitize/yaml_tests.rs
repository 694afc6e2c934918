//! Tests for `yaml.rs`: round trips of tricky strings in every nesting
//! position, YAML 1.1 quoting, key-order determinism, and what other YAML
//! readers (PyYAML; sigs.k8s.io/yaml and go-yaml v3 through `yamlcheck`)
//! make of everything the sanitizer's tests write.

use super::*;
use crate::sanitize::fixtures;
use serde_json::json;

/// Strings that break naive emitters. Each must come back byte-identical.
pub(crate) fn tricky_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "plain",
        "trailing space ",
        "line one\nline two",
        "line one\nline two\n",
        "line one\nline two\n\n",
        "line one\nline two\n\n\n",
        "trailing spaces  \non lines \t\nend",
        "  leading spaces on the first line\nsecond",
        "  leading\n    deeper\n",
        "\nfirst line empty",
        "\n  first line empty then indented\n",
        "\n\nleading blank lines\n",
        "\n",
        "\n\n",
        "   \n",
        "a\n   ",
        "a\n   \nb",
        "\ttab first\nx",
        "\n\ttab after an empty first line\n",
        "\n\n\t\n",
        "\t\n",
        " \ttab after a space\nx",
        "x\n\ttab on the second line",
        "\n   \nx",
        " \n\ty",
        "tab\tinside\n\tand at line start\n",
        "windows\r\nline\r\nendings\r\n",
        "lone\rcarriage return",
        "ünïcödé ✓ 日本語 🚀\nzweite Zeile",
        "# not a comment\n# also not",
        "key: value\nother: [1, 2]\n",
        "a: b",
        "---\ndocument: start\n...\n",
        "---",
        "...",
        "- item\n- item",
        "|\n>",
        "|",
        ">",
        "'single' \"double\" \\backslash",
        "%TAG ! x\n",
        "@at",
        "`tick",
        "&anchor",
        "*alias",
        "!tag",
        "{flow: map}",
        "[flow, seq]",
        "? complex",
        "on",
        "off",
        "yes",
        "no",
        "y",
        "n",
        "Y",
        "N",
        "True",
        "FALSE",
        "true",
        "null",
        "Null",
        "~",
        "0123",
        "0o17",
        "1e3",
        "1.5",
        ".5",
        "-1",
        "+1",
        "0x10",
        "0b101",
        "1_000",
        "12:30:00",
        "190:20:30",
        ".inf",
        "-.Inf",
        ".nan",
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "=",
        "<<",
        "null\nyes\n",
        "\u{feff}bom",
        "nel\u{85}ls\u{2028}ps\u{2029}",
        "bell\u{7}esc\u{1b}del\u{7f}",
        "ends with colon:",
        "#",
        "-",
        ".",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(5000));
    v.push(format!("{}\n{}", "long line ".repeat(300), "y".repeat(200)));
    v.push("line with trailing space \n".repeat(20_000));
    v
}

/// The catalogue placed in every position a string can take in an object.
fn positions(s: &str) -> Vec<Value> {
    vec![
        json!({ "data": { "k": s } }),
        json!({ "args": [s, "after"] }),
        json!({ "spec": { "containers": [{ "args": ["-c", s], "name": "x" }] } }),
        json!({ "nested": [[s], [{ "deep": { "deeper": s } }]] }),
        json!({ "top": s, "zzz": 1 }),
        json!({ s: "as a key", "other": { s: s } }),
    ]
}

fn round_trip(value: &Value) -> Result<Value, String> {
    let yaml = String::from_utf8(to_yaml(value)).map_err(|e| e.to_string())?;
    serde_saphyr::from_str::<Value>(&yaml).map_err(|e| format!("{e}\n--- yaml ---\n{yaml}"))
}

#[test]
fn tricky_strings_round_trip_in_every_position() {
    let mut failures = Vec::new();
    for s in tricky_strings() {
        for doc in positions(&s) {
            match round_trip(&doc) {
                Ok(back) if back == doc => {}
                Ok(back) => failures.push(format!("{s:?}: came back as {back}")),
                Err(e) => failures.push(format!("{s:?}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn one_mib_value_round_trips_as_literal_block() {
    let line = "key = value with some text; # comment\n";
    let big: String = line.repeat((1 << 20) / line.len() + 1);
    let doc = json!({ "apiVersion": "v1", "data": { "big.conf": big } });
    let yaml = to_yaml(&doc);
    assert!(yaml.len() > 1 << 20);
    let text = std::str::from_utf8(&yaml).unwrap();
    assert!(text.contains("big.conf: |\n    key = value"), "{}", &text[..200]);
    assert_eq!(serde_saphyr::from_str::<Value>(text).unwrap(), doc);
}

#[test]
fn multi_line_strings_are_literal_blocks() {
    let y = |s: &str| String::from_utf8(to_yaml(&json!({ "k": s }))).unwrap();
    assert_eq!(y("a\nb\n"), "k: |\n  a\n  b\n");
    assert_eq!(y("a\nb"), "k: |-\n  a\n  b\n");
    assert_eq!(y("a\nb\n\n"), "k: |+\n  a\n  b\n\n");
    assert_eq!(y("  a\nb\n"), "k: |2\n    a\n  b\n");
    // `\r` cannot live in a block scalar: it falls back to an escaped string.
    assert_eq!(y("a\r\nb"), "k: \"a\\r\\nb\"\n");
    // A tab opening the first line would trip libyaml-based readers: quoted instead.
    assert_eq!(y("\tx\ny"), "k: \"\\tx\\ny\"\n");
    assert_eq!(y("\n\tx"), "k: \"\\n\\tx\"\n");
    assert_eq!(y("x\n\ty"), "k: |-\n  x\n  \ty\n");
    // Long single lines are not folded.
    let long = "word ".repeat(40);
    assert_eq!(y(long.trim_end()), format!("k: {}\n", long.trim_end()));
}

#[test]
fn yaml_1_1_keywords_and_numbers_are_quoted() {
    for s in [
        "on",
        "off",
        "yes",
        "no",
        "y",
        "n",
        "Y",
        "N",
        "True",
        "null",
        "~",
        "0123",
        "1e3",
        "0x10",
        "1_000",
        "12:30:00",
        "2001-12-14",
        ".inf",
        "",
    ] {
        let out = String::from_utf8(to_yaml(&json!({ "k": s }))).unwrap();
        let scalar = out.strip_prefix("k: ").unwrap().trim_end();
        assert!(scalar.starts_with('\'') || scalar.starts_with('"'), "{s:?} emitted unquoted: {out}");
        // As a key too (a YAML 1.1 reader would make `on:` the key `true`).
        let out = String::from_utf8(to_yaml(&json!({ s: 1 }))).unwrap();
        assert!(out.starts_with('\'') || out.starts_with('"'), "{s:?} key emitted unquoted: {out}");
    }
}

fn non_strings() -> Value {
    json!({
        "t": true, "f": false, "z": null, "i": -42, "u": u64::MAX, "min": i64::MIN,
        "fl": 1.5, "whole": 2.0, "tiny": 1e-300, "huge": 1.7e308, "neg0": -0.0,
        "emptyMap": {}, "emptyList": [], "nestedEmpty": [{}, []],
    })
}

#[test]
fn non_strings_round_trip() {
    assert_eq!(round_trip(&non_strings()).unwrap(), non_strings());
}

#[test]
fn key_order_is_fixed_regardless_of_insertion_order() {
    let a: Value = serde_json::from_str(
        r#"{"spec":{"b":1,"a":2},"metadata":{"name":"x"},"kind":"K","apiVersion":"v1","data":{}}"#,
    )
    .unwrap();
    let b: Value = serde_json::from_str(
        r#"{"apiVersion":"v1","data":{},"kind":"K","metadata":{"name":"x"},"spec":{"a":2,"b":1}}"#,
    )
    .unwrap();
    assert_eq!(to_yaml(&a), to_yaml(&b));
    let text = String::from_utf8(to_yaml(&a)).unwrap();
    assert_eq!(text, "apiVersion: v1\nkind: K\nmetadata:\n  name: x\ndata: {}\nspec:\n  a: 2\n  b: 1\n");
}

#[test]
fn leading_keys_only_lead_at_the_top() {
    let doc = json!({ "spec": { "kind": 1, "apiVersion": 2, "a": 3 } });
    let text = String::from_utf8(to_yaml(&doc)).unwrap();
    assert_eq!(text, "spec:\n  a: 3\n  apiVersion: 2\n  kind: 1\n");
}

/// A document for other YAML readers: a name for reports, the bytes we
/// write, and the value they must read back.
struct Doc {
    id: String,
    yaml: Vec<u8>,
    want: Value,
}

/// Everything the tests here write: the catalogue in every position, the
/// non-strings, and through [`crate::sanitize::sanitize`] every sanitizer
/// fixture and the objects of the write-path tests
/// ([`fixtures::written_objects`]).
fn documents_for_other_readers() -> Vec<Doc> {
    let mut docs = Vec::new();
    for (i, s) in tricky_strings().iter().enumerate() {
        let short: String = s.chars().take(30).collect();
        for (p, want) in positions(s).into_iter().enumerate() {
            docs.push(Doc {
                id: format!("catalogue {i} {short:?} position {p}"),
                yaml: to_yaml(&want),
                want,
            });
        }
    }
    docs.push(Doc { id: "non-strings".into(), yaml: to_yaml(&non_strings()), want: non_strings() });
    for (id, resource, object) in fixtures::written_objects() {
        assert!(object.get("apiVersion").is_some() && object.get("kind").is_some(), "{id}: give it its type");
        let out = crate::sanitize::sanitize(&object, &resource).unwrap_or_else(|e| panic!("{id}: {e}"));
        docs.push(Doc { id, yaml: out.yaml, want: crate::sanitize::sanitize_value(object) });
    }
    docs
}

/// Reads every document back with PyYAML, a YAML 1.1 reader (both its C and
/// pure loader), and compares it with the value it came from: `on`, `yes`,
/// `0123` and friends must stay strings there too. Set
/// `SANITIZE_YAML_DUMP=dir` to keep the `N.yaml` + `N.json` pairs.
#[test]
fn a_yaml_1_1_reader_reads_back_what_we_wrote() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = std::env::var("SANITIZE_YAML_DUMP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| scratch.path().to_owned());
    std::fs::create_dir_all(&dir).unwrap();
    let docs = documents_for_other_readers();
    for (i, doc) in docs.iter().enumerate() {
        std::fs::write(dir.join(format!("{i}.yaml")), &doc.yaml).unwrap();
        std::fs::write(dir.join(format!("{i}.json")), serde_json::to_vec(&doc.want).unwrap()).unwrap();
    }
    let check = r#"
import json, pathlib, sys, yaml
loaders = [yaml.SafeLoader] + ([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])
bad = []
for y in sorted(pathlib.Path(sys.argv[1]).glob("*.yaml")):
    want = json.loads(y.with_suffix(".json").read_text())
    for loader in loaders:
        try:
            same = yaml.load(y.read_text(), Loader=loader) == want
        except yaml.YAMLError:
            same = False
        if not same:
            bad.append(y.name + " (" + loader.__name__ + ")")
print(len(bad), " ".join(bad[:10]))
sys.exit(1 if bad else 0)
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", check])
        .arg(&dir)
        .output()
        .expect("python3 with PyYAML");
    assert!(
        output.status.success(),
        "PyYAML read {} documents, some back differently: {}{}",
        docs.len(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reads every document back as kubectl and Flux do: `yamlcheck`
/// (`tests/env/tools/yamlcheck`, built by `tests/env/install`) runs
/// sigs.k8s.io/yaml's `YAMLToJSON` (go-yaml v2, YAML 1.1) and go-yaml v3
/// (kustomize) on each and compares the result with the value we wrote.
#[test]
fn go_yaml_readers_read_back_what_we_wrote() {
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from);
    let yamlcheck = root.join("target/env/bin/yamlcheck");
    assert!(yamlcheck.exists(), "{} is missing; run tests/env/install", yamlcheck.display());
    let docs = documents_for_other_readers();
    let mut input = tempfile::tempfile().unwrap();
    for doc in &docs {
        let yaml = std::str::from_utf8(&doc.yaml).unwrap();
        let line = json!({ "id": doc.id, "yaml": yaml, "json": doc.want });
        serde_json::to_writer(&mut input, &line).unwrap();
        std::io::Write::write_all(&mut input, b"\n").unwrap();
    }
    std::io::Seek::rewind(&mut input).unwrap();
    let output = std::process::Command::new(&yamlcheck)
        .stdin(input)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", yamlcheck.display()));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Go YAML readers read documents back differently:\n{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A reader that saw fewer documents than we wrote checked less than it says.
    let summary = format!("yamlcheck: {} documents, 0 mismatches\n", docs.len());
    assert!(report.ends_with(&summary), "expected {summary:?}, got {report}");
}
