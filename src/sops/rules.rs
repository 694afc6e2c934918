//! The `creation_rules` of a branch's `.sops.yaml`, as `sops` reads them to
//! pick the keys of a new file (pure). A GitTarget with
//! `spec.encryption.followSopsConfig` seals each Secret for the age keys of
//! the first rule whose `path_regex` matches the file's path relative to the
//! repository root (where the operator reads `.sops.yaml`); a rule without
//! `path_regex` matches every path. Only `path_regex` and `age` (a
//! comma-separated string or a list) matter here: the operator seals for
//! age only and always encrypts `data` and `stringData`.

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

use super::{Recipients, SopsError};

/// Where `.sops.yaml` is read from: the root of the branch.
pub const SOPS_CONFIG_PATH: &str = ".sops.yaml";

/// A `.sops.yaml` larger than this is refused (a hostile branch).
pub const MAX_SOPS_CONFIG_BYTES: usize = 64 * 1024;

/// Compiled-program budget of one `path_regex`.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The parsed rules, in file order.
#[derive(Clone, Debug)]
pub struct CreationRules(Vec<Rule>);

#[derive(Clone, Debug)]
struct Rule {
    path_regex: Option<Regex>,
    /// The age keys, or why they are unusable (kept, so a Secret the rule
    /// matches is withheld with the reason instead of falling through).
    age: Result<Recipients, String>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    creation_rules: Option<Vec<RawRule>>,
}

#[derive(Deserialize)]
struct RawRule {
    #[serde(default)]
    path_regex: String,
    #[serde(default)]
    age: Option<KeyField>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KeyField {
    Text(String),
    List(Vec<String>),
}

impl CreationRules {
    /// Parses `.sops.yaml`. A file without `creation_rules` gives `None`, as
    /// sops treats it as absent. Errors say what to fix in the file.
    pub fn parse(text: &[u8]) -> Result<Option<Self>, String> {
        if text.len() > MAX_SOPS_CONFIG_BYTES {
            return Err(format!("{SOPS_CONFIG_PATH} is larger than {MAX_SOPS_CONFIG_BYTES} bytes"));
        }
        let text = std::str::from_utf8(text).map_err(|_| format!("{SOPS_CONFIG_PATH} is not UTF-8"))?;
        let file: File =
            serde_saphyr::from_str(text).map_err(|e| format!("{SOPS_CONFIG_PATH} is not valid: {e}"))?;
        let Some(raw) = file.creation_rules else { return Ok(None) };
        let mut rules = Vec::with_capacity(raw.len());
        for (index, rule) in raw.into_iter().enumerate() {
            let path_regex = match rule.path_regex.as_str() {
                "" => None,
                pattern => {
                    Some(RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| {
                        format!(
                            "creation_rules[{index}].path_regex of {SOPS_CONFIG_PATH} does not compile: {e}"
                        )
                    })?)
                }
            };
            let keys: Vec<String> = match rule.age {
                None => Vec::new(),
                Some(KeyField::Text(text)) => {
                    text.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect()
                }
                Some(KeyField::List(list)) => list,
            };
            let age = if keys.is_empty() {
                Err(format!(
                    "creation_rules[{index}] of {SOPS_CONFIG_PATH} names no age recipient (the operator seals for age only); add `age: age1…` to it"
                ))
            } else {
                Recipients::parse(&keys)
                    .map_err(|e: SopsError| format!("creation_rules[{index}].age of {SOPS_CONFIG_PATH}: {e}"))
            };
            rules.push(Rule { path_regex, age });
        }
        Ok(Some(Self(rules)))
    }

    /// Rules that refuse every path with `problem` (a `.sops.yaml` that
    /// does not parse: nothing is sealed for keys it may not mean).
    pub fn broken(problem: String) -> Self {
        Self(vec![Rule { path_regex: None, age: Err(problem) }])
    }

    /// The recipients for the file at `path` (relative to the repository
    /// root): the first matching rule's, as sops picks them.
    pub fn recipients_for(&self, path: &str) -> Result<&Recipients, String> {
        let rule = self
            .0
            .iter()
            .find(|rule| rule.path_regex.as_ref().is_none_or(|re| re.is_match(path)))
            .ok_or_else(|| format!("no creation rule of {SOPS_CONFIG_PATH} matches {path}"))?;
        rule.age.as_ref().map_err(Clone::clone)
    }

    /// Every rule's recipients (or its problem), in order: what the rules
    /// say, for noticing that they changed.
    pub fn describe(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|rule| {
                let pattern = rule.path_regex.as_ref().map_or("", Regex::as_str);
                match &rule.age {
                    Ok(recipients) => format!("{pattern} => {}", recipients.to_strings().join(",")),
                    Err(problem) => format!("{pattern} => {problem}"),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        age::x25519::Identity::generate().to_public().to_string()
    }

    #[test]
    fn the_first_matching_rule_gives_the_recipients() {
        let (prod, rest, extra) = (key(), key(), key());
        let text = format!(
            "creation_rules:\n  - path_regex: ^clusters/prod/.*\\.sops\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    age: {prod}\n  - age: [{rest}, {extra}]\n"
        );
        let rules = CreationRules::parse(text.as_bytes()).unwrap().unwrap();
        let at = |path: &str| rules.recipients_for(path).unwrap().to_strings();
        assert_eq!(at("clusters/prod/shop/core/secrets/db.sops.yaml"), std::slice::from_ref(&prod));
        assert_eq!(at("clusters/test/shop/core/secrets/db.sops.yaml"), [rest.clone(), extra.clone()]);
        // A comma-separated string, as older sops configs write it.
        let text = format!("creation_rules:\n  - path_regex: .*\n    age: \"{prod} , {rest},\"\n");
        let rules = CreationRules::parse(text.as_bytes()).unwrap().unwrap();
        assert_eq!(rules.recipients_for("x").unwrap().to_strings(), [prod, rest]);
    }

    #[test]
    fn problems_say_what_to_fix() {
        let rules = CreationRules::parse(b"creation_rules:\n  - path_regex: ^only/\n    pgp: ABC\n")
            .unwrap()
            .unwrap();
        assert!(rules.recipients_for("else/x").unwrap_err().contains("no creation rule"));
        assert!(rules.recipients_for("only/x").unwrap_err().contains("names no age recipient"));
        let bad = CreationRules::parse(b"creation_rules:\n  - age: age1nope\n").unwrap().unwrap();
        assert!(
            bad.recipients_for("x").unwrap_err().contains("creation_rules[0].age"),
            "{:?}",
            bad.describe()
        );
        assert!(
            CreationRules::parse(b"creation_rules:\n  - path_regex: '('\n")
                .unwrap_err()
                .contains("does not compile")
        );
        assert!(
            CreationRules::parse(b"destination_rules: []\n").unwrap().is_none(),
            "no creation rules: absent"
        );
        assert!(CreationRules::parse(&vec![b'#'; MAX_SOPS_CONFIG_BYTES + 1]).unwrap_err().contains("larger"));
    }
}
