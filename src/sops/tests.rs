use age::x25519::Identity;
use k8s_openapi::jiff::Timestamp;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use serde_json::{Value, json};

use super::cipher::{DataKey, SopsGcm};
use super::metadata::lastmodified_text;
use super::open::{Node, OpenError, decrypt_value, open, parse_enc};
use super::*;
use aes_gcm::KeyInit;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

fn recipients(ids: &[&Identity]) -> Recipients {
    Recipients::parse(ids.iter().map(|id| id.to_public().to_string())).unwrap()
}

fn secret() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "db",
            "namespace": "shop",
            "labels": {"app": "shop", "tier": "db"},
            "annotations": {
                "note": "line one\nline two\n",
                "looks-like-bool": "true",
                "looks-like-number": "0x1F",
                "ünïcode": "snow ☃",
            },
        },
        "type": "Opaque",
        "immutable": true,
        "data": {
            "password": "aHVudGVyMg==",
            "empty": "",
            "binary": "AAECAwQFBgcICQoLDA0ODxAREhP/",
            "123": "MTIz",
        },
        "stringData": {
            "config.yaml": "user: admin\npassword: \"x\"\n",
            "ключ": "значение",
            "blank": "",
        },
    })
}

fn seal_with(secret: &Value, ids: &[&Identity], seed: u64) -> Vec<u8> {
    seal(secret, &recipients(ids), at(1_767_225_600), &mut rng(seed)).unwrap()
}

fn text(file: &[u8]) -> &str {
    std::str::from_utf8(file).unwrap()
}

/// The ENC values under `data` and `stringData`, by key.
fn enc_values(file: &[u8]) -> Vec<(String, String, String)> {
    let doc = Node::parse(file).unwrap();
    let mut out = Vec::new();
    for section in ["data", "stringData"] {
        if let Some(Node::Map(entries)) = doc.get(section) {
            for (key, value) in entries {
                out.push((section.to_owned(), key.clone(), value.as_str().unwrap().to_owned()));
            }
        }
    }
    out
}

/// Replaces the string at `section.key` in the file's YAML text.
fn replace_value(file: &[u8], section: &str, key: &str, new: &str) -> Vec<u8> {
    let mut doc = Node::parse(file).unwrap();
    *doc.get_mut(section).unwrap().get_mut(key).unwrap() = Node::Str(new.to_owned());
    ordered_yaml(&doc)
}

/// Writes a node back as YAML in its own order (JSON is YAML).
fn ordered_yaml(node: &Node) -> Vec<u8> {
    fn write(node: &Node, out: &mut String) {
        match node {
            Node::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            Node::Seq(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_json().to_string()),
        }
    }
    let mut out = String::new();
    write(node, &mut out);
    out.into_bytes()
}

#[test]
fn round_trip_gives_back_the_secret_exactly() {
    let id = Identity::generate();
    let file = seal_with(&secret(), &[&id], 1);
    let opened = open(&file, &id).unwrap();
    assert_eq!(opened.secret, secret());
}

#[test]
fn every_recipient_opens_the_file_and_others_do_not() {
    let (a, b, stranger) = (Identity::generate(), Identity::generate(), Identity::generate());
    let file = seal_with(&secret(), &[&a, &b], 2);
    assert_eq!(open(&file, &a).unwrap().secret, secret());
    assert_eq!(open(&file, &b).unwrap().secret, secret());
    assert_eq!(open(&file, &stranger).err(), Some(OpenError::NoMatchingKey));
    let doc = Node::parse(&file).unwrap();
    let Some(Node::Seq(entries)) = doc.get("sops").and_then(|s| s.get("age")) else { panic!("no sops.age") };
    let listed: Vec<&str> =
        entries.iter().map(|e| e.get("recipient").and_then(Node::as_str).unwrap()).collect();
    assert_eq!(listed, [a.to_public().to_string(), b.to_public().to_string()]);
}

