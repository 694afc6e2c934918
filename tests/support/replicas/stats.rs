//! Small figures for the HA tests' reports.

use std::time::Duration;

/// (median, worst) of `samples`; zeros when empty.
pub fn median_worst(samples: &[Duration]) -> (Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => (Duration::ZERO, Duration::ZERO),
        n if n % 2 == 1 => (sorted[n / 2], sorted[n - 1]),
        n => ((sorted[n / 2 - 1] + sorted[n / 2]) / 2, sorted[n - 1]),
    }
}

/// A duration between two unix-ns instants (zero if negative).
pub fn between(from_ns: i128, to_ns: i128) -> Duration {
    Duration::from_nanos((to_ns - from_ns).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = |v: &[u64]| v.iter().map(|&ms| Duration::from_millis(ms)).collect::<Vec<_>>();
        assert_eq!(median_worst(&s(&[3, 1, 2])), (Duration::from_millis(2), Duration::from_millis(3)));
        assert_eq!(median_worst(&s(&[4, 1, 2, 3])), (Duration::from_micros(2500), Duration::from_millis(4)));
    }
}
