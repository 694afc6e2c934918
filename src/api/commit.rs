//! `spec.commit` of a GitProvider or a GitTarget: how commit messages
//! read. Named as Flux's ImageUpdateAutomation names its own
//! (`spec.git.commit.messageTemplate`), in the same Go template syntax,
//! limited to fields.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::worker::message::template;

/// CommitSettings shapes the commits written for a target.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CommitSettings {
    /// MessageTemplate is the subject (first line) and body of a commit
    /// that holds one object's change, as a Go template of fields only,
    /// e.g. `{{ .Operation }} {{ .Resource }}/{{ .Namespace }}/{{ .Name }}`.
    /// Fields: .Operation (create, update, delete), .Kind, .Group, .Version,
    /// .APIVersion, .Resource (plural), .Namespace, .Name,
    /// .ResourceVersion, .Manager (the field manager of the change),
    /// .Replica, .TraceID, .Target (namespace/name of the GitTarget).
    /// Literal braces: `{{ "{{" }}`. No functions, pipelines, conditions
    /// or trim markers. The operator adds its trailers (GitTarget, Manager,
    /// Resource-Version, Replica, Trace-Id) after it. Sync and delete
    /// commits of several objects keep their own messages. On a GitTarget
    /// it replaces its GitProvider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // template::MAX_TEMPLATE_BYTES (a test holds them equal).
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(template::admission_rule()).message(
        "messageTemplate must be text with fields such as {{ .Kind }} (the fields: .Operation, .Kind, .Group, \
         .Version, .APIVersion, .Resource, .Namespace, .Name, .ResourceVersion, .Manager, .Replica, .TraceID, \
         .Target) or quoted strings such as {{ \"{{\" }} for literal braces; every {{ needs its }}"
    ))]
    pub message_template: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRD's length limit is the parser's.
    #[test]
    fn the_schema_caps_templates_where_the_parser_does() {
        let schema = serde_json::to_value(schemars::schema_for!(CommitSettings)).unwrap();
        let limit = &schema["properties"]["messageTemplate"]["maxLength"];
        assert_eq!(limit.as_u64(), Some(template::MAX_TEMPLATE_BYTES as u64), "{schema}");
        let rules = schema["properties"]["messageTemplate"]["x-kubernetes-validations"].to_string();
        assert!(rules.contains("self.matches("), "{schema}");
    }
}