#[test]
fn only_data_and_string_data_are_encrypted() {
    let file = seal_with(&secret(), &[&Identity::generate()], 3);
    let doc = Node::parse(&file).unwrap();
    assert_eq!(doc.get("kind").and_then(Node::as_str), Some("Secret"));
    assert_eq!(doc.get("type").and_then(Node::as_str), Some("Opaque"));
    assert_eq!(doc.get("immutable"), Some(&Node::Bool(true)));
    let meta = doc.get("metadata").unwrap();
    assert_eq!(meta.get("name").and_then(Node::as_str), Some("db"));
    assert_eq!(
        meta.get("annotations").and_then(|a| a.get("looks-like-bool")),
        Some(&Node::Str("true".into()))
    );
    for (section, key, value) in enc_values(&file) {
        let plain = secret()[&section][&key].as_str().unwrap().to_owned();
        if plain.is_empty() {
            assert_eq!(value, "", "{section}.{key}: sops leaves an empty string empty");
        } else {
            assert!(value.starts_with("ENC[AES256_GCM,data:"), "{section}.{key} = {value}");
            assert!(!text(&file).contains(&plain), "{section}.{key} leaked in plaintext");
        }
    }
}

#[test]
fn enc_values_have_the_sops_format_and_their_path_as_additional_data() {
    let id = Identity::generate();
    let file = seal_with(&secret(), &[&id], 4);
    let cipher = SopsGcm::new_from_slice(&open(&file, &id).unwrap().data_key).unwrap();
    let values = enc_values(&file);
    assert_eq!(values.len(), 7);
    for (section, key, value) in values.into_iter().filter(|(_, _, v)| !v.is_empty()) {
        let plain = secret()[&section][&key].as_str().unwrap().to_owned();
        let parts = parse_enc(&value).unwrap_or_else(|| panic!("not ENC: {value}"));
        assert_eq!(
            (parts.data.len(), parts.iv.len(), parts.tag.len(), parts.kind),
            (plain.len(), 32, 16, "str")
        );
        let path = format!("{section}:{key}:");
        assert_eq!(decrypt_value(&value, &cipher, &path), Ok(plain), "{path}");
        assert_eq!(
            decrypt_value(&value, &cipher, "data:other:"),
            Err(()),
            "{path} opened under another path"
        );
    }
}

/// A test vector from sops' own aes/cipher_test.go: key "f"×32, additional
/// data "bar:", plaintext "foo". Replaying its IV must give its exact value.
#[test]
fn value_encryption_matches_a_sops_test_vector() {
    use base64::Engine as _;
    let iv = base64::engine::general_purpose::STANDARD
        .decode("MyIDYbT718JRr11QtBkcj3Dwm4k1aCGZBVeZf0EyV8o=")
        .unwrap();
    let mut bytes = vec![b'f'; 32];
    bytes.extend(iv);
    let mut replay = Replay(bytes.into_iter());
    let key = DataKey::generate(&mut replay);
    assert_eq!(
        key.encrypt_str("foo", "bar:", &mut replay).unwrap(),
        "ENC[AES256_GCM,data:oYyi,iv:MyIDYbT718JRr11QtBkcj3Dwm4k1aCGZBVeZf0EyV8o=,tag:t5z2Z023Up0kxwCgw1gNxg==,type:str]"
    );
}

/// Hands out fixed bytes: a test fake, not a CSPRNG.
struct Replay(std::vec::IntoIter<u8>);

impl RngCore for Replay {
    fn next_u32(&mut self) -> u32 {
        unimplemented!("only fill_bytes is used")
    }
    fn next_u64(&mut self) -> u64 {
        unimplemented!("only fill_bytes is used")
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for byte in dst {
            *byte = self.0.next().expect("replay ran out of bytes");
        }
    }
}

impl CryptoRng for Replay {}

#[test]
fn a_changed_ciphertext_fails_its_tag() {
    let id = Identity::generate();
    let file = seal_with(&secret(), &[&id], 5);
    let value = enc_values(&file).into_iter().find(|(_, k, _)| k == "password").unwrap().2;
    let data = parse_enc(&value).unwrap().data;
    let mut flipped = data.clone();
    flipped[0] ^= 1;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let tampered = value.replacen(&b64.encode(&data), &b64.encode(&flipped), 1);
    assert_ne!(tampered, value);
    let file = replace_value(&file, "data", "password", &tampered);
    assert_eq!(open(&file, &id).err(), Some(OpenError::Tag { path: "data.password".into() }));
}

