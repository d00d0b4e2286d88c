//! The sidecar's `/stats` document: each edge's recent traffic, which `meshctl stat` and the
//! dashboard read from every sidecar and add up.

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency buckets, in milliseconds; a last bucket holds the rest. Fixed,
/// so the buckets of many sidecars add up before percentiles are taken.
pub const LATENCY_BOUNDS_MS: [f64; 20] = [
    1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0,
    1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];

/// The `/stats` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// The window asked for, in seconds.
    pub window_seconds: u64,
    /// The seconds of it the sidecar has been up for (less than the window just after start).
    pub covered_seconds: u64,
    /// The latency bucket bounds, in milliseconds.
    pub latency_bounds_ms: Vec<f64>,
    /// Every edge with traffic in the window.
    pub edges: Vec<EdgeStats>,
}

/// One edge's totals over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeStats {
    /// `outbound` (the sidecar's app called `destination`) or `inbound` (`source` called it).
    pub direction: String,
    /// The calling service.
    pub source: String,
    /// The called service.
    pub destination: String,
    /// Requests answered in the window.
    pub requests: u64,
    /// Of those, answered 5xx (by the app or the mesh).
    pub failures: u64,
    /// Retries made for them (outbound only).
    pub retries: u64,
    /// Counts per latency bucket, bounds as in `latency_bounds_ms` (the last is unbounded).
    pub latency_buckets: Vec<u64>,
}
