//! Prometheus metrics of the control plane, served as text on the admin port.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

/// Every metric, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open `Discovery.Watch` streams.
    pub watchers: Gauge,
    /// Snapshots written to watch streams.
    pub snapshots_pushed: Counter,
    /// Snapshots sidecars rejected.
    pub snapshots_rejected: Counter,
    /// Certificates issued by `Identity.Certify`.
    pub certificates_issued: Counter,
    /// Certify requests refused, by reason.
    pub certificates_refused: Family<Labels, Counter>,
    /// Configuration reloads, by result (`ok` or `failed`).
    pub config_reloads: Family<Labels, Counter>,
    /// Instances in the registry.
    pub registered_instances: Gauge,
    /// Instances removed because their lease expired.
    pub lease_expirations: Counter,
    /// The current snapshot version.
    pub snapshot_version: Gauge,
    /// Calls and connections refused for being over a limit, by limit.
    pub limited: Family<Labels, Counter>,
    /// Admission reviews the webhook answered, by outcome (one of [`WEBHOOK_OUTCOMES`]).
    pub webhook_requests: Family<Labels, Counter>,
}

/// The outcomes counted in `webhook_requests`: a pod patched, a pod let through unchanged
/// (already injected, opted out, not a pod creation), a pod refused (it cannot be injected),
/// and a request that was not a readable AdmissionReview.
pub const WEBHOOK_OUTCOMES: [&str; 4] = ["injected", "skipped", "refused", "bad_request"];

/// The limits counted in `limited`, each named after its configuration field.
pub const LIMITS: [&str; 9] = [
    "api.max_connections",
    "api.max_handshakes",
    "api.handshake_timeout",
    "api.idle_timeout",
    "api.rate_limits.certify_per_source_ip",
    "api.rate_limits.certify_per_service",
    "api.rate_limits.register_per_caller",
    "registration.max_instances_per_service",
    "admin.max_connections",
];

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mesh_control_plane");
        let watchers = Gauge::default();
        registry.register("watchers", "Open Discovery.Watch streams", watchers.clone());
        let snapshots_pushed = Counter::default();
        registry.register(
            "snapshots_pushed",
            "Snapshots sent to watching sidecars",
            snapshots_pushed.clone(),
        );
        let snapshots_rejected = Counter::default();
        registry.register(
            "snapshots_rejected",
            "Snapshots sidecars reported they could not apply",
            snapshots_rejected.clone(),
        );
        let certificates_issued = Counter::default();
        registry.register(
            "certificates_issued",
            "Workload certificates issued",
            certificates_issued.clone(),
        );
        let certificates_refused = Family::<Labels, Counter>::default();
        registry.register(
            "certificates_refused",
            "Certificate requests refused, by reason",
            certificates_refused.clone(),
        );
        let config_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration directory changes, by result",
            config_reloads.clone(),
        );
        let registered_instances = Gauge::default();
        registry.register(
            "registered_instances",
            "Instances in the registry",
            registered_instances.clone(),
        );
        let lease_expirations = Counter::default();
        registry.register(
            "lease_expirations",
            "Instances removed for missing heartbeats",
            lease_expirations.clone(),
        );
        let snapshot_version = Gauge::default();
        registry.register(
            "snapshot_version",
            "The latest snapshot version",
            snapshot_version.clone(),
        );
        let limited = Family::<Labels, Counter>::default();
        registry.register(
            "limited",
            "Calls and connections refused or closed by a limit, by the limit's field",
            limited.clone(),
        );
        let webhook_requests = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Admission reviews the injecting webhook answered, by outcome",
            webhook_requests.clone(),
        );
        for outcome in WEBHOOK_OUTCOMES {
            let _ = webhook_requests.get_or_create(&[("outcome", outcome)]);
        }
        for limit in LIMITS {
            let _ = limited.get_or_create(&[("limit", limit)]);
        }
        // Show both results from the start, so a dashboard can tell zero from missing.
        for result in ["ok", "failed"] {
            let _ = config_reloads.get_or_create(&[("result", result)]);
        }
        Self {
            registry,
            watchers,
            snapshots_pushed,
            snapshots_rejected,
            certificates_issued,
            certificates_refused,
            config_reloads,
            registered_instances,
            lease_expirations,
            snapshot_version,
            limited,
            webhook_requests,
        }
    }

    /// Counts an admission review by its outcome, one of [`WEBHOOK_OUTCOMES`].
    pub fn webhook_request(&self, outcome: &'static str) {
        self.webhook_requests
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// Counts a call or connection refused (or closed) by `limit`, one of [`LIMITS`].
    pub fn limited(&self, limit: &'static str) {
        self.limited.get_or_create(&[("limit", limit)]).inc();
    }

    /// Counts a refused certificate request.
    pub fn refused(&self, reason: &'static str) {
        self.certificates_refused
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts a configuration change.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.config_reloads
            .get_or_create(&[("result", result)])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
