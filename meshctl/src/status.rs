//! `meshctl status`: the control plane's `/status` document as a table.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Deserialize;

/// The parts of `/status` the table shows.
#[derive(Debug, Deserialize)]
pub struct Status {
    /// The latest snapshot version.
    pub version: u64,
    /// The signing root (absent when an intermediate signs).
    #[serde(default)]
    pub signer: Option<String>,
    /// The trusted roots.
    #[serde(default)]
    pub trust_bundle: Vec<Root>,
    /// Services by name.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// The replica that answered and the leader it sees (Kubernetes mode only).
    #[serde(default)]
    pub replicas: Option<Replicas>,
}

/// Which replica answered, and which leads.
#[derive(Debug, Deserialize)]
pub struct Replicas {
    /// The replica that answered.
    pub replica: String,
    /// Whether it leads.
    #[serde(default)]
    pub leading: bool,
    /// The Lease's holder as that replica last read it.
    #[serde(default)]
    pub leader: Option<String>,
}

/// One trusted root.
#[derive(Debug, Deserialize)]
pub struct Root {
    /// Its id.
    pub id: String,
}

/// One service.
#[derive(Debug, Deserialize)]
pub struct Service {
    /// Its current snapshot version.
    pub snapshot_version: u64,
    /// Its instances.
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// The address a redirected app dials for it, allocated by the control plane.
    #[serde(default)]
    pub virtual_address: Option<String>,
}

/// One instance.
#[derive(Debug, Deserialize)]
pub struct Instance {
    /// Chosen by the sidecar.
    pub instance_id: String,
    /// Inbound address; empty for a gateway.
    pub address: String,
    /// A gateway's listeners as bound, where outside clients reach it.
    #[serde(default)]
    pub gateway_listeners: Vec<GatewayListener>,
    /// App version.
    #[serde(default)]
    pub version: String,
    /// Reported snapshot version.
    #[serde(default)]
    pub applied_version: u64,
    /// Acknowledged snapshot version.
    #[serde(default)]
    pub acked_version: u64,
    /// Certificate expiry, Unix seconds (0: unknown).
    #[serde(default)]
    pub certificate_not_after_unix: i64,
    /// The issuing root's id, if a root of the bundle.
    #[serde(default)]
    pub issuer_id: Option<String>,
    /// Ejected endpoints.
    #[serde(default)]
    pub ejected_endpoints: Vec<String>,
    /// Why its sidecar finds the app down (the instance is then in no snapshot).
    #[serde(default)]
    pub app_down: Option<String>,
    /// Its sidecar's admin listener, where `stat` and `tap` read it.
    #[serde(default)]
    pub admin_address: Option<String>,
}

/// One listener of a gateway.
#[derive(Debug, Deserialize)]
pub struct GatewayListener {
    /// Its name in the gateway's configuration.
    pub name: String,
    /// Where it is bound.
    pub address: String,
}

// === impl Instance ===

