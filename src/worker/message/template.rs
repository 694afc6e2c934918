//! A commit message template (pure): the placeholders of Go's text/template
//! and nothing else, so a template written for Flux reads the same here.
//!
//! Syntax:
//! - `{{ .Kind }}` (spaces inside the braces optional) is replaced by a
//!   field's value; the fields are [`Field::ALL`], names case-sensitive.
//! - `{{ "text" }}` is replaced by `text`, which may hold no `"` or `\`:
//!   the escape for literal braces, `{{ "{{" }}` and `{{ "}}" }}`.
//! - everything else is literal text (a lone `{` or `}` included).
//!
//! No pipelines, functions, conditionals or loops: what a template costs is
//! its length. A template is parsed once, when its GitProvider or GitTarget
//! is read; a bad one is a condition on the GitTarget, never a failed commit.
//! Values are made single-line and bounded before they are put in, so an
//! object name cannot add header lines or trailers.

use std::fmt::Write as _;

/// Most bytes a template may have (the CRDs say so too).
pub const MAX_TEMPLATE_BYTES: usize = 2048;
/// Most bytes a rendered message may have; longer ones are cut.
pub const MAX_RENDERED_BYTES: usize = 4096;
/// Most characters a value keeps (a Kubernetes name is at most 253).
pub const MAX_VALUE_CHARS: usize = 253;

/// What a template can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `create`, `update` or `delete`.
    Operation,
    /// `ConfigMap`.
    Kind,
    /// `apps`; empty for the core group.
    Group,
    /// `v1`.
    Version,
    /// `apps/v1`, or `v1` for the core group.
    APIVersion,
    /// The plural resource name: `configmaps`.
    Resource,
    /// Empty for cluster-scoped objects.
    Namespace,
    Name,
    /// `metadata.resourceVersion` of the version written.
    ResourceVersion,
    /// The field manager of the change (the newest managedFields entry);
    /// empty when unknown (deletes, listed objects without managedFields).
    Manager,
    /// The operator replica (pod name) that wrote the commit.
    Replica,
    /// The trace id of the watch event, when tracing is on.
    TraceID,
    /// The GitTarget, `namespace/name`.
    Target,
}

impl Field {
    pub const ALL: [Field; 13] = [
        Self::Operation,
        Self::Kind,
        Self::Group,
        Self::Version,
        Self::APIVersion,
        Self::Resource,
        Self::Namespace,
        Self::Name,
        Self::ResourceVersion,
        Self::Manager,
        Self::Replica,
        Self::TraceID,
        Self::Target,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Operation => "Operation",
            Self::Kind => "Kind",
            Self::Group => "Group",
            Self::Version => "Version",
            Self::APIVersion => "APIVersion",
            Self::Resource => "Resource",
            Self::Namespace => "Namespace",
            Self::Name => "Name",
            Self::ResourceVersion => "ResourceVersion",
            Self::Manager => "Manager",
            Self::Replica => "Replica",
            Self::TraceID => "TraceID",
            Self::Target => "Target",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Why a template was refused; the text completes "messageTemplate ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("is {len} bytes long; at most {MAX_TEMPLATE_BYTES} are allowed")]
    TooLong { len: usize },
    #[error("renders an empty subject line; start it with text or a field such as {{{{ .Kind }}}}")]
    EmptySubject,
    #[error("names an unknown field {{{{ .{name} }}}} at byte {at}; the fields are {}", field_list())]
    UnknownField { name: String, at: usize },
    #[error(
        "opens an action with {{{{ at byte {at} and never closes it with }}}}; write {{{{ \"{{{{\" }}}} for literal braces"
    )]
    Unclosed { at: usize },
    #[error(
        "has an action at byte {at} that is neither a field such as {{{{ .Kind }}}} nor a quoted string \
         without '\"' or '\\' such as {{{{ \"{{{{\" }}}} (functions, pipelines, conditions and trim markers are not supported)"
    )]
    Unsupported { at: usize },
}

