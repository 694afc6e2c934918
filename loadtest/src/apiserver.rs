//! API server requests per second by verb, read from the kube-apiserver's
//! own counter `apiserver_request_total` in the Prometheus text exposition
//! of its `GET /metrics`. Parsing and rates are pure; `fetch` does the GET.
//!
//! The counter counts every client's requests: the operator's replicas, the
//! load tool itself (its writes, the sampler's Lease lists, the final check's
//! lists), kube-controller-manager, and any other run against the same
//! environment.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::exposition::sample;

/// The counter read; labelled `verb`, `resource`, `code`, … by the API server.
pub const COUNTER: &str = "apiserver_request_total";
/// The process's start time: a change between two snapshots means a restart.
const START_TIME: &str = "process_start_time_seconds";
/// The value `by_verb` files a sample without a `verb` label under.
const NO_VERB: &str = "(none)";

/// One sample of the counter: its verb, whether it counts Lease requests, its value.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    verb: String,
    leases: bool,
    value: f64,
}

/// The counter's series at one moment, keyed by their full label set, so a
/// reset can be told apart per series rather than only per verb sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    series: BTreeMap<String, Series>,
    /// `process_start_time_seconds`, when exposed.
    pub process_start: Option<f64>,
}

impl Snapshot {
    fn sum_by_verb(&self, leases_only: bool) -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for s in self.series.values().filter(|s| s.leases || !leases_only) {
            *sums.entry(s.verb.clone()).or_insert(0.0) += s.value;
        }
        sums
    }

    /// Requests by verb, summed over every other label.
    pub fn by_verb(&self) -> BTreeMap<String, f64> {
        self.sum_by_verb(false)
    }

    /// Requests on `resource="leases"` by verb, summed over every other label.
    pub fn leases_by_verb(&self) -> BTreeMap<String, f64> {
        self.sum_by_verb(true)
    }
}

/// Reads the counter out of a `/metrics` body (Prometheus text format 0.0.4).
/// Lines of other metrics are not parsed beyond their name, so their quirks
/// cannot fail this; a malformed line of the counter does, with its number.
pub fn parse(text: &str) -> Result<Snapshot, String> {
    let mut snapshot = Snapshot::default();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let name_end = trimmed.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(trimmed.len());
        let name = &trimmed[..name_end];
        if name != COUNTER && name != START_TIME {
            continue;
        }
        let Some((_, mut labels, value)) = sample(line).map_err(|e| format!("line {}: {e}", n + 1))? else {
            continue;
        };
        if name == START_TIME {
            snapshot.process_start = Some(value);
            continue;
        }
        if !value.is_finite() || value < 0.0 {
            return Err(format!("line {}: {COUNTER} value {value} is not a count", n + 1));
        }
        let get = |labels: &[(&str, String)], key: &str| {
            labels.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
        };
        let verb = get(&labels, "verb").unwrap_or_else(|| NO_VERB.into());
        let leases = get(&labels, "resource").as_deref() == Some("leases");
        // Sorted, so the same series keys the same in both snapshots whatever the label order.
        labels.sort();
        let key = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(",");
        snapshot.series.insert(key, Series { verb, leases, value });
    }
    if snapshot.series.is_empty() {
        return Err(format!("no {COUNTER} samples in the response"));
    }
    Ok(snapshot)
}

/// Requests per second over a window, by verb.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    pub window_seconds: f64,
    pub total_per_second: f64,
    /// Every verb the API server had counted by the window's end, including those at 0/s.
    pub per_second_by_verb: BTreeMap<String, f64>,
    pub leases_per_second_by_verb: BTreeMap<String, f64>,
    /// Verbs with a counter that went down or vanished, or every verb if the
    /// API server's start time changed: the API server restarted, and their
    /// window counts from 0 at the restart (their rate is a lower bound).
    pub reset_verbs: Vec<String>,
}

