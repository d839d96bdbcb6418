//! Helpers shared by the benchmarks.

use std::time::Duration;

/// The `p`-th percentile of sorted latencies.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}
