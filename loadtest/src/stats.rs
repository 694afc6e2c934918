//! Percentiles of a sample.

use serde_json::{Value, json};

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn summary(values: &[f64]) -> Value {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    json!({
        "p50": percentile(&sorted, 50.0),
        "p90": percentile(&sorted, 90.0),
        "p99": percentile(&sorted, 99.0),
        "max": sorted.last().copied().unwrap_or(f64::NAN),
        "count": sorted.len(),
    })
}
