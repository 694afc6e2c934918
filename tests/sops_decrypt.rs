//! `src/sops` against the real decrypter: every file `seal` writes must come
//! back from `sops --decrypt` (v3.13.3, built by `tests/env/install` into
//! `target/env/bin/sops`) as exactly the Secret that went in, and sops must
//! refuse a file sealed for someone else or altered after sealing.
//!
//! Needs only that binary, no running environment. The age private key is
//! handed over in `SOPS_AGE_KEY`, never on the command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use age::secrecy::ExposeSecret;
use age::x25519::Identity;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gitops_reverser::sops::{DIGEST_ANNOTATION, Recipients, digest, digest_in_file, seal};
use k8s_openapi::jiff::Timestamp;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::{Map, Value, json};

/// Exit codes of sops (cmd/sops/codes).
const COULD_NOT_RETRIEVE_KEY: i32 = 128;
const ERROR_DECRYPTING_TREE: i32 = 25;
const MAC_MISMATCH: i32 = 51;

fn sops_binary() -> PathBuf {
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let sops = root.join("target/env/bin/sops");
    assert!(sops.exists(), "{} is missing: run tests/env/install, which builds sops v3.13.3", sops.display());
    sops
}

/// Runs `sops --decrypt FILE` with only `identity` to decrypt with: a clean
/// environment, HOME and the config dirs in the scratch directory, so no key
/// file or .sops.yaml of this machine takes part.
fn sops_decrypt(dir: &Path, file: &Path, identity: &Identity) -> Output {
    sops_decrypt_as(dir, file, identity, "yaml")
}

/// As [`sops_decrypt`], printing the Secret as `output_type` (`yaml`, as
/// Flux's kustomize-controller emits it, or `json`).
fn sops_decrypt_as(dir: &Path, file: &Path, identity: &Identity, output_type: &str) -> Output {
    Command::new(sops_binary())
        .args(["--decrypt", "--input-type", "yaml", "--output-type", output_type])
        .arg(file)
        .current_dir(dir)
        .env_clear()
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("SOPS_AGE_KEY", identity.to_string().expose_secret())
        .output()
        .expect("run sops")
}

fn seal_to_file(dir: &Path, name: &str, secret: &Value, recipients: &Recipients, seed: u64) -> PathBuf {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let lastmodified = Timestamp::from_second(1_767_225_600 + i64::try_from(seed).unwrap()).unwrap();
    let bytes =
        seal(secret, recipients, lastmodified, &mut rng).unwrap_or_else(|e| panic!("{name}: seal: {e}"));
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn recipients_of(identity: &Identity) -> Recipients {
    Recipients::parse([identity.to_public().to_string()]).unwrap()
}

fn secret(name: &str, extra: Value) -> Value {
    let mut object = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "sops-test"},
        "type": "Opaque",
    });
    for (k, v) in extra.as_object().unwrap() {
        object[k] = v.clone();
    }
    object
}

