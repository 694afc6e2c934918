//! A Prometheus histogram read from an exposition, summed over its label
//! sets and over replicas, and its quantiles (pure). Used for the operator's
//! event → commit lag, which git cannot time: commit dates have whole seconds.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::exposition::sample;

/// The operator's histogram of watch event → local commit.
pub const COMMIT_LAG: &str = "gitops_reverser_event_to_commit_lag_seconds";
/// The operator's histogram of one push attempt: writing the pack, waiting
/// for the repository's push in flight, and the push.
pub const PUSH_DURATION: &str = "gitops_reverser_push_duration_seconds";

/// Cumulative counts by upper bound (`le`), plus `+Inf` as the count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Upper bound → cumulative count; bounds compared by their bits (all finite, positive).
    buckets: BTreeMap<u64, f64>,
    pub count: f64,
    pub sum: f64,
}

impl Histogram {
    /// The histogram `name` (without `_bucket`/`_count`/`_sum`) in `text`,
    /// summed over every label set.
    pub fn read(text: &str, name: &str) -> Self {
        let mut h = Self::default();
        for (metric, labels, value) in text.lines().filter_map(|l| sample(l).ok().flatten()) {
            let Some(suffix) = metric.strip_prefix(name) else { continue };
            match suffix {
                "_count" => h.count += value,
                "_sum" => h.sum += value,
                "_bucket" => {
                    let le = labels.iter().find(|(k, _)| *k == "le").and_then(|(_, v)| v.parse::<f64>().ok());
                    if let Some(le) = le.filter(|le| le.is_finite()) {
                        *h.buckets.entry(le.to_bits()).or_default() += value;
                    }
                }
                _ => {}
            }
        }
        h
    }

    pub fn add(&mut self, other: &Self) {
        self.count += other.count;
        self.sum += other.sum;
        for (le, n) in &other.buckets {
            *self.buckets.entry(*le).or_default() += n;
        }
    }

    /// What was observed after `earlier` (a previous read of the same process).
    pub fn since(&self, earlier: &Self) -> Self {
        let mut h = self.clone();
        h.count -= earlier.count;
        h.sum -= earlier.sum;
        for (le, n) in &earlier.buckets {
            *h.buckets.entry(*le).or_default() -= n;
        }
        h
    }

    fn bounds(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.buckets.iter().map(|(le, n)| (f64::from_bits(*le), *n))
    }

    /// The q-quantile, linearly interpolated inside its bucket (as
    /// Prometheus' `histogram_quantile` does); None when empty or when it
    /// falls above the largest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, cumulative) in self.bounds() {
            if cumulative >= rank {
                let inside = cumulative - below;
                let fraction = if inside > 0.0 { (rank - below) / inside } else { 1.0 };
                return Some(lower + (le - lower) * fraction);
            }
            (lower, below) = (le, cumulative);
        }
        None
    }

    /// The upper bound of the highest non-empty bucket: the maximum is at
    /// most this. None when empty or when some value exceeded every bound.
    pub fn max_bound(&self) -> Option<f64> {
        let mut below = 0.0;
        let mut highest = None;
        for (le, cumulative) in self.bounds() {
            if cumulative > below {
                highest = Some(le);
            }
            below = cumulative;
        }
        (self.count > 0.0 && below >= self.count).then_some(highest).flatten()
    }

    pub fn summary(&self) -> Value {
        json!({
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
            "max_at_most": self.max_bound(),
            "mean": (self.count > 0.0).then(|| self.sum / self.count),
            "count": self.count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE x_lag_seconds histogram
x_lag_seconds_bucket{branch=\"a\",le=\"0.1\"} 1
x_lag_seconds_bucket{branch=\"a\",le=\"0.2\"} 3 # {trace_id=\"abc\"} 0.15 1700000000.0
x_lag_seconds_bucket{branch=\"a\",le=\"0.4\"} 4
x_lag_seconds_bucket{branch=\"a\",le=\"+Inf\"} 4
x_lag_seconds_count{branch=\"a\"} 4
x_lag_seconds_sum{branch=\"a\"} 0.6
x_lag_seconds_bucket{branch=\"b\",le=\"0.1\"} 0
x_lag_seconds_bucket{branch=\"b\",le=\"0.2\"} 0
x_lag_seconds_bucket{branch=\"b\",le=\"0.4\"} 4
x_lag_seconds_bucket{branch=\"b\",le=\"+Inf\"} 4
x_lag_seconds_count{branch=\"b\"} 4
x_lag_seconds_sum{branch=\"b\"} 1.2
x_other_seconds_count 7
";

    #[test]
    fn sums_label_sets_and_interpolates_inside_the_bucket() {
        let h = Histogram::read(TEXT, "x_lag_seconds");
        assert_eq!(h.count, 8.0);
        assert!((h.sum - 1.8).abs() < 1e-9);
        // Cumulative 1, 3, 8 at 0.1, 0.2, 0.4: the median (rank 4) is 1/5 into (0.2, 0.4].
        assert!((h.quantile(0.5).unwrap() - 0.24).abs() < 1e-9);
        // Rank 0.8 lies in the first bucket, interpolated from 0.
        assert!((h.quantile(0.1).unwrap() - 0.08).abs() < 1e-9);
        assert_eq!(h.max_bound(), Some(0.4));
    }

    #[test]
    fn merging_replicas_adds_counts() {
        let mut h = Histogram::read(TEXT, "x_lag_seconds");
        h.add(&Histogram::read(TEXT, "x_lag_seconds"));
        assert_eq!(h.count, 16.0);
        assert!((h.quantile(0.5).unwrap() - 0.24).abs() < 1e-9);
    }

    #[test]
    fn a_later_read_minus_an_earlier_one_is_what_happened_between() {
        let earlier = Histogram::read(TEXT, "x_lag_seconds");
        let mut later = earlier.clone();
        let two_fast = "x_lag_seconds_bucket{le=\"0.1\"} 2\nx_lag_seconds_bucket{le=\"0.2\"} 2\n\
                        x_lag_seconds_bucket{le=\"0.4\"} 2\nx_lag_seconds_count 2\nx_lag_seconds_sum 0.1\n";
        later.add(&Histogram::read(two_fast, "x_lag_seconds"));
        let between = later.since(&earlier);
        assert_eq!(between.count, 2.0);
        assert!((between.quantile(0.5).unwrap() - 0.05).abs() < 1e-9);
        assert_eq!(between.max_bound(), Some(0.1));
    }

    #[test]
    fn values_above_every_bound_have_no_quantile_there() {
        let text = "y_bucket{le=\"1\"} 1\ny_bucket{le=\"+Inf\"} 2\ny_count 2\ny_sum 10\n";
        let h = Histogram::read(text, "y");
        assert_eq!(h.quantile(0.5), Some(1.0));
        assert_eq!(h.quantile(0.99), None);
        assert_eq!(h.max_bound(), None);
        assert_eq!(Histogram::default().summary()["p50"], Value::Null);
    }
}
