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

/// Median of a sample (None when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (!sorted.is_empty()).then(|| percentile(&sorted, 50.0))
}

/// Groups (x, y) points into bins of `width` on x; per bin its start and
/// sorted y values.
pub fn bins(points: &[(f64, f64)], width: f64) -> Vec<(f64, Vec<f64>)> {
    let mut map: std::collections::BTreeMap<i64, Vec<f64>> = std::collections::BTreeMap::new();
    for (x, y) in points {
        map.entry((x / width).floor() as i64).or_default().push(*y);
    }
    map.into_iter()
        .map(|(k, mut ys)| {
            ys.sort_by(f64::total_cmp);
            (k as f64 * width, ys)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_sample() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summary(&values);
        assert_eq!(s["p50"], 51.0);
        assert_eq!(s["p99"], 99.0);
        assert_eq!(s["max"], 100.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(bins(&[(0.1, 1.0), (0.9, 2.0), (1.5, 3.0)], 1.0).len(), 2);
    }
}