fn random_base64(rng: &mut ChaCha20Rng, len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

/// Strings a YAML reader could take for something else, or that need care
/// in a block scalar.
const TRICKY: &[&str] = &[
    "true",
    "no",
    "on",
    "y",
    "null",
    "~",
    "",
    "1.0",
    "0x1F",
    "0o17",
    "017",
    "1e3",
    ".inf",
    "-.nan",
    "12:30",
    "2001-12-14",
    "1_000",
    "+12",
    "<<",
    "=",
    "- item",
    "#hash",
    "a: b",
    "  leading",
    "trailing  ",
    "tab\tinside",
    "line one\nline two\n",
    "no newline\nat end",
    "two newlines\n\n",
    "crlf\r\nline",
    "unicode ☃ ключ 日本語 😀",
    "\u{feff}bom",
    "'single'",
    "\"double\"",
    "[flow]",
    "{flow: map}",
    "ENC[not really]",
];

fn cases() -> Vec<(&'static str, Value)> {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let binary: Map<String, Value> = [0usize, 1, 2, 3, 31, 32, 33, 255, 4096]
        .iter()
        .map(|&n| (format!("bin-{n}"), Value::String(random_base64(&mut rng, n))))
        .collect();
    let many: Map<String, Value> =
        (0..500).map(|i| (format!("key-{i:04}"), Value::String(format!("value {i}")))).collect();
    let tricky_data: Map<String, Value> = TRICKY
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("k{i:02}"), Value::String((*s).to_owned())))
        .collect();
    let tricky_annotations: Map<String, Value> = TRICKY
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("example.com/a{i:02}"), Value::String((*s).to_owned())))
        .collect();
    let tricky_keys: Map<String, Value> = [
        "123",
        "true",
        "1.5",
        "null",
        "0x10",
        "on",
        "-",
        ".",
        "_",
        "a.b-c_d",
        "1_000",
        "1_",
        "1__0",
        "0b101",
        "1e3",
        "2001-12-14",
    ]
    .iter()
    .map(|k| ((*k).to_owned(), Value::String(STANDARD.encode(k))))
    .collect();
    vec![
        (
            "empty-values",
            secret("empty", json!({"data": {"empty": "", "full": "AA=="}, "stringData": {"blank": ""}})),
        ),
        ("no-values", secret("none", json!({"data": {}}))),
        ("binary-data", secret("binary", json!({"data": binary}))),
        (
            "string-data",
            secret(
                "strings",
                json!({"stringData": {"config.yaml": "user: admin\npassword: \"x\"\n", "token": "abc"}}),
            ),
        ),
        ("many-keys", secret("many", json!({"data": many}))),
        (
            "long-values",
            secret(
                "long",
                json!({"data": {"big": random_base64(&mut rng, 192 * 1024)}, "stringData": {"text": "word ".repeat(50_000)}}),
            ),
        ),
        ("tricky-values", secret("tricky", json!({"stringData": tricky_data}))),
        ("tricky-keys", secret("keys", json!({"data": tricky_keys}))),
        (
            "labels-and-annotations",
            secret(
                "meta",
                json!({
                    "metadata": {
                        "name": "meta", "namespace": "sops-test",
                        "labels": {"app.kubernetes.io/name": "shop", "tier": "true", "version": "1.0"},
                        "annotations": Value::Object(tricky_annotations),
                    },
                    "data": {"password": "aHVudGVyMg=="},
                }),
            ),
        ),
        (
            "key-named-data-in-annotations",
            secret(
                "dataannotation",
                json!({
                    "metadata": {"name": "dataannotation", "namespace": "sops-test", "annotations": {"data": "encrypted by sops' rule", "stringData": ""}},
                    "stringData": {"a": "b"},
                }),
            ),
        ),
        (
            "tls-immutable",
            secret(
                "tls",
                json!({
                    "type": "kubernetes.io/tls", "immutable": true,
                    "data": {"tls.crt": random_base64(&mut rng, 1200), "tls.key": random_base64(&mut rng, 1700)},
                }),
            ),
        ),
        (
            "unicode",
            secret(
                "unicode",
                json!({"stringData": {"greeting": "grüß dich ☃ 日本語 😀", "rtl": "שלום", "ключ": "значение"}, "metadata": {"name": "unicode", "namespace": "sops-test", "annotations": {"note": "ünïcödé", "example.com/ünïcode-key": "x"}}}),
            ),
        ),
    ]
}

fn parse_yaml(bytes: &[u8]) -> Value {
    serde_saphyr::from_slice(bytes)
        .unwrap_or_else(|e| panic!("parse YAML: {e}\n{}", String::from_utf8_lossy(bytes)))
}

#[test]
fn sops_decrypts_every_sealed_secret_to_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::generate();
    let recipients = recipients_of(&identity);
    let key = b"digest key for the sops_decrypt tests";
    let cases = cases();
    for (seed, (name, mut secret)) in (1u64..).zip(cases) {
        // As the operator will: the digest of the live Secret, in the file.
        let digest_value = digest(key, &secret);
        let annotations =
            secret["metadata"].as_object_mut().unwrap().entry("annotations").or_insert_with(|| json!({}));
        annotations[DIGEST_ANNOTATION] = json!(digest_value);

        let file = seal_to_file(dir.path(), name, &secret, &recipients, seed);
        let sealed = std::fs::read(&file).unwrap();
        assert_eq!(digest_in_file(&sealed), Some(digest_value.clone()), "{name}: digest_in_file");
        let out = sops_decrypt(dir.path(), &file, &identity);
        assert!(
            out.status.success(),
            "{name}: sops --decrypt failed ({}): {}\n--- sealed file ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&sealed),
        );
        let decrypted = parse_yaml(&out.stdout);
        assert_eq!(decrypted, secret, "{name}: decrypted file differs from the input");
        assert_eq!(
            digest(key, &decrypted),
            digest_value,
            "{name}: the decrypted Secret digests as the live one"
        );

        let out = sops_decrypt_as(dir.path(), &file, &identity, "json");
        assert!(
            out.status.success(),
            "{name}: sops --output-type json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let as_json: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(as_json, secret, "{name}: decrypted JSON differs from the input");
    }
}