fn field_list() -> String {
    Field::ALL.iter().map(|f| format!(".{}", f.name())).collect::<Vec<_>>().join(", ")
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::TooLong { len: text.len() });
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut at = 0;
        while let Some(found) = text[at..].find("{{") {
            literal.push_str(&text[at..at + found]);
            let open = at + found;
            let (piece, end) = action(text, open)?;
            match piece {
                Piece::Text(text) => literal.push_str(&text),
                field => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(field);
                }
            }
            at = end;
        }
        literal.push_str(&text[at..]);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        let template = Self { pieces };
        // Every field filled in: the subject must still hold something.
        if subject_of(&template.render(|_| Some("x".into()))).is_empty() {
            return Err(TemplateError::EmptySubject);
        }
        Ok(template)
    }

    /// The message, with `value` giving each field (None: empty). Values
    /// are made single-line and bounded; the result is cut at
    /// [`MAX_RENDERED_BYTES`], has no `\r`, and no blank lines or spaces
    /// at either end. Its subject may still be empty when values are (see
    /// [`subject_of`]).
    pub fn render(&self, value: impl Fn(Field) -> Option<String>) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Field(field) => {
                    let _ = write!(out, "{}", one_line(&value(*field).unwrap_or_default()));
                }
            }
            if out.len() > MAX_RENDERED_BYTES {
                break;
            }
        }
        let mut cut = out.len().min(MAX_RENDERED_BYTES);
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        let out = out.replace('\r', "");
        // Git drops leading blank lines itself; the subject is the first line.
        out.trim_start_matches(['\n', ' ', '\t']).trim_end().to_owned()
    }
}

/// The first line of a rendered message, trimmed.
pub fn subject_of(message: &str) -> &str {
    message.lines().next().unwrap_or_default().trim()
}

/// Parses the action that opens at byte `open` (at `{{`): a field or a
/// quoted string, spaces around it; returns it and where it ends.
fn action(text: &str, open: usize) -> Result<(Piece, usize), TemplateError> {
    let bytes = text.as_bytes();
    let skip_spaces = |mut i: usize| {
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        i
    };
    let start = skip_spaces(open + 2);
    let unsupported = || {
        if text[open + 2..].contains("}}") {
            TemplateError::Unsupported { at: open }
        } else {
            TemplateError::Unclosed { at: open }
        }
    };
    let (piece, after) = match bytes.get(start) {
        Some(b'.') => {
            let name_end = text[start + 1..]
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .map_or(text.len(), |n| start + 1 + n);
            let name = &text[start + 1..name_end];
            let end = skip_spaces(name_end);
            if !text[end..].starts_with("}}") {
                return Err(unsupported());
            }
            let field = Field::from_name(name)
                .ok_or_else(|| TemplateError::UnknownField { name: name.to_owned(), at: open })?;
            (Piece::Field(field), end)
        }
        Some(b'"') => {
            let Some(len) = text[start + 1..].find(['"', '\\']) else { return Err(unsupported()) };
            let close = start + 1 + len;
            if bytes[close] == b'\\' {
                return Err(TemplateError::Unsupported { at: open });
            }
            let end = skip_spaces(close + 1);
            if !text[end..].starts_with("}}") {
                return Err(unsupported());
            }
            (Piece::Text(text[start + 1..close].to_owned()), end)
        }
        _ => return Err(unsupported()),
    };
    Ok((piece, after + 2))
}

/// A value as one bounded line: control characters (newlines among them)
/// become spaces, so no value can start a line of its own.
pub fn one_line(value: &str) -> String {
    value.chars().take(MAX_VALUE_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The CEL rule the CRDs check `messageTemplate` with: the whole grammar
/// above as one RE2 expression, so a typo is refused when it is applied.
pub fn admission_rule() -> String {
    let fields = Field::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join("|");
    // Text: any character but '{', or a '{' not followed by another.
    // Brackets instead of backslashes: no escaping through CEL and YAML.
    format!(r#"self.matches('^([^{{]|[{{][^{{]|[{{]$|[{{][{{] *([.]({fields})|"[^"\\\\]*") *[}}][}}])*$')"#)
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
