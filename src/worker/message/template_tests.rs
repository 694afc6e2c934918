use super::*;

/// A value for every field: its name in lower case, so a test sees which
/// field went where.
fn named(field: Field) -> Option<String> {
    Some(field.name().to_ascii_lowercase())
}

fn render(template: &str) -> String {
    Template::parse(template).unwrap_or_else(|e| panic!("{template:?}: {e}")).render(named)
}

#[test]
fn every_field_renders_its_value() {
    for field in Field::ALL {
        let expected = field.name().to_ascii_lowercase();
        assert_eq!(render(&format!("{{{{ .{} }}}}", field.name())), expected);
        assert_eq!(render(&format!("{{{{.{}}}}}", field.name())), expected, "spaces are optional");
    }
}

#[test]
fn text_fields_and_escapes_render_as_go_templates_do() {
    let cases = [
        (
            "{{ .Operation }} {{ .Resource }}/{{ .Namespace }}/{{ .Name }}",
            "operation resource/namespace/name",
        ),
        ("chore: {{.Kind}} {{.Name}}\n\nby {{ .Manager }}", "chore: kind name\n\nby manager"),
        (r#"{{ "{{" }}.Kind{{ "}}" }}"#, "{{.Kind}}"),
        (r#"{{"{{"}} literal"#, "{{ literal"),
        ("a lone { and } stay", "a lone { and } stay"),
        ("}} alone is text", "}} alone is text"),
        ("{.Kind}", "{.Kind}"),
        ("{ {{.Kind}}", "{ kind"),
        (r#"{{ "" }}x"#, "x"),
        ("\n\n  {{.Kind}}  \n\n", "kind"),
        ("ü {{.Name}} ✓", "ü name ✓"),
    ];
    for (template, expected) in cases {
        assert_eq!(render(template), expected, "{template:?}");
    }
}

#[test]
fn bad_templates_are_refused_with_where_and_how() {
    type Is = fn(&TemplateError) -> bool;
    let cases: [(&str, Is, &str); 9] = [
        (
            "{{ .kind }}",
            |e| matches!(e, TemplateError::UnknownField { name, at: 0 } if name == "kind"),
            ".Kind",
        ),
        ("x {{ .Nope }}", |e| matches!(e, TemplateError::UnknownField { at: 2, .. }), ".TraceID"),
        ("{{ .Kind", |e| matches!(e, TemplateError::Unclosed { at: 0 }), "never closes"),
        ("ok {{ \"{{\" ", |e| matches!(e, TemplateError::Unclosed { at: 3 }), "never closes"),
        ("{{ .Kind | upper }}", |e| matches!(e, TemplateError::Unsupported { at: 0 }), "pipelines"),
        ("{{ if .Kind }}x{{ end }}", |e| matches!(e, TemplateError::Unsupported { .. }), "conditions"),
        ("{{- .Kind -}}", |e| matches!(e, TemplateError::Unsupported { .. }), "trim markers"),
        (r#"{{ "a\"b" }}"#, |e| matches!(e, TemplateError::Unsupported { .. }), "quoted string"),
        ("  \n\t", |e| *e == TemplateError::EmptySubject, "empty subject"),
    ];
    for (template, is, says) in cases {
        let error = Template::parse(template).expect_err(template);
        assert!(is(&error), "{template:?}: {error:?}");
        assert!(error.to_string().contains(says), "{template:?}: {error}");
    }
    let long = "x".repeat(MAX_TEMPLATE_BYTES + 1);
    assert_eq!(Template::parse(&long), Err(TemplateError::TooLong { len: MAX_TEMPLATE_BYTES + 1 }));
    assert!(Template::parse(&"x".repeat(MAX_TEMPLATE_BYTES)).is_ok());
}

/// A name cannot smuggle a line into the message: no header line, no
/// trailer of its own.
#[test]
fn values_stay_on_one_bounded_line() {
    let template = Template::parse("update {{ .Name }}\n\nbody").unwrap();
    let hostile =
        |field| (field == Field::Name).then(|| "x\n\nTrace-Id: forged\r\nSigned-off-by: me\u{0}".to_owned());
    let message = template.render(hostile);
    assert_eq!(message.lines().count(), 3, "{message:?}");
    assert!(message.starts_with("update x  Trace-Id: forged  Signed-off-by: me "), "{message:?}");
    let long = Template::parse("{{ .Name }}").unwrap().render(|_| Some("n".repeat(10_000)));
    assert_eq!(long.len(), MAX_VALUE_CHARS);
}

#[test]
fn the_rendered_message_is_cut_at_its_cap_on_a_character_boundary() {
    let template = Template::parse(&"é{{ .Name }}".repeat(100)).unwrap();
    let message = template.render(|_| Some("ü".repeat(MAX_VALUE_CHARS)));
    assert!(
        message.len() <= MAX_RENDERED_BYTES && message.len() > MAX_RENDERED_BYTES - 4,
        "{}",
        message.len()
    );
}

#[test]
fn an_empty_value_can_leave_the_subject_empty_for_the_caller_to_replace() {
    let template = Template::parse("{{ .Manager }}\n\nbody").unwrap();
    let message = template.render(|_| None);
    assert_eq!(subject_of(&message), "body", "leading blank lines are dropped");
    let message = Template::parse("{{ .Manager }}").unwrap().render(|_| None);
    assert_eq!(subject_of(&message), "");
}

/// The CRD's rule names every field the parser knows, and nothing else.
#[test]
fn the_admission_rule_lists_every_field() {
    let rule = admission_rule();
    for field in Field::ALL {
        assert!(
            rule.contains(&format!("|{}", field.name())) || rule.contains(&format!("({}|", field.name()))
        );
    }
    assert!(rule.starts_with("self.matches('^(") && rule.ends_with(")*$')"), "{rule}");
    assert!(!rule.contains("{{"), "format braces are resolved: {rule}");
}