impl Instance {
    /// Where it is reached: its inbound address, or a gateway's listeners (`web=ip:port,...`),
    /// or `-` when it reported neither.
    fn reached_at(&self) -> String {
        if !self.address.is_empty() {
            return self.address.clone();
        }
        if self.gateway_listeners.is_empty() {
            return "-".to_owned();
        }
        self.gateway_listeners
            .iter()
            .map(|l| format!("{}={}", l.name, l.address))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Renders the table; `now_unix` is the current time, for certificate expiry.
pub fn render(status: &Status, now_unix: i64) -> String {
    let roots: Vec<&str> = status.trust_bundle.iter().map(|r| r.id.as_str()).collect();
    let mut out = format!(
        "snapshot version {}  signer {}  trust bundle [{}]{}\n\n",
        status.version,
        status.signer.as_deref().unwrap_or("intermediate"),
        roots.join(", "),
        status.replicas.as_ref().map_or_else(String::new, leader)
    );
    let header = [
        "SERVICE",
        "INSTANCE",
        "ADDRESS",
        "VERSION",
        "SNAPSHOT",
        "CERT EXPIRES IN",
        "ISSUER",
        "EJECTED",
        "APP",
    ];
    let mut rows: Vec<[String; 9]> = vec![header.map(str::to_owned)];
    let names = instance_names(status);
    for (name, service) in &status.services {
        if service.instances.is_empty() {
            rows.push([
                name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                service.snapshot_version.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for i in &service.instances {
            let applied = i.applied_version.max(i.acked_version);
            let snapshot = if applied == service.snapshot_version {
                applied.to_string()
            } else if applied == 0 {
                format!("none (stale, current {})", service.snapshot_version)
            } else {
                format!("{applied} (stale, current {})", service.snapshot_version)
            };
            let expires = if i.certificate_not_after_unix == 0 {
                "-".to_owned()
            } else {
                human_secs(i.certificate_not_after_unix - now_unix)
            };
            rows.push([
                name.clone(),
                i.instance_id.clone(),
                i.reached_at(),
                if i.version.is_empty() {
                    "v1".into()
                } else {
                    i.version.clone()
                },
                snapshot,
                expires,
                i.issuer_id.clone().unwrap_or_else(|| "-".into()),
                if i.ejected_endpoints.is_empty() {
                    "-".into()
                } else {
                    i.ejected_endpoints
                        .iter()
                        .map(|e| ejected_name(e, &names))
                        .collect::<Vec<_>>()
                        .join(",")
                },
                match &i.app_down {
                    None => "up".into(),
                    Some(reason) => format!("down ({reason})"),
                },
            ]);
        }
    }
    write_rows(&mut out, &rows);
    // Where apps whose traffic is redirected reach each service (docs/transparent.md).
    let addressed: Vec<[String; 2]> = status
        .services
        .iter()
        .filter_map(|(name, s)| Some([name.clone(), s.virtual_address.clone()?]))
        .collect();
    if !addressed.is_empty() {
        out.push('\n');
        let mut rows = vec![["SERVICE".to_owned(), "VIRTUAL ADDRESS".to_owned()]];
        rows.extend(addressed);
        write_rows(&mut out, &rows);
    }
    out
}

/// `rows` as columns padded to their widest cell.
fn write_rows<const N: usize>(out: &mut String, rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// Each instance's name by its registered (inbound) address.
pub fn instance_names(status: &Status) -> BTreeMap<&str, &str> {
    status
        .services
        .values()
        .flat_map(|s| &s.instances)
        .map(|i| (i.address.as_str(), i.instance_id.as_str()))
        .collect()
}

/// An ejected endpoint (`destination/ip:port`) by the instance's name when the control plane
/// knows the address, so it reads as the rest of the table; the address otherwise.
pub fn ejected_name(endpoint: &str, names: &BTreeMap<&str, &str>) -> String {
    endpoint
        .split_once('/')
        .and_then(|(_, addr)| names.get(addr))
        .map_or_else(|| endpoint.to_owned(), |name| (*name).to_owned())
}

/// `  replica <name> (leader)`, or `  replica <name>, leader <name or none>`.
fn leader(replicas: &Replicas) -> String {
    if replicas.leading {
        return format!("  replica {} (leader)", replicas.replica);
    }
    format!(
        "  replica {}, leader {}",
        replicas.replica,
        replicas.leader.as_deref().unwrap_or("none")
    )
}

fn human_secs(secs: i64) -> String {
    if secs <= 0 {
        return "expired".into();
    }
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_stale_instances() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "version": 12,
            "signer": "abcd",
            "trust_bundle": [{"id": "abcd"}],
            "services": {
                "orders": {"snapshot_version": 12, "instances": [
                    {"instance_id": "o-1", "address": "127.0.0.1:1", "applied_version": 12,
                     "certificate_not_after_unix": 1000 + 3 * 3600, "issuer_id": "abcd"},
                    {"instance_id": "o-2", "address": "127.0.0.1:2", "applied_version": 11,
                     "ejected_endpoints": ["inventory/127.0.0.1:9", "payments/127.0.0.1:2"],
                     "app_down": "GET /healthz answered 503 Service Unavailable"}
                ]},
                "payments": {"snapshot_version": 10, "instances": [],
                             "virtual_address": "127.240.0.3"},
                "gateway": {"snapshot_version": 12, "instances": [
                    {"instance_id": "g-1", "address": "", "applied_version": 12,
                     "gateway_listeners": [{"name": "web", "address": "0.0.0.0:8080"},
                                           {"name": "websecure", "address": "0.0.0.0:8443"}]},
                    {"instance_id": "g-2", "address": "", "applied_version": 12}
                ]}
            }
        }))
        .unwrap();
        let table = render(&status, 1000);
        // A gateway has no inbound address: where its listeners are bound, or `-`.
        let gateway = |id: &str| {
            let line = table.lines().find(|l| l.contains(id)).unwrap();
            line.split_whitespace().nth(2).unwrap().to_owned()
        };
        assert_eq!(gateway("g-1"), "web=0.0.0.0:8080,websecure=0.0.0.0:8443");
        assert_eq!(gateway("g-2"), "-");
        assert!(table.contains("11 (stale, current 12)"), "{table}");
        assert!(table.contains("3h0m"), "{table}");
        // An address the control plane knows is shown by its instance's name.
        assert!(table.contains("inventory/127.0.0.1:9,o-2"), "{table}");
        assert!(
            table.contains("down (GET /healthz answered 503 Service Unavailable)"),
            "{table}"
        );
        assert!(table.lines().nth(3).unwrap().ends_with("  up"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("payments")), "{table}");
        // Virtual addresses, for the services that have one.
        let tail: Vec<&str> = table.lines().rev().take(2).collect();
        assert_eq!(tail, ["payments  127.240.0.3", "SERVICE   VIRTUAL ADDRESS"]);
        assert!(!table.contains("replica"), "{table}");
    }

    #[test]
    fn names_the_replica_and_the_leader() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "version": 3,
            "replicas": {"replica": "cp-b", "leading": false, "leader": "cp-a"}
        }))
        .unwrap();
        let first = render(&status, 0).lines().next().unwrap().to_owned();
        assert!(first.ends_with("  replica cp-b, leader cp-a"), "{first}");
        let status: Status = serde_json::from_value(serde_json::json!({
            "version": 3,
            "replicas": {"replica": "cp-a", "leading": true, "leader": "cp-a"}
        }))
        .unwrap();
        let first = render(&status, 0).lines().next().unwrap().to_owned();
        assert!(first.ends_with("  replica cp-a (leader)"), "{first}");
    }
}
