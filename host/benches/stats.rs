//! Percentiles over per-operation latencies (shared by the benchmarks).

use std::time::Duration;

/// Sorted latencies in nanoseconds.
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn new(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    pub fn percentile_ns(&self, p: f64) -> u64 {
        if self.0.is_empty() {
            return 0;
        }
        let idx = ((self.0.len() - 1) as f64 * p / 100.0).round() as usize;
        self.0[idx]
    }

    pub fn p50_us(&self) -> f64 {
        self.percentile_ns(50.0) as f64 / 1000.0
    }

    pub fn p99_us(&self) -> f64 {
        self.percentile_ns(99.0) as f64 / 1000.0
    }
}

pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
