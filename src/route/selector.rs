//! Label selectors compiled once and evaluated per event: Kubernetes'
//! `matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector ready for matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// Why a selector could not be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error(
        "labelSelector: unknown operator {operator:?} for key {key:?} (use In, NotIn, Exists or DoesNotExist)"
    )]
    UnknownOperator { key: String, operator: String },
    #[error("labelSelector: operator {operator} for key {key:?} needs at least one value")]
    MissingValues { key: String, operator: String },
    #[error("labelSelector: operator {operator} for key {key:?} must not have values")]
    UnexpectedValues { key: String, operator: String },
}

impl Selector {
    /// Compiles a selector; an empty selector matches everything.
    pub fn compile(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(key, value)| Requirement::In(key.clone(), vec![value.clone()]))
            .collect();
        for expression in selector.match_expressions.iter().flatten() {
            let key = expression.key.clone();
            let values = expression.values.clone().unwrap_or_default();
            let operator = expression.operator.as_str();
            if !matches!(operator, "In" | "NotIn" | "Exists" | "DoesNotExist") {
                return Err(SelectorError::UnknownOperator { key, operator: operator.into() });
            }
            let needs_values = matches!(operator, "In" | "NotIn");
            if needs_values && values.is_empty() {
                return Err(SelectorError::MissingValues { key, operator: operator.into() });
            }
            if !needs_values && !values.is_empty() {
                return Err(SelectorError::UnexpectedValues { key, operator: operator.into() });
            }
            requirements.push(match operator {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                _ => Requirement::DoesNotExist(key),
            });
        }
        Ok(Self { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|requirement| match requirement {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let selector = Selector::compile(&LabelSelector::default()).unwrap();
        assert!(selector.matches(&labels(&[])));
    }

    #[test]
    fn match_labels_and_expressions_all_apply() {
        let selector = Selector::compile(&LabelSelector {
            match_labels: Some(labels(&[("audit", "true")])),
            match_expressions: Some(vec![
                expression("tier", "In", &["web", "api"]),
                expression("legacy", "DoesNotExist", &[]),
                expression("env", "NotIn", &["dev"]),
            ]),
        })
        .unwrap();
        assert!(selector.matches(&labels(&[("audit", "true"), ("tier", "web")])));
        assert!(selector.matches(&labels(&[("audit", "true"), ("tier", "api"), ("env", "prod")])));
        assert!(!selector.matches(&labels(&[("audit", "true"), ("tier", "db")])));
        assert!(!selector.matches(&labels(&[("audit", "true"), ("tier", "web"), ("legacy", "1")])));
        assert!(!selector.matches(&labels(&[("audit", "true"), ("tier", "web"), ("env", "dev")])));
        assert!(!selector.matches(&labels(&[("tier", "web")])));
    }

    #[test]
    fn malformed_expressions_are_reported() {
        let compile =
            |e| Selector::compile(&LabelSelector { match_expressions: Some(vec![e]), ..Default::default() });
        assert!(matches!(compile(expression("a", "In", &[])), Err(SelectorError::MissingValues { .. })));
        assert!(matches!(
            compile(expression("a", "Exists", &["x"])),
            Err(SelectorError::UnexpectedValues { .. })
        ));
        assert!(matches!(
            compile(expression("a", "Matches", &["x"])),
            Err(SelectorError::UnknownOperator { .. })
        ));
    }
}
