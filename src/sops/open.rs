//! Test-only decrypter: reads a sealed file the way sops does (document
//! order as parsed, not as `seal` walked it), so that unit tests check the
//! format without the sops binary. `tests/sops_decrypt.rs` checks the same
//! against the real one.

use std::fmt;

use aes_gcm::aes::cipher::consts::U32;
use aes_gcm::{AeadInOut, KeyInit, Nonce, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use sha2::{Digest as _, Sha512};

use super::cipher::{SopsGcm, additional_data};
use super::tree::is_encrypted;
use super::{ENCRYPTED_REGEX, SOPS_VERSION};

/// A YAML node that keeps its map entries in document order.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    pub(super) fn parse(yaml: &[u8]) -> Result<Node, OpenError> {
        serde_saphyr::from_slice(yaml).map_err(|e| OpenError::Yaml(e.to_string()))
    }

    pub(super) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn keys(&self) -> Vec<&str> {
        match self {
            Node::Map(entries) => entries.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    pub(super) fn to_json(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::Float(f) => Value::from(*f),
            Node::Str(s) => Value::String(s.clone()),
            Node::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map(entries) => {
                Value::Object(entries.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML node")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v).map(Node::Int).map_err(|_| E::custom("integer beyond i64"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

#[derive(Debug, PartialEq)]
pub(super) enum OpenError {
    Yaml(String),
    Metadata(&'static str),
    /// No `sops.age` entry opens with the identity.
    NoMatchingKey,
    /// A value under `data`/`stringData` is not sops' ENC format, or AES-GCM
    /// refused it: wrong key, changed ciphertext, IV or tag, or a value moved
    /// to another key path.
    Tag {
        path: String,
    },
    MacMismatch,
    UnsupportedValue {
        path: String,
    },
}

/// What a sealed file decrypts to, and the data key that opened it.
pub(super) struct Opened {
    pub(super) secret: Value,
    pub(super) data_key: [u8; 32],
}

/// Decrypts a sealed file as `sops --decrypt` does with `identity`,
/// checking every tag and the MAC.
pub(super) fn open(file: &[u8], identity: &age::x25519::Identity) -> Result<Opened, OpenError> {
    let mut doc = Node::parse(file)?;
    let Node::Map(entries) = &mut doc else { return Err(OpenError::Metadata("document is not a map")) };
    let at = entries.iter().position(|(k, _)| k == "sops").ok_or(OpenError::Metadata("no sops key"))?;
    let (_, meta) = entries.remove(at);
    if meta.get("encrypted_regex").and_then(Node::as_str) != Some(ENCRYPTED_REGEX) {
        return Err(OpenError::Metadata("encrypted_regex"));
    }
    if meta.get("version").and_then(Node::as_str) != Some(SOPS_VERSION) {
        return Err(OpenError::Metadata("version"));
    }
    let lastmodified =
        meta.get("lastmodified").and_then(Node::as_str).ok_or(OpenError::Metadata("lastmodified"))?;
    let file_mac = meta.get("mac").and_then(Node::as_str).ok_or(OpenError::Metadata("mac"))?;
    let data_key = unwrap_data_key(&meta, identity)?;
    let cipher = SopsGcm::new_from_slice(&data_key).expect("32-byte key");

    let mut mac = Sha512::new();
    let mut path = Vec::new();
    let plain = decrypt_node(&doc, &mut path, &cipher, &mut mac)?;
    let computed: String = mac.finalize().iter().map(|b| format!("{b:02X}")).collect();
    let stored = decrypt_value(file_mac, &cipher, lastmodified).map_err(|()| OpenError::MacMismatch)?;
    if stored != computed {
        return Err(OpenError::MacMismatch);
    }
    Ok(Opened { secret: plain.to_json(), data_key })
}

fn unwrap_data_key(meta: &Node, identity: &age::x25519::Identity) -> Result<[u8; 32], OpenError> {
    let Some(Node::Seq(entries)) = meta.get("age") else { return Err(OpenError::Metadata("age")) };
    for entry in entries {
        let enc = entry.get("enc").and_then(Node::as_str).ok_or(OpenError::Metadata("age enc"))?;
        if let Ok(key) = age::decrypt(identity, enc.as_bytes()) {
            return key.try_into().map_err(|_| OpenError::Metadata("data key is not 32 bytes"));
        }
    }
    Err(OpenError::NoMatchingKey)
}

fn decrypt_node(
    node: &Node,
    path: &mut Vec<String>,
    cipher: &SopsGcm,
    mac: &mut Sha512,
) -> Result<Node, OpenError> {
    Ok(match node {
        Node::Map(entries) => {
            let mut out = Vec::new();
            for (key, value) in entries {
                path.push(key.clone());
                out.push((key.clone(), decrypt_node(value, path, cipher, mac)?));
                path.pop();
            }
            Node::Map(out)
        }
        Node::Seq(items) => Node::Seq(
            items.iter().map(|item| decrypt_node(item, path, cipher, mac)).collect::<Result<_, _>>()?,
        ),
        Node::Null => Node::Null,
        Node::Str(s) if is_encrypted(&path.iter().map(String::as_str).collect::<Vec<_>>()) => {
            let ad = additional_data(&path.iter().map(String::as_str).collect::<Vec<_>>());
            let plain =
                decrypt_value(s, cipher, &ad).map_err(|()| OpenError::Tag { path: path_text(path) })?;
            mac.update(plain.as_bytes());
            Node::Str(plain)
        }
        Node::Str(s) => {
            mac.update(s.as_bytes());
            node.clone()
        }
        Node::Bool(b) => {
            mac.update(if *b { "True" } else { "False" });
            node.clone()
        }
        Node::Int(i) => {
            mac.update(i.to_string());
            node.clone()
        }
        Node::Float(_) => return Err(OpenError::UnsupportedValue { path: path_text(path) }),
    })
}

fn path_text(path: &[String]) -> String {
    path.join(".")
}

/// The decoded parts of one `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`.
pub(super) struct EncParts<'a> {
    pub(super) data: Vec<u8>,
    pub(super) iv: Vec<u8>,
    pub(super) tag: Vec<u8>,
    pub(super) kind: &'a str,
}

pub(super) fn parse_enc(value: &str) -> Option<EncParts<'_>> {
    let inner = value.strip_prefix("ENC[AES256_GCM,data:")?.strip_suffix(']')?;
    let (data, rest) = inner.split_once(",iv:")?;
    let (iv, rest) = rest.split_once(",tag:")?;
    let (tag, kind) = rest.split_once(",type:")?;
    Some(EncParts {
        data: STANDARD.decode(data).ok()?,
        iv: STANDARD.decode(iv).ok()?,
        tag: STANDARD.decode(tag).ok()?,
        kind,
    })
}

/// One value back to its plaintext; `""` is `""`, as sops reads it.
pub(super) fn decrypt_value(value: &str, cipher: &SopsGcm, additional_data: &str) -> Result<String, ()> {
    if value.is_empty() {
        return Ok(String::new());
    }
    let EncParts { mut data, iv, tag, kind } = parse_enc(value).ok_or(())?;
    if kind != "str" {
        return Err(());
    }
    let iv: [u8; 32] = iv.try_into().map_err(|_| ())?;
    let tag: [u8; 16] = tag.try_into().map_err(|_| ())?;
    cipher
        .decrypt_inout_detached(
            &Nonce::<U32>::from(iv),
            additional_data.as_bytes(),
            data.as_mut_slice().into(),
            &Tag::from(tag),
        )
        .map_err(|_| ())?;
    String::from_utf8(data).map_err(|_| ())
}