/// The rates between two snapshots `window_seconds` apart. Increases are
/// taken per series: a series absent before started at 0 in the window; one
/// that went down was reset by a restart and counts from 0 (never negative).
pub fn rates(before: &Snapshot, after: &Snapshot, window_seconds: f64) -> Rates {
    let restarted = matches!((before.process_start, after.process_start), (Some(a), Some(b)) if a != b);
    let mut resets = BTreeSet::new();
    // Each series' increase over the window, summed by verb below like a snapshot.
    let mut increase = Snapshot::default();
    for (key, now) in &after.series {
        let then = before.series.get(key).map_or(0.0, |s| s.value);
        let value = if restarted || now.value < then {
            resets.insert(now.verb.clone());
            now.value
        } else {
            now.value - then
        };
        increase.series.insert(key.clone(), Series { value, ..now.clone() });
    }
    // Counters are never removed while the API server runs; a gone series means a restart.
    for (key, then) in &before.series {
        if !after.series.contains_key(key) {
            resets.insert(then.verb.clone());
        }
    }
    let window = window_seconds.max(1e-9);
    let per_second = |m: BTreeMap<String, f64>| m.into_iter().map(|(k, v)| (k, v / window)).collect();
    let all = increase.by_verb();
    let total: f64 = all.values().sum();
    Rates {
        window_seconds,
        total_per_second: total / window,
        per_second_by_verb: per_second(all),
        leases_per_second_by_verb: per_second(increase.leases_by_verb()),
        reset_verbs: resets.into_iter().collect(),
    }
}

/// What the report shows: the rates, or why there are none (`error`; then
/// the figures are null or empty).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    pub window_seconds: Option<f64>,
    pub total_per_second: Option<f64>,
    pub per_second_by_verb: BTreeMap<String, f64>,
    pub leases_per_second_by_verb: BTreeMap<String, f64>,
    pub reset_verbs: Vec<String>,
    pub error: Option<String>,
}

/// A snapshot and the moment (unix seconds) its response arrived.
pub type Timed = Result<(f64, Snapshot), String>;

/// The rates between the snapshots at the window's start and end, or what
/// failed.
pub fn measured(start: &Timed, end: &Timed) -> Measured {
    let failed = |error: String| Measured {
        window_seconds: None,
        total_per_second: None,
        per_second_by_verb: BTreeMap::new(),
        leases_per_second_by_verb: BTreeMap::new(),
        reset_verbs: Vec::new(),
        error: Some(error),
    };
    match (start, end) {
        (Ok((t0, before)), Ok((t1, after))) => {
            let r = rates(before, after, t1 - t0);
            Measured {
                window_seconds: Some(r.window_seconds),
                total_per_second: Some(r.total_per_second),
                per_second_by_verb: r.per_second_by_verb,
                leases_per_second_by_verb: r.leases_per_second_by_verb,
                reset_verbs: r.reset_verbs,
                error: None,
            }
        }
        (Err(a), Err(b)) => failed(format!("at the window's start: {a}; at its end: {b}")),
        (Err(e), _) => failed(format!("at the window's start: {e}")),
        (_, Err(e)) => failed(format!("at the window's end: {e}")),
    }
}