/// Not ours, pinned so that we notice when it changes: sops writes its YAML
/// output with go-yaml v3, which emits a multi-line string whose first line
/// starts with a tab as `null`. The file is right (the MAC holds, the JSON
/// output has the value), but the YAML output, which is what Flux's
/// kustomize-controller applies, loses it. Live Secrets keep their values in
/// `data` as base64, which has neither tabs nor newlines; a readable
/// annotation value can have both.
#[test]
fn sops_yaml_output_loses_a_multi_line_value_that_starts_with_a_tab() {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::generate();
    let value = "\tfirst line\nsecond line";
    let secret = secret("tab", json!({"stringData": {"script": value}}));
    let file = seal_to_file(dir.path(), "tab", &secret, &recipients_of(&identity), 1);

    let out = sops_decrypt_as(dir.path(), &file, &identity, "json");
    assert!(out.status.success(), "sops: {}", String::from_utf8_lossy(&out.stderr));
    let as_json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(as_json["stringData"]["script"], value, "the sealed file holds the value");

    let out = sops_decrypt(dir.path(), &file, &identity);
    assert!(out.status.success(), "sops: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        parse_yaml(&out.stdout)["stringData"]["script"],
        Value::Null,
        "go-yaml v3 now keeps the value"
    );
}

#[test]
fn sops_opens_a_file_only_for_its_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, owner) = (Identity::generate(), Identity::generate());
    let secret = secret("other", json!({"data": {"password": "c2VjcmV0LXZhbHVl"}}));
    let file = seal_to_file(dir.path(), "other", &secret, &recipients_of(&owner), 1);
    let out = sops_decrypt(dir.path(), &file, &reader);
    assert_eq!(
        out.status.code(),
        Some(COULD_NOT_RETRIEVE_KEY),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("c2VjcmV0LXZhbHVl"));
    // The owner can: the failure above is the recipient, not the file.
    assert!(sops_decrypt(dir.path(), &file, &owner).status.success());

    // Sealed for both, each one alone opens it.
    let both = Recipients::parse([owner.to_public().to_string(), reader.to_public().to_string()]).unwrap();
    let file = seal_to_file(dir.path(), "both", &secret, &both, 2);
    for identity in [&owner, &reader] {
        let out = sops_decrypt(dir.path(), &file, identity);
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(parse_yaml(&out.stdout), secret);
    }
}

/// Seals one Secret, applies `edit` to the file's text, and runs sops on it.
fn decrypt_edited(edit: impl FnOnce(&str, &Value) -> String) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::generate();
    let secret = secret(
        "edited",
        json!({
            "metadata": {"name": "edited", "namespace": "sops-test", "labels": {"tier": "db"}},
            "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="},
        }),
    );
    let file = seal_to_file(dir.path(), "edited", &secret, &recipients_of(&identity), 1);
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = edit(&text, &parse_yaml(text.as_bytes()));
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&file, edited).unwrap();
    sops_decrypt(dir.path(), &file, &identity)
}

fn enc_of<'a>(sealed: &'a Value, key: &str) -> &'a str {
    sealed["data"][key].as_str().unwrap()
}

#[test]
fn sops_refuses_a_changed_ciphertext() {
    let out = decrypt_edited(|text, sealed| {
        let enc = enc_of(sealed, "password");
        let data = enc.strip_prefix("ENC[AES256_GCM,data:").unwrap().split(',').next().unwrap();
        let mut bytes = STANDARD.decode(data).unwrap();
        bytes[0] ^= 1;
        text.replacen(enc, &enc.replacen(data, &STANDARD.encode(bytes), 1), 1)
    });
    assert_eq!(
        out.status.code(),
        Some(ERROR_DECRYPTING_TREE),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sops_finds_a_mac_mismatch_when_an_enc_value_is_emptied() {
    // sops reads "" as "" without a tag to check, so only the MAC can tell.
    let out = decrypt_edited(|text, sealed| text.replacen(enc_of(sealed, "password"), "\"\"", 1));
    assert_eq!(out.status.code(), Some(MAC_MISMATCH), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MAC mismatch"));
}

#[test]
fn sops_refuses_swapped_enc_values_and_a_changed_label() {
    // Swapping two values breaks their tags (the key path is additional data).
    let out = decrypt_edited(|text, sealed| {
        let (password, user) = (enc_of(sealed, "password"), enc_of(sealed, "user"));
        text.replacen(password, "SWAP", 1).replacen(user, password, 1).replacen("SWAP", user, 1)
    });
    assert_eq!(
        out.status.code(),
        Some(ERROR_DECRYPTING_TREE),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A readable value is covered by the MAC too.
    let out = decrypt_edited(|text, _| text.replacen("tier: db", "tier: web", 1));
    assert_eq!(out.status.code(), Some(MAC_MISMATCH), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}