#[test]
fn a_value_moved_to_another_key_fails_its_tag() {
    let id = Identity::generate();
    let file = seal_with(&secret(), &[&id], 6);
    let values = enc_values(&file);
    let binary = &values.iter().find(|(_, k, _)| k == "binary").unwrap().2;
    let file = replace_value(&file, "data", "password", binary);
    assert_eq!(open(&file, &id).err(), Some(OpenError::Tag { path: "data.password".into() }));
}

#[test]
fn a_changed_readable_value_or_an_emptied_value_fails_the_mac() {
    let id = Identity::generate();
    let file = seal_with(&secret(), &[&id], 7);
    let relabelled = {
        let mut doc = Node::parse(&file).unwrap();
        let labels = doc.get_mut("metadata").unwrap().get_mut("labels").unwrap();
        *labels.get_mut("tier").unwrap() = Node::Str("web".into());
        ordered_yaml(&doc)
    };
    assert_eq!(open(&relabelled, &id).err(), Some(OpenError::MacMismatch));
    // An empty value decrypts to "" without a tag, so only the MAC catches it.
    let emptied = replace_value(&file, "data", "password", "");
    assert_eq!(open(&emptied, &id).err(), Some(OpenError::MacMismatch));
}

#[test]
fn reordered_keys_fail_the_mac() {
    let id = Identity::generate();
    let file = seal_with(&secret(), &[&id], 8);
    let mut doc = Node::parse(&file).unwrap();
    let Some(Node::Map(entries)) = doc.get_mut("stringData") else { panic!("no stringData") };
    entries.reverse();
    assert_eq!(open(&ordered_yaml(&doc), &id).err(), Some(OpenError::MacMismatch));
}

#[test]
fn the_mac_is_bound_to_lastmodified() {
    let id = Identity::generate();
    let file = seal_with(&secret(), &[&id], 9);
    let mut doc = Node::parse(&file).unwrap();
    *doc.get_mut("sops").unwrap().get_mut("lastmodified").unwrap() = Node::Str("2026-01-01T00:00:01Z".into());
    assert_eq!(open(&ordered_yaml(&doc), &id).err(), Some(OpenError::MacMismatch));
}

#[test]
fn the_file_is_laid_out_as_sops_writes_it() {
    let file = seal_with(&secret(), &[&Identity::generate()], 10);
    let doc = Node::parse(&file).unwrap();
    assert_eq!(
        doc.keys(),
        ["apiVersion", "kind", "metadata", "data", "immutable", "stringData", "type", "sops"]
    );
    let meta = doc.get("sops").unwrap();
    assert_eq!(meta.keys(), ["age", "encrypted_regex", "lastmodified", "mac", "version"]);
    assert_eq!(meta.get("lastmodified").and_then(Node::as_str), Some("2026-01-01T00:00:00Z"));
    assert_eq!(meta.get("encrypted_regex").and_then(Node::as_str), Some("^(data|stringData)$"));
    assert_eq!(meta.get("version").and_then(Node::as_str), Some(SOPS_VERSION));
    let Some(Node::Seq(age)) = meta.get("age") else { panic!("no age list") };
    let enc = age[0].get("enc").and_then(Node::as_str).unwrap();
    assert!(enc.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"), "{enc}");
    assert!(enc.ends_with("-----END AGE ENCRYPTED FILE-----\n"), "{enc}");
    assert!(parse_enc(meta.get("mac").and_then(Node::as_str).unwrap()).is_some());
    // Keys inside data are sorted byte-wise, as the MAC walked them.
    assert_eq!(doc.get("data").unwrap().keys(), ["123", "binary", "empty", "password"]);
}

#[test]
fn output_does_not_depend_on_insertion_order_and_is_stable_per_seed() {
    let id = Identity::generate();
    let mut reversed = serde_json::Map::new();
    let original = secret();
    for (k, v) in original.as_object().unwrap().iter().rev() {
        reversed.insert(k.clone(), v.clone());
    }
    let without_age = |file: &[u8]| {
        let mut doc = Node::parse(file).unwrap();
        *doc.get_mut("sops").unwrap().get_mut("age").unwrap() = Node::Null;
        doc
    };
    let a = seal_with(&original, &[&id], 11);
    let b = seal_with(&Value::Object(reversed), &[&id], 11);
    assert_eq!(without_age(&a), without_age(&b));
    let c = seal_with(&original, &[&id], 12);
    assert_ne!(without_age(&a), without_age(&c), "another seed must give other IVs and key");
}

#[test]
fn many_long_and_odd_values_round_trip() {
    let id = Identity::generate();
    let mut data = serde_json::Map::new();
    for i in 0..300 {
        data.insert(format!("key-{i:03}"), Value::String("x".repeat(i * 7)));
    }
    data.insert("long".into(), Value::String("A".repeat(1 << 20)));
    for odd in ["true", "null", "~", "1.5", "0o17", "on", "-", "<<", "key with spaces"] {
        data.insert(odd.into(), Value::String(format!("{odd}\n\ttab\r\n")));
    }
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "big", "namespace": "n"}, "data": data});
    let file = seal(&secret, &recipients(&[&id]), at(0), &mut rng(13)).unwrap();
    assert_eq!(open(&file, &id).unwrap().secret, secret);
}

