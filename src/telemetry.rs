//! The measuring primitives every layer records into: latency histograms with one set of
//! buckets, so that each family on `/metrics` reads on one scale.
//!
//! The domain services own their counters (the MCP hub's statistics, the backend registry's
//! per-call counters) and register them into the HTTP layer's registry when asked; they import
//! this module, never the HTTP layer.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Latency buckets in seconds: 0.5 ms doubling to about 33 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// A histogram family whose histograms use [`latency_histogram`].
pub type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub fn latency_family<L>() -> LatencyFamily<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}
