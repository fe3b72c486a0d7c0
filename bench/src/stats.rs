//! Latency samples and their percentiles.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Percentiles of a set of samples, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl Latency {
    /// The percentiles of `samples` (sorted here); all zero when empty.
    pub fn of(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |p: f64| {
            let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_nanos() as f64 / 1000.0
        };
        Latency { p50_us: at(0.50), p99_us: at(0.99), p999_us: at(0.999), max_us: at(1.0) }
    }
}

/// The median of some numbers (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let mut s: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let l = Latency::of(&mut s);
        assert_eq!((l.p50_us, l.p99_us, l.p999_us, l.max_us), (500.0, 990.0, 999.0, 1000.0));
        assert_eq!(Latency::of(&mut []), Latency::default());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
