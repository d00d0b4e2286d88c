//! `meshctl stat`: each service's and each edge's recent traffic, from the sidecars.
//!
//! The control plane's `/status` names every instance and its sidecar's admin address; each
//! sidecar's `/stats?window=` holds its edges' counts and latency buckets for the last whole
//! seconds. A service's row sums the inbound side of its instances (what it answered); an
//! edge's row sums the outbound side of the caller's instances (what the caller saw, retries
//! included). Buckets share their bounds, so percentiles are taken after summing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use mesh_control_plane::admin_client;
use serde::Serialize;

use crate::status::{Status, ejected_name, instance_names};

/// Limit on one sidecar's answer: a slow one must not hold up the others' numbers.
const SIDECAR_TIMEOUT: Duration = Duration::from_secs(2);

/// Why `stat` (or `tap`) could not read the mesh.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The control plane did not answer.
    #[error(
        "cannot reach the control plane's admin endpoint at {addr} ({reason}): is the mesh running? \
         start it with `meshctl up`, or pass --admin"
    )]
    ControlPlaneDown {
        /// The address tried.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The control plane answered something unreadable.
    #[error("the control plane at {addr} answered {what}; is that address its admin endpoint?")]
    BadAnswer {
        /// The address.
        addr: SocketAddr,
        /// What came back.
        what: String,
    },
    /// The service is not in the mesh.
    #[error("no service {service:?} in the mesh (services: {known}); see `meshctl status`")]
    UnknownService {
        /// The name asked for.
        service: String,
        /// The services there are.
        known: String,
    },
    /// The service has no instance whose sidecar can be read.
    #[error(
        "service {service} has no running instance with a reachable sidecar; see `meshctl status`"
    )]
    NoInstances {
        /// The service.
        service: String,
    },
}

/// One sidecar's `/stats` document, and one edge in it.
pub use mesh_api::stats::{EdgeStats as SidecarEdge, StatsReport as SidecarStats};

/// An instance whose sidecar could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// Its name.
    pub instance: String,
    /// Why.
    pub reason: String,
}

/// One row: a service, or an edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The caller (edges only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The service, or the callee.
    pub destination: String,
    /// Requests per second over the window.
    pub rps: f64,
    /// Requests in the window.
    pub requests: u64,
    /// Share not answered 5xx, 0 to 1 (`None` without requests).
    pub success_rate: Option<f64>,
    /// Latency percentiles, ms.
    pub p50_ms: Option<f64>,
    /// 95th.
    pub p95_ms: Option<f64>,
    /// 99th.
    pub p99_ms: Option<f64>,
    /// Retries the callers made.
    pub retries: u64,
    /// Endpoints of the destination ejected by callers now, by instance name.
    pub ejected: Vec<String>,
}

/// The `stat` report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The window, seconds.
    pub window_seconds: u64,
    /// Per service (inbound at its instances).
    pub services: Vec<Row>,
    /// Per edge (outbound at the callers).
    pub edges: Vec<Row>,
    /// Instances whose sidecar did not answer; their traffic is missing from the rows.
    pub missing: Vec<Missing>,
}