#[test]
fn a_key_named_data_is_encrypted_wherever_it_is_as_sops_would() {
    let id = Identity::generate();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "n", "annotations": {"data": "visible?", "other": "visible"}},
        "data": {},
    });
    let file = seal(&secret, &recipients(&[&id]), at(0), &mut rng(14)).unwrap();
    assert!(!text(&file).contains("visible?"));
    assert!(text(&file).contains("other: visible"));
    assert_eq!(open(&file, &id).unwrap().secret, secret);
}

#[test]
fn values_sops_would_not_read_back_are_refused_without_their_plaintext() {
    let ids = recipients(&[&Identity::generate()]);
    let bad = json!({"apiVersion": "v1", "kind": "Secret", "data": {"token": 12345678}});
    let err = seal(&bad, &ids, at(0), &mut rng(0)).unwrap_err();
    assert!(
        matches!(&err, SopsError::NotAString { path, found: "number" } if path == "data.token"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("12345678"), "{err}");
    let float = json!({"kind": "Secret", "metadata": {"generation": 1.5}});
    assert!(matches!(seal(&float, &ids, at(0), &mut rng(0)), Err(SopsError::UnsupportedValue { .. })));
    assert!(matches!(
        seal(&json!("x"), &ids, at(0), &mut rng(0)),
        Err(SopsError::NotAnObject { found: "string" })
    ));
    let reserved = json!({"kind": "Secret", "sops": {}});
    assert!(matches!(seal(&reserved, &ids, at(0), &mut rng(0)), Err(SopsError::ReservedKey)));
}

#[test]
fn recipients_are_checked_and_errors_name_the_bad_entry() {
    let good = Identity::generate().to_public().to_string();
    let parsed = Recipients::parse([format!("  {good}\n")]).unwrap();
    assert_eq!(parsed.to_strings(), std::slice::from_ref(&good));
    let err = Recipients::parse([good.as_str(), "age1notakey"]).unwrap_err();
    assert!(
        matches!(&err, SopsError::InvalidRecipient { index: 1, entry, .. } if entry == "age1notakey"),
        "{err:?}"
    );
    assert!(err.to_string().contains("age1notakey"), "{err}");
    assert!(matches!(Recipients::parse(Vec::<String>::new()), Err(SopsError::NoRecipients)));
    let err = Recipients::parse([good.clone(), good.to_uppercase()]).unwrap_err();
    assert!(matches!(err, SopsError::DuplicateRecipient { .. }), "{err:?}");
}

#[test]
fn lastmodified_is_rfc3339_whole_seconds_utc() {
    assert_eq!(lastmodified_text(at(0)).unwrap(), "1970-01-01T00:00:00Z");
    let with_fraction = Timestamp::new(1_767_225_600, 999_999_999).unwrap();
    assert_eq!(lastmodified_text(with_fraction).unwrap(), "2026-01-01T00:00:00Z");
    assert_eq!(lastmodified_text(at(-62_167_219_200)).unwrap(), "0000-01-01T00:00:00Z");
    assert_eq!(lastmodified_text(Timestamp::MAX).unwrap(), "9999-12-30T22:00:00Z");
    assert!(matches!(lastmodified_text(at(-62_167_219_201)), Err(SopsError::LastModifiedOutOfRange { .. })));
}

// ---- digest ----

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

#[test]
fn digest_has_its_format_and_depends_on_content_and_key() {
    let d = digest(KEY, &secret());
    let hex = d.strip_prefix(DIGEST_PREFIX).unwrap();
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(digest(KEY, &secret()), d, "same content, same digest");
    assert_ne!(digest(b"another key, as long as the first", &secret()), d, "the key matters");
}

#[test]
fn digest_changes_with_any_covered_change() {
    let base = digest(KEY, &secret());
    type Edit = (&'static str, fn(&mut Value));
    let edits: [Edit; 8] = [
        ("one byte of a data value", |s| s["data"]["password"] = json!("aHVudGVyMw==")),
        ("an empty value filled", |s| s["data"]["empty"] = json!("AA==")),
        ("a data key renamed", |s| {
            let v = s["data"].as_object_mut().unwrap().remove("binary").unwrap();
            s["data"]["binarz"] = v;
        }),
        ("a value moved from data to stringData", |s| {
            let v = s["data"].as_object_mut().unwrap().remove("123").unwrap();
            s["stringData"]["123"] = v;
        }),
        ("a label", |s| s["metadata"]["labels"]["tier"] = json!("web")),
        ("an annotation", |s| s["metadata"]["annotations"]["note"] = json!("line one\n")),
        ("the name", |s| s["metadata"]["name"] = json!("db2")),
        ("the type", |s| s["type"] = json!("kubernetes.io/tls")),
    ];
    for (what, edit) in edits {
        let mut changed = secret();
        edit(&mut changed);
        assert_ne!(digest(KEY, &changed), base, "{what}");
    }
}

#[test]
fn digest_ignores_its_own_annotation_and_key_order() {
    let base = digest(KEY, &secret());
    let mut annotated = secret();
    annotated["metadata"]["annotations"][DIGEST_ANNOTATION] = json!(base);
    assert_eq!(digest(KEY, &annotated), base);

    let mut bare = secret();
    bare["metadata"].as_object_mut().unwrap().remove("annotations");
    let bare_digest = digest(KEY, &bare);
    let mut only_digest = bare.clone();
    only_digest["metadata"]["annotations"] = json!({ (DIGEST_ANNOTATION): bare_digest });
    assert_eq!(digest(KEY, &only_digest), bare_digest, "annotations holding only the digest count as absent");

    let mut reversed = serde_json::Map::new();
    for (k, v) in secret().as_object().unwrap().iter().rev() {
        reversed.insert(k.clone(), v.clone());
    }
    assert_eq!(digest(KEY, &Value::Object(reversed)), base);
}

#[test]
fn digest_in_file_reads_back_what_the_caller_sealed() {
    let id = Identity::generate();
    let d = digest(KEY, &secret());
    let mut annotated = secret();
    annotated["metadata"]["annotations"][DIGEST_ANNOTATION] = json!(d);
    let file = seal_with(&annotated, &[&id], 15);
    assert_eq!(digest_in_file(&file), Some(d.clone()));
    assert_eq!(
        digest(KEY, &open(&file, &id).unwrap().secret),
        d,
        "the decrypted file digests as the live Secret"
    );

    assert_eq!(digest_in_file(&seal_with(&secret(), &[&id], 16)), None, "no annotation");
    annotated["metadata"]["annotations"][DIGEST_ANNOTATION] = json!("hmac-sha256:XYZ");
    assert_eq!(digest_in_file(&seal_with(&annotated, &[&id], 17)), None, "malformed");
    assert_eq!(digest_in_file(b"{not yaml: ["), None);
    assert_eq!(digest_in_file(b""), None);
}