/// Takes a snapshot: `GET /metrics` on the API server (the env's client is
/// admin, which may read it). Bounded in time, so a stuck API server cannot
/// hold up the run; the error says what failed.
pub async fn fetch(client: &kube::Client) -> Timed {
    // The text format 0.0.4, which `parse` reads (not OpenMetrics).
    let request = http::Request::get("/metrics")
        .header(http::header::ACCEPT, "text/plain;version=0.0.4")
        .body(Vec::new())
        .map_err(|e| format!("GET /metrics: building the request: {e}"))?;
    let text = tokio::time::timeout(Duration::from_secs(20), client.request_text(request))
        .await
        .map_err(|_| "GET /metrics: no answer within 20s".to_owned())?
        .map_err(|e| format!("GET /metrics: {e}"))?;
    let at = crate::sampler::now();
    parse(&text).map(|s| (at, s)).map_err(|e| format!("GET /metrics: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as kube-apiserver v1.35 writes them (labels sorted by name).
    const BEFORE: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 1234
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="GET",version="v1"} 2000
apiserver_request_total{code="409",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 6
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="PATCH",version="v1"} 1.5e+03
apiserver_request_total{code="0",component="apiserver",dry_run="",group="",resource="configmaps",scope="namespace",subresource="",verb="WATCH",version="v1"} 12
# HELP apiserver_request_duration_seconds [STABLE] Response latency distribution in seconds for each verb.
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="PATCH",version="v1",le="0.005"} 1400
apiserver_request_total_other{verb="PUT"} 99999
# HELP process_start_time_seconds [ALPHA] Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.75e+09
"#;

    #[test]
    fn sums_by_verb_over_every_other_label() {
        let s = parse(BEFORE).unwrap();
        let by_verb = s.by_verb();
        assert_eq!(by_verb["PUT"], 1240.0);
        assert_eq!(by_verb["GET"], 2000.0);
        assert_eq!(by_verb["PATCH"], 1500.0);
        assert_eq!(by_verb["WATCH"], 12.0);
        assert_eq!(by_verb.len(), 4, "the histogram and the look-alike name are not the counter");
        let leases = s.leases_by_verb();
        assert_eq!(leases, BTreeMap::from([("GET".into(), 2000.0), ("PUT".into(), 1240.0)]));
        assert_eq!(s.process_start, Some(1.75e9));
    }

    #[test]
    fn labels_in_any_order_escapes_timestamps_and_exponents() {
        let text = concat!(
            "apiserver_request_total{verb=\"LIST\",resource=\"leases\",code=\"200\"} 3 1712345678901\n",
            "apiserver_request_total{ code=\"500\" , verb=\"LIST\", resource=\"leases\", ",
            "subresource=\"a \\\"quoted\\\" \\\\ value}\\n\", } 2.5E1\n",
            "apiserver_request_total{resource=\"pods\",verb=\"LIST\"}\t1e0\n",
            "apiserver_request_total 7\n",
        );
        let s = parse(text).unwrap();
        assert_eq!(s.by_verb(), BTreeMap::from([("(none)".into(), 7.0), ("LIST".into(), 29.0)]));
        assert_eq!(s.leases_by_verb(), BTreeMap::from([("LIST".into(), 28.0)]));
        assert_eq!(s.process_start, None);
        // The escaped value was read whole: its series is distinct from the first.
        assert_eq!(s.series.len(), 4);
        let key = s.series.keys().find(|k| k.contains("quoted")).unwrap();
        assert!(key.contains(r#"subresource="a \"quoted\" \\ value}\n""#), "{key}");
    }

    #[test]
    fn the_same_series_keys_alike_whatever_its_label_order() {
        let a = parse("apiserver_request_total{verb=\"GET\",code=\"200\"} 1\n").unwrap();
        let b = parse("apiserver_request_total{code=\"200\",verb=\"GET\"} 5\n").unwrap();
        let r = rates(&a, &b, 2.0);
        assert_eq!(r.per_second_by_verb["GET"], 2.0);
        assert!(r.reset_verbs.is_empty());
    }

    #[test]
    fn malformed_counter_lines_fail_with_their_number() {
        let e = parse("# TYPE x counter\napiserver_request_total{verb=\"GET} 1\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse("apiserver_request_total{verb=\"GET\"} many\n").unwrap_err();
        assert!(e.contains("many"), "{e}");
        let e = parse("apiserver_request_total{verb=\"GET\"} NaN\n").unwrap_err();
        assert!(e.contains("not a count"), "{e}");
        assert!(
            parse("# only comments\nother_metric 1\n").unwrap_err().contains("no apiserver_request_total")
        );
        // Other metrics' oddities are not this parser's business.
        assert!(parse("weird{a=\"} 1\napiserver_request_total 1\n").is_ok());
    }

    #[test]
    fn rates_per_verb_and_for_leases() {
        let before = parse(BEFORE).unwrap();
        let after_text = BEFORE
            .replace("verb=\"PUT\",version=\"v1\"} 1234", "verb=\"PUT\",version=\"v1\"} 1434")
            .replace("} 1.5e+03", "} 1.6e+03")
            + "apiserver_request_total{code=\"201\",component=\"apiserver\",dry_run=\"\",group=\"\",resource=\"configmaps\",scope=\"resource\",subresource=\"\",verb=\"POST\",version=\"v1\"} 50\n";
        let after = parse(&after_text).unwrap();
        let r = rates(&before, &after, 10.0);
        assert_eq!(r.window_seconds, 10.0);
        assert_eq!(r.per_second_by_verb["PUT"], 20.0);
        assert_eq!(r.per_second_by_verb["PATCH"], 10.0);
        assert_eq!(r.per_second_by_verb["POST"], 5.0, "a new series started at 0 in the window");
        assert_eq!(r.per_second_by_verb["GET"], 0.0, "verbs without requests stay, at 0");
        assert_eq!(r.leases_per_second_by_verb, BTreeMap::from([("GET".into(), 0.0), ("PUT".into(), 20.0)]));
        assert_eq!(r.total_per_second, 35.0);
        assert!(r.reset_verbs.is_empty());
    }

    #[test]
    fn a_counter_that_went_down_counts_from_zero_and_is_named() {
        let before = parse(concat!(
            "apiserver_request_total{resource=\"leases\",verb=\"PUT\"} 1000\n",
            "apiserver_request_total{resource=\"pods\",verb=\"GET\"} 100\n",
            "apiserver_request_total{resource=\"pods\",verb=\"DELETE\"} 4\n",
        ))
        .unwrap();
        let after = parse(concat!(
            "apiserver_request_total{resource=\"leases\",verb=\"PUT\"} 30\n",
            "apiserver_request_total{resource=\"pods\",verb=\"GET\"} 120\n",
        ))
        .unwrap();
        let r = rates(&before, &after, 10.0);
        assert_eq!(r.per_second_by_verb["PUT"], 3.0, "not (30 - 1000) / 10");
        assert_eq!(r.leases_per_second_by_verb["PUT"], 3.0);
        assert_eq!(r.per_second_by_verb["GET"], 2.0);
        assert_eq!(r.reset_verbs, ["DELETE", "PUT"], "a vanished series is a reset too");
        assert!(r.per_second_by_verb.values().all(|v| *v >= 0.0));
    }

    #[test]
    fn a_new_start_time_resets_every_verb() {
        let before =
            parse("process_start_time_seconds 100\napiserver_request_total{verb=\"GET\"} 10\n").unwrap();
        // Restarted, and already past the old count: only the start time tells.
        let after =
            parse("process_start_time_seconds 200\napiserver_request_total{verb=\"GET\"} 40\n").unwrap();
        let r = rates(&before, &after, 10.0);
        assert_eq!(r.per_second_by_verb["GET"], 4.0);
        assert_eq!(r.reset_verbs, ["GET"]);
    }

    #[test]
    fn measured_reports_the_failing_snapshot() {
        let s = parse("apiserver_request_total{verb=\"GET\"} 10\n").unwrap();
        let ok: Timed = Ok((100.0, s.clone()));
        let later: Timed = Ok((104.0, Snapshot { series: s.series.clone(), process_start: None }));
        let m = measured(&ok, &later);
        assert_eq!((m.window_seconds, m.total_per_second, m.error), (Some(4.0), Some(0.0), None));
        let m = measured(&ok, &Err("GET /metrics: 403 Forbidden".into()));
        assert_eq!(m.error.as_deref(), Some("at the window's end: GET /metrics: 403 Forbidden"));
        assert_eq!((m.window_seconds, m.total_per_second), (None, None));
        let m = measured(&Err("refused".into()), &ok);
        assert_eq!(m.error.as_deref(), Some("at the window's start: refused"));
        let m = measured(&Err("refused".into()), &Err("timeout".into()));
        assert_eq!(m.error.as_deref(), Some("at the window's start: refused; at its end: timeout"));
    }
}
