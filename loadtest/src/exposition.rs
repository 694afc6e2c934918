//! One line of the Prometheus text exposition, parsed (pure): name, labels
//! with their values unescaped, and value. Shared by the readers of the API
//! server's `/metrics` and of the operator's own registry.

/// A sample's labels: name and unescaped value, in the line's order.
pub type Labels<'a> = Vec<(&'a str, String)>;
/// One parsed sample line: metric name, labels, value (a timestamp is dropped).
pub type Line<'a> = (&'a str, Labels<'a>, f64);

/// Reads a label value after its opening quote; returns it unescaped and the
/// rest after the closing quote.
fn label_value(s: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, c)) => value.push(c), // `\\` and `\"`
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("unterminated label value".into())
}

/// Reads `name="value",…}` after the opening brace; returns the labels and
/// the rest after the closing brace.
pub fn labels(mut s: &str) -> Result<(Labels<'_>, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (name, rest) = s.split_once('=').ok_or("a label without `=`")?;
        let rest = rest.trim_start().strip_prefix('"').ok_or("a label value without quotes")?;
        let (value, rest) = label_value(rest)?;
        labels.push((name.trim(), value));
        s = rest.trim_start();
        s = s.strip_prefix(',').unwrap_or(s); // a trailing comma is allowed
    }
}

/// Parses one sample line; None for comments (`# HELP`, `# TYPE`, …) and blank lines.
pub fn sample(line: &str) -> Result<Option<Line<'_>>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("a name without a value")?;
    let (name, mut rest) = line.split_at(name_end);
    let mut found = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        (found, rest) = labels(after)?;
    }
    // The value, then an optional timestamp (ms), which the rates do not need.
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value: f64 = value.parse().map_err(|e| format!("value {value:?}: {e}"))?;
    Ok(Some((name, found, value)))
}