/// Reads `/status` from the control plane.
pub async fn status(admin: SocketAddr) -> Result<Status, ViewError> {
    let (code, body) = admin_client::request(admin, Method::GET, "/status")
        .await
        .map_err(|e| ViewError::ControlPlaneDown {
            addr: admin,
            reason: short_reason(&e),
        })?;
    if !code.is_success() {
        return Err(ViewError::BadAnswer {
            addr: admin,
            what: code.to_string(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| ViewError::BadAnswer {
        addr: admin,
        what: format!("an unreadable /status ({e})"),
    })
}

/// The innermost cause of an admin client error, e.g. `Connection refused (os error 111)`.
pub fn short_reason(e: &admin_client::AdminClientError) -> String {
    match e {
        admin_client::AdminClientError::Connect { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// An instance of the mesh whose sidecar can be read: its service, name and admin address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its service.
    pub service: String,
    /// Its name.
    pub instance: String,
    /// Its sidecar's admin listener (`None`: it did not report one).
    pub admin: Option<SocketAddr>,
}

/// Every instance, or `service`'s only; an unknown service is an error naming those there are.
pub fn targets(status: &Status, service: Option<&str>) -> Result<Vec<Target>, ViewError> {
    if let Some(service) = service
        && !status.services.contains_key(service)
    {
        return Err(ViewError::UnknownService {
            service: service.to_owned(),
            known: status
                .services
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(status
        .services
        .iter()
        .filter(|(name, _)| service.is_none_or(|s| s == name.as_str()))
        .flat_map(|(name, s)| {
            s.instances.iter().map(move |i| Target {
                service: name.clone(),
                instance: i.instance_id.clone(),
                admin: i.admin_address.as_deref().and_then(|a| a.parse().ok()),
            })
        })
        .collect())
}

/// Reads every instance's `/stats` (all of them: an edge's caller may be any service) and sums
/// them into rows; `service` keeps only its own row and the edges to or from it.
pub async fn collect(
    admin: SocketAddr,
    service: Option<&str>,
    window: Duration,
) -> Result<Report, ViewError> {
    let status = status(admin).await?;
    // Checked first, so an unknown name is an error and not an empty table.
    targets(&status, service)?;
    let all = targets(&status, None)?;
    let window_seconds = window.as_secs().max(1);
    let path = format!("/stats?window={window_seconds}");
    let answers = futures_join(all.iter().map(|t| {
        let path = path.clone();
        let target = t.clone();
        async move {
            let Some(addr) = target.admin else {
                return (
                    target,
                    Err("its sidecar reported no admin address".to_owned()),
                );
            };
            let answer = tokio::time::timeout(
                SIDECAR_TIMEOUT,
                admin_client::request(addr, Method::GET, &path),
            )
            .await;
            let result = match answer {
                Err(_) => Err(format!(
                    "its sidecar at {addr} did not answer within {}s",
                    SIDECAR_TIMEOUT.as_secs()
                )),
                Ok(Err(e)) => Err(format!("its sidecar at {addr}: {}", short_reason(&e))),
                Ok(Ok((code, _))) if !code.is_success() => {
                    Err(format!("its sidecar at {addr} answered {code}"))
                }
                Ok(Ok((_, body))) => serde_json::from_slice::<SidecarStats>(&body)
                    .map_err(|e| format!("its sidecar at {addr} sent unreadable stats: {e}")),
            };
            (target, result)
        }
    }))
    .await;
    let mut read = Vec::new();
    let mut missing = Vec::new();
    for (target, result) in answers {
        match result {
            Ok(stats) => read.push(stats),
            Err(reason) => missing.push(Missing {
                instance: target.instance,
                reason,
            }),
        }
    }
    if let Some(service) = service
        && read.is_empty()
        && all.iter().all(|t| t.service == service)
    {
        return Err(ViewError::NoInstances {
            service: service.to_owned(),
        });
    }
    let mut report = summarize(&status, &read, window_seconds, service);
    report.missing = missing;
    Ok(report)
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        if let Ok(value) = handle.await {
            out.push(value);
        }
    }
    out
}

/// Sums sidecars' stats into service and edge rows.
pub fn summarize(
    status: &Status,
    stats: &[SidecarStats],
    window_seconds: u64,
    service: Option<&str>,
) -> Report {
    #[derive(Default)]
    struct Sum {
        requests: u64,
        failures: u64,
        retries: u64,
        buckets: Vec<u64>,
        seconds: u64,
    }
    let bounds = stats
        .iter()
        .map(|s| s.latency_bounds_ms.clone())
        .next()
        .unwrap_or_default();
    let mut services: BTreeMap<String, Sum> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String), Sum> = BTreeMap::new();
    for sidecar in stats {
        for edge in &sidecar.edges {
            let sum = if edge.direction == "inbound" {
                services.entry(edge.destination.clone()).or_default()
            } else {
                edges
                    .entry((edge.source.clone(), edge.destination.clone()))
                    .or_default()
            };
            sum.requests += edge.requests;
            sum.failures += edge.failures;
            sum.retries += edge.retries;
            sum.seconds = sum.seconds.max(sidecar.covered_seconds);
            if sum.buckets.len() < edge.latency_buckets.len() {
                sum.buckets.resize(edge.latency_buckets.len(), 0);
            }
            for (total, n) in sum.buckets.iter_mut().zip(&edge.latency_buckets) {
                *total += n;
            }
        }
    }
    // Every declared service has a row, traffic or not.
    for name in status.services.keys() {
        services.entry(name.clone()).or_default();
    }
    let names = instance_names(status);
    let ejected_by = |source: Option<&str>, destination: &str| -> Vec<String> {
        let mut out = BTreeSet::new();
        for (caller, s) in &status.services {
            if source.is_some_and(|src| src != caller) {
                continue;
            }
            for i in &s.instances {
                for e in &i.ejected_endpoints {
                    if e.split_once('/').is_some_and(|(d, _)| d == destination) {
                        out.insert(ejected_name(e, &names));
                    }
                }
            }
        }
        out.into_iter().collect()
    };
    let row = |source: Option<String>, destination: String, sum: &Sum| {
        let seconds = if sum.seconds == 0 {
            window_seconds
        } else {
            sum.seconds
        };
        Row {
            ejected: ejected_by(source.as_deref(), &destination),
            source,
            destination,
            rps: sum.requests as f64 / seconds as f64,
            requests: sum.requests,
            success_rate: (sum.requests > 0).then(|| {
                (sum.requests - sum.failures.min(sum.requests)) as f64 / sum.requests as f64
            }),
            p50_ms: quantile(&bounds, &sum.buckets, 0.50),
            p95_ms: quantile(&bounds, &sum.buckets, 0.95),
            p99_ms: quantile(&bounds, &sum.buckets, 0.99),
            retries: sum.retries,
        }
    };
    Report {
        window_seconds,
        services: services
            .iter()
            .filter(|(name, _)| service.is_none_or(|s| s == name.as_str()))
            .map(|(name, sum)| row(None, name.clone(), sum))
            .collect(),
        edges: edges
            .iter()
            .filter(|((src, dst), _)| service.is_none_or(|s| s == src || s == dst))
            .map(|((src, dst), sum)| row(Some(src.clone()), dst.clone(), sum))
            .collect(),
        missing: Vec::new(),
    }
}

/// The `q` quantile of bucketed latencies, interpolated linearly inside its bucket (as
/// Prometheus's `histogram_quantile` does); in the last, unbounded bucket, its lower bound.
pub fn quantile(bounds: &[f64], buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        if n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let lower = if i == 0 {
                0.0
            } else {
                bounds.get(i - 1).copied()?
            };
            let Some(&upper) = bounds.get(i) else {
                return Some(lower);
            };
            let into = (rank - seen as f64) / n as f64;
            return Some(lower + (upper - lower) * into.clamp(0.0, 1.0));
        }
        seen += n;
    }
    bounds.last().copied()
}

/// The report as two tables, then one line per instance whose numbers are missing.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let pct = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0));
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}ms"));
    let ejected = |e: &[String]| {
        if e.is_empty() {
            "-".to_owned()
        } else {
            e.join(",")
        }
    };
    let cells = |r: &Row| {
        vec![
            format!("{:.1}", r.rps),
            pct(r.success_rate),
            ms(r.p50_ms),
            ms(r.p95_ms),
            ms(r.p99_ms),
            r.retries.to_string(),
            ejected(&r.ejected),
        ]
    };
    let header = ["RPS", "SUCCESS", "P50", "P95", "P99", "RETRIES", "EJECTED"];
    let mut rows = vec![
        std::iter::once("SERVICE".to_owned())
            .chain(header.iter().map(|h| (*h).to_owned()))
            .collect::<Vec<_>>(),
    ];
    for r in &report.services {
        rows.push(
            std::iter::once(r.destination.clone())
                .chain(cells(r))
                .collect(),
        );
    }
    crate::table::write(&mut out, &rows);
    out.push('\n');
    let mut rows = vec![
        std::iter::once("EDGE".to_owned())
            .chain(header.iter().map(|h| (*h).to_owned()))
            .collect::<Vec<_>>(),
    ];
    for r in &report.edges {
        let name = format!(
            "{} -> {}",
            r.source.as_deref().unwrap_or("?"),
            r.destination
        );
        rows.push(std::iter::once(name).chain(cells(r)).collect());
    }
    if report.edges.is_empty() {
        rows.push(vec![format!(
            "(no calls in the last {}s)",
            report.window_seconds
        )]);
    }
    crate::table::write(&mut out, &rows);
    let _ = writeln!(
        out,
        "\nover the last {}s; SUCCESS: not answered 5xx; EDGE rows as the caller saw them, retries included",
        report.window_seconds
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [10.0, 20.0, 50.0];

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        assert_eq!(quantile(&BOUNDS, &[0, 0, 0, 0], 0.5), None);
        // 10 in (10, 20]: the median is halfway.
        assert_eq!(quantile(&BOUNDS, &[0, 10, 0, 0], 0.5), Some(15.0));
        assert_eq!(quantile(&BOUNDS, &[10, 0, 0, 0], 1.0), Some(10.0));
        // The slow tail lands in the unbounded bucket: its lower bound.
        assert_eq!(quantile(&BOUNDS, &[98, 0, 0, 2], 0.99), Some(50.0));
    }

    #[test]
    fn services_sum_inbound_and_edges_sum_outbound() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "version": 1,
            "services": {
                "orders": {"snapshot_version": 1, "instances": [
                    {"instance_id": "orders-1", "address": "127.0.0.1:1",
                     "ejected_endpoints": ["payments/127.0.0.1:3"]},
                    {"instance_id": "orders-2", "address": "127.0.0.1:2"}]},
                "payments": {"snapshot_version": 1, "instances": [
                    {"instance_id": "payments-1", "address": "127.0.0.1:3"}]},
                "notifications": {"snapshot_version": 1, "instances": []}
            }
        }))
        .unwrap();
        let edge = |direction: &str, requests, failures, retries, buckets: [u64; 4]| SidecarEdge {
            direction: direction.into(),
            source: "orders".into(),
            destination: "payments".into(),
            requests,
            failures,
            retries,
            latency_buckets: buckets.to_vec(),
        };
        let sidecar = |edges| SidecarStats {
            window_seconds: 10,
            covered_seconds: 10,
            latency_bounds_ms: BOUNDS.to_vec(),
            edges,
        };
        let stats = [
            sidecar(vec![edge("outbound", 60, 0, 3, [60, 0, 0, 0])]),
            sidecar(vec![edge("outbound", 40, 2, 1, [0, 40, 0, 0])]),
            sidecar(vec![edge("inbound", 104, 6, 0, [64, 40, 0, 0])]),
        ];
        let report = summarize(&status, &stats, 10, None);
        let names: Vec<&str> = report
            .services
            .iter()
            .map(|r| r.destination.as_str())
            .collect();
        assert_eq!(names, ["notifications", "orders", "payments"]);
        let payments = &report.services[2];
        assert_eq!(payments.requests, 104);
        assert!((payments.rps - 10.4).abs() < 1e-9);
        let [edge] = report.edges.as_slice() else {
            panic!("{report:?}")
        };
        assert_eq!(edge.source.as_deref(), Some("orders"));
        assert_eq!((edge.requests, edge.retries), (100, 4));
        assert_eq!(edge.success_rate, Some(0.98));
        assert_eq!(edge.ejected, ["payments-1"]);
        let text = render(&report);
        assert!(text.contains("orders -> payments  10.0  98.00%"), "{text}");
        // Only payments: its row, and the edge into it.
        let only = summarize(&status, &stats, 10, Some("notifications"));
        assert_eq!(only.services.len(), 1);
        assert!(only.edges.is_empty());
        assert!(render(&only).contains("(no calls in the last 10s)"));
    }

    #[test]
    fn an_unknown_service_names_the_ones_there_are() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "version": 1,
            "services": {"orders": {"snapshot_version": 1}, "payments": {"snapshot_version": 1}}
        }))
        .unwrap();
        let err = targets(&status, Some("billing")).unwrap_err().to_string();
        assert_eq!(
            err,
            "no service \"billing\" in the mesh (services: orders, payments); see `meshctl status`"
        );
    }
}
