//! Reading what a sidecar's or the control plane's `/metrics` says.

/// The value of `series` in Prometheus text: a metric name with its labels exactly as the
/// exporter writes them, e.g. `mesh_ejected_endpoints{destination="inventory"}`. `None` when
/// the series is absent.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
