//! The two exposition formats of `/metrics` (pure).
//!
//! In: the registry's OpenMetrics text and the scraper's `Accept` header.
//! Out: OpenMetrics 1.0 (with exemplars) for scrapers that ask for it, as
//! Prometheus does; otherwise the Prometheus text format 0.0.4, which
//! `promtool check metrics` and older scrapers read: counters named with
//! their `_total`, no `# UNIT`, no exemplars, no `# EOF`.

/// A format `/metrics` can answer in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics when the `Accept` header names it, else the text format.
pub fn negotiate(accept: Option<&str>) -> Format {
    match accept {
        Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
        _ => Format::Text,
    }
}

/// Rewrites OpenMetrics text (as `prometheus-client` writes it) into the
/// Prometheus text format.
pub fn to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // Counter families are `x` in OpenMetrics and `x_total` in text.
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_owned());
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some((keyword, rest)) = line.strip_prefix("# ").and_then(|l| l.split_once(' ')) {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if counters.contains(name) { format!("{name}_total") } else { name.to_owned() };
            let tail = if keyword == "TYPE" && !matches!(tail, "counter" | "gauge" | "histogram" | "summary")
            {
                "untyped"
            } else {
                tail
            };
            out.push_str(&format!("# {keyword} {name} {tail}\n"));
            continue;
        }
        out.push_str(&line[..sample_end(line)]);
        out.push('\n');
    }
    out
}

/// Where a sample line's value (or timestamp) ends, so an exemplar
/// (` # {...} v t`) after it is cut. Label values may contain `#`, `}`
/// and escaped quotes.
fn sample_end(line: &str) -> usize {
    let bytes = line.as_bytes();
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let mut series_end = name_end;
    if bytes.get(name_end) == Some(&b'{') {
        let mut quoted = false;
        let mut i = name_end + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b'}' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        series_end = (i + 1).min(line.len());
    }
    // value [timestamp] [# exemplar]
    let mut end = series_end;
    for (taken, token) in line[series_end..].split(' ').filter(|t| !t.is_empty()).enumerate() {
        if taken == 2 || token.starts_with('#') {
            break;
        }
        end = line[end..].find(token).map_or(end, |at| end + at + token.len());
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_prometheus() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(None), Format::Text);
    }

    #[test]
    fn counters_get_total_and_exemplars_go() {
        let open = "# HELP x_pushes Pushes.\n# TYPE x_pushes counter\nx_pushes_total{result=\"ok\"} 3\n\
                    # HELP x_lag_seconds Lag.\n# TYPE x_lag_seconds histogram\n# UNIT x_lag_seconds seconds\n\
                    x_lag_seconds_bucket{branch=\"a # {b}\",le=\"1.0\"} 2 # {trace_id=\"abc\"} 0.5 1700000000.0\n\
                    x_lag_seconds_count 2\n# TYPE x_info info\nx_info{v=\"1\"} 1\n# EOF\n";
        let text = to_text(open);
        assert_eq!(
            text,
            "# HELP x_pushes_total Pushes.\n# TYPE x_pushes_total counter\nx_pushes_total{result=\"ok\"} 3\n\
             # HELP x_lag_seconds Lag.\n# TYPE x_lag_seconds histogram\n\
             x_lag_seconds_bucket{branch=\"a # {b}\",le=\"1.0\"} 2\nx_lag_seconds_count 2\n\
             # TYPE x_info untyped\nx_info{v=\"1\"} 1\n"
        );
    }

    #[test]
    fn timestamps_stay() {
        assert_eq!(to_text("a 1 17 # {t=\"x\"} 1\n"), "a 1 17\n");
        assert_eq!(to_text("a{b=\"c\\\"}\"} 1\n"), "a{b=\"c\\\"}\"} 1\n");
    }
}
