//! The registry: instances by service with their leases and what their heartbeats report, and
//! the acknowledgements their watch streams send.
//!
//! It holds records only; `Mesh` decides when a change needs new snapshots.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mesh_api::proto::v1;
use tokio::time::Instant;

use crate::config::RegistrationSettings;

/// Instances are keyed by service, then instance id, so one service can never replace
/// another's instance.
pub(super) type InstanceKey = (String, String);

/// One registered instance.
#[derive(Debug, Clone)]
pub(super) struct InstanceRecord {
    /// Where callers reach it; none for an instance that is no destination (a gateway): it is
    /// tracked for its lease and status, and left out of every snapshot's endpoints.
    pub(super) address: Option<SocketAddr>,
    pub(super) version: String,
    pub(super) last_seen: Instant,
    pub(super) applied_version: u64,
    pub(super) certificate_not_after_unix: i64,
    pub(super) issuer_sha256: String,
    pub(super) ejected: Vec<String>,
    /// Why its sidecar finds the app down; empty while it is up (or not probed).
    pub(super) app_down: String,
    /// Its sidecar's admin listener, as it reported it (may be empty).
    pub(super) admin_address: String,
    /// A gateway's listeners (name, bound address), as its last heartbeat reported them.
    pub(super) gateway_listeners: Vec<(String, SocketAddr)>,
}

/// Most gateway listeners a heartbeat's report is kept for (a gateway has at most 16).
const MAX_GATEWAY_LISTENERS: usize = 16;

/// What an instance's watch streams reported.
#[derive(Debug, Default, Clone)]
pub(super) struct WatchAck {
    pub(super) streams: usize,
    pub(super) acked_version: u64,
    pub(super) rejected: Option<(u64, String)>,
}

/// Why a registry call was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryError {
    /// The instance names another service than the caller's certificate.
    #[error("the certificate is for service {caller}, but the instance is for service {claimed}")]
    WrongService {
        /// From the certificate.
        caller: String,
        /// From the request.
        claimed: String,
    },
    /// The service is not declared in the configuration.
    #[error("service {0:?} is not declared in the configuration")]
    Undeclared(String),
    /// A field is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The instance's address is neither the connection's source nor in an allowed range.
    #[error(
        "address {address} is not where this connection comes from ({from}): an instance \
         registers its own address, unless registration.allowed_addresses holds it"
    )]
    NotSourceAddress {
        /// The address in the request.
        address: SocketAddr,
        /// The connection's source address.
        from: String,
    },
    /// The service has as many instances as it may.
    #[error(
        "service {service} has {max} instances registered, registration.max_instances_per_service; \
         deregister one or raise the limit"
    )]
    TooManyInstances {
        /// The service.
        service: String,
        /// The limit.
        max: usize,
    },
}

/// What a heartbeat changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Beat {
    /// No such instance: it must register again.
    Unknown,
    /// Lease renewed; nothing snapshots depend on changed.
    Renewed,
    /// Lease renewed, and the app went down or came back up.
    AppChanged,
}

/// Instances and acknowledgements.
#[derive(Debug, Default)]
pub(super) struct Registry {
    instances: BTreeMap<InstanceKey, InstanceRecord>,
    /// Acknowledgements from watch streams, kept apart so they count before Register too.
    acks: HashMap<InstanceKey, WatchAck>,
}

/// Checks an instance sent by `caller` and returns its address; none when it sent none.
pub(super) fn check(
    caller: &str,
    instance: &v1::Instance,
) -> Result<Option<SocketAddr>, RegistryError> {
    if instance.service != caller {
        return Err(RegistryError::WrongService {
            caller: caller.to_owned(),
            claimed: instance.service.clone(),
        });
    }
    if instance.instance_id.is_empty() || instance.instance_id.len() > 256 {
        return Err(RegistryError::Invalid(
            "instance_id must be 1 to 256 characters".into(),
        ));
    }
    if !instance.version.is_empty() && mesh_api::spiffe::check_label(&instance.version).is_err() {
        return Err(RegistryError::Invalid(format!(
            "version {:?} is not a DNS label",
            instance.version
        )));
    }
    if instance.address.is_empty() {
        return Ok(None);
    }
    let address: SocketAddr = instance.address.parse().map_err(|_| {
        RegistryError::Invalid(format!("address {:?} is not an ip:port", instance.address))
    })?;
    // Taken as sent otherwise: callers dial it, so it only has to be dialable.
    if address.ip().is_unspecified() || address.port() == 0 {
        return Err(RegistryError::Invalid(format!(
            "address {address} cannot be dialled: register the address where peers reach this \
             instance (the sidecar's listen.advertise)"
        )));
    }
    Ok(Some(address))
}

/// Checks that an instance registers from its own address, or an address in the allowed
/// ranges. An IPv4-mapped IPv6 address counts as its IPv4 address. An instance without an
/// address sends no caller anywhere, so there is nothing to check.
pub(super) fn check_source(
    address: Option<SocketAddr>,
    source: Option<IpAddr>,
    settings: &RegistrationSettings,
) -> Result<(), RegistryError> {
    let Some(address) = address else {
        return Ok(());
    };
    let ip = address.ip().to_canonical();
    if source.map(|s| s.to_canonical()) == Some(ip) || settings.allows(ip) {
        return Ok(());
    }
    Err(RegistryError::NotSourceAddress {
        address,
        from: source.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
    })
}

// === impl Registry ===

impl Registry {
    /// How many instances are registered.
    pub(super) fn len(&self) -> usize {
        self.instances.len()
    }

    /// Every instance, by service then id.
    pub(super) fn instances(&self) -> impl Iterator<Item = (&InstanceKey, &InstanceRecord)> {
        self.instances.iter()
    }

    /// The instances of `service`, by id.
    pub(super) fn instances_of<'a>(
        &'a self,
        service: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a InstanceRecord)> {
        self.instances
            .range((service.to_owned(), String::new())..)
            .take_while(move |((s, _), _)| s == service)
            .map(|((_, id), record)| (id, record))
    }

    /// Instances whose lease has not expired at `now`.
    pub(super) fn live(
        &self,
        lease: Duration,
        now: Instant,
    ) -> impl Iterator<Item = (&InstanceKey, &InstanceRecord)> {
        self.instances
            .iter()
            .filter(move |(_, r)| now.duration_since(r.last_seen) < lease)
    }

    /// What the watch streams of an instance reported.
    pub(super) fn ack_of(&self, key: &InstanceKey) -> Option<&WatchAck> {
        self.acks.get(key)
    }

    /// A copy of the instances, for building snapshots away from the lock over this registry.
    pub(super) fn for_snapshots(&self) -> Self {
        Self {
            instances: self.instances.clone(),
            acks: HashMap::new(),
        }
    }

    /// Adds or replaces an instance checked by [`check`], keeping what its heartbeats reported
    /// so far; a new instance only while its service has fewer than `max`.
    pub(super) fn register(
        &mut self,
        service: &str,
        instance: &v1::Instance,
        address: Option<SocketAddr>,
        now: Instant,
        max: usize,
    ) -> Result<(), RegistryError> {
        let key = (service.to_owned(), instance.instance_id.clone());
        let previous = self.instances.get(&key);
        if previous.is_none()
            && self
                .instances_of(service)
                .nth(max.saturating_sub(1))
                .is_some()
        {
            return Err(RegistryError::TooManyInstances {
                service: service.to_owned(),
                max,
            });
        }
        let record = InstanceRecord {
            address,
            version: instance.version.clone(),
            last_seen: now,
            applied_version: previous.map_or(0, |p| p.applied_version),
            certificate_not_after_unix: previous.map_or(0, |p| p.certificate_not_after_unix),
            issuer_sha256: previous
                .map(|p| p.issuer_sha256.clone())
                .unwrap_or_default(),
            ejected: previous.map(|p| p.ejected.clone()).unwrap_or_default(),
            app_down: instance.app_down.clone(),
            admin_address: instance.admin_address.clone(),
            gateway_listeners: previous
                .map(|p| p.gateway_listeners.clone())
                .unwrap_or_default(),
        };
        self.instances.insert(key, record);
        Ok(())
    }

    /// Renews an instance's lease and records what it reports.
    pub(super) fn heartbeat(
        &mut self,
        service: &str,
        beat: &v1::HeartbeatRequest,
        now: Instant,
    ) -> Beat {
        let key = (service.to_owned(), beat.instance_id.clone());
        let Some(record) = self.instances.get_mut(&key) else {
            return Beat::Unknown;
        };
        record.last_seen = now;
        record.applied_version = beat.applied_version;
        record.certificate_not_after_unix = beat.certificate_not_after_unix;
        record.issuer_sha256 = beat.certificate_issuer_sha256.clone();
        record.ejected = beat.ejected_endpoints.clone();
        // Status only, never an endpoint: entries that are no label and address are dropped.
        record.gateway_listeners = beat
            .gateway_listeners
            .iter()
            .take(MAX_GATEWAY_LISTENERS)
            .filter(|l| mesh_api::spiffe::check_label(&l.name).is_ok())
            .filter_map(|l| Some((l.name.clone(), l.address.parse().ok()?)))
            .collect();
        if record.app_down == beat.app_down {
            return Beat::Renewed;
        }
        if beat.app_down.is_empty() {
            tracing::info!(%service, instance = %beat.instance_id, "app up again: back in snapshots");
        } else {
            tracing::info!(%service, instance = %beat.instance_id, reason = %beat.app_down, "app down: out of snapshots");
        }
        record.app_down = beat.app_down.clone();
        Beat::AppChanged
    }

    /// Removes one instance; `None` when it was not registered.
    pub(super) fn deregister(
        &mut self,
        service: &str,
        instance_id: &str,
    ) -> Option<InstanceRecord> {
        self.instances
            .remove(&(service.to_owned(), instance_id.to_owned()))
    }

    /// Removes instances whose lease expired at `now`; returns how many.
    pub(super) fn expire(&mut self, lease: Duration, now: Instant) -> usize {
        let before = self.instances.len();
        self.instances.retain(|(service, id), record| {
            let live = now.duration_since(record.last_seen) < lease;
            if !live {
                tracing::info!(%service, instance = %id, address = ?record.address, "lease expired");
            }
            live
        });
        before - self.instances.len()
    }

    /// Notes a watch stream opening (`true`) or closing for an instance.
    pub(super) fn watch_stream(&mut self, service: &str, instance_id: &str, open: bool) {
        let key = (service.to_owned(), instance_id.to_owned());
        if open {
            self.acks.entry(key).or_default().streams += 1;
        } else if let Some(ack) = self.acks.get_mut(&key) {
            ack.streams = ack.streams.saturating_sub(1);
            if ack.streams == 0 {
                self.acks.remove(&key);
            }
        }
    }

    /// Records an acknowledgement (or, with `error`, a rejection) of `version`.
    pub(super) fn ack(&mut self, service: &str, instance_id: &str, version: u64, error: &str) {
        let key = (service.to_owned(), instance_id.to_owned());
        let ack = self.acks.entry(key).or_default();
        if error.is_empty() {
            ack.acked_version = ack.acked_version.max(version);
        } else {
            ack.rejected = Some((version, error.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, address: &str) -> v1::Instance {
        v1::Instance {
            instance_id: id.into(),
            service: "orders".into(),
            address: address.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_instance_is_checked_against_the_callers_service() {
        let ok = instance("o-1", "127.0.0.1:15006");
        assert_eq!(
            check("orders", &ok).unwrap(),
            Some("127.0.0.1:15006".parse().unwrap())
        );
        // No address: an instance no caller is sent to (a gateway).
        assert_eq!(check("orders", &instance("o-1", "")).unwrap(), None);
        let err = check("payments", &ok).unwrap_err().to_string();
        assert_eq!(
            err,
            "the certificate is for service payments, but the instance is for service orders"
        );
        let err = check("orders", &instance("", "127.0.0.1:1")).unwrap_err();
        assert_eq!(err.to_string(), "instance_id must be 1 to 256 characters");
        let err = check("orders", &instance("o-1", "localhost")).unwrap_err();
        assert_eq!(err.to_string(), "address \"localhost\" is not an ip:port");
        for undialable in ["0.0.0.0:15006", "[::]:15006", "198.18.0.2:0"] {
            let err = check("orders", &instance("o-1", undialable)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "address {undialable} cannot be dialled: register the address where peers \
                     reach this instance (the sidecar's listen.advertise)"
                )
            );
        }
        let elsewhere = instance("o-1", "198.18.0.2:15006");
        assert_eq!(
            check("orders", &elsewhere).unwrap(),
            Some("198.18.0.2:15006".parse().unwrap())
        );
        let mut bad_version = ok.clone();
        bad_version.version = "V2".into();
        let err = check("orders", &bad_version).unwrap_err();
        assert_eq!(err.to_string(), "version \"V2\" is not a DNS label");
    }

    #[test]
    fn registering_again_keeps_what_heartbeats_reported() {
        let now = Instant::now();
        let mut registry = Registry::default();
        let first = instance("o-1", "127.0.0.1:15006");
        registry
            .register(
                "orders",
                &first,
                Some("127.0.0.1:15006".parse().unwrap()),
                now,
                10,
            )
            .unwrap();
        let beat = v1::HeartbeatRequest {
            instance_id: "o-1".into(),
            applied_version: 9,
            certificate_issuer_sha256: "aa".into(),
            ejected_endpoints: vec!["inventory/10.0.0.1:15006".into()],
            ..Default::default()
        };
        assert_eq!(registry.heartbeat("orders", &beat, now), Beat::Renewed);
        let moved = instance("o-1", "127.0.0.1:16006");
        registry
            .register(
                "orders",
                &moved,
                Some("127.0.0.1:16006".parse().unwrap()),
                now,
                10,
            )
            .unwrap();
        let (_, record) = registry.instances_of("orders").next().unwrap();
        assert_eq!(record.address, Some("127.0.0.1:16006".parse().unwrap()));
        assert_eq!(record.applied_version, 9);
        assert_eq!(record.issuer_sha256, "aa");
        assert_eq!(record.ejected, ["inventory/10.0.0.1:15006"]);
    }

    #[test]
    fn a_gateways_heartbeat_reports_its_listeners_and_junk_is_dropped() {
        let now = Instant::now();
        let mut registry = Registry::default();
        registry
            .register("gateway", &instance("g-1", ""), None, now, 10)
            .unwrap();
        let listener = |name: &str, address: &str| v1::GatewayListener {
            name: name.into(),
            address: address.into(),
        };
        let beat = v1::HeartbeatRequest {
            instance_id: "g-1".into(),
            gateway_listeners: vec![
                listener("web", "127.0.0.1:8080"),
                listener("Bad Name", "127.0.0.1:8081"),
                listener("websecure", "nowhere"),
                listener("websecure", "[::1]:8443"),
            ],
            ..Default::default()
        };
        assert_eq!(registry.heartbeat("gateway", &beat, now), Beat::Renewed);
        let (_, record) = registry.instances_of("gateway").next().unwrap();
        assert_eq!(
            record.gateway_listeners,
            [
                ("web".to_owned(), "127.0.0.1:8080".parse().unwrap()),
                ("websecure".to_owned(), "[::1]:8443".parse().unwrap())
            ]
        );
    }

    #[test]
    fn heartbeats_say_what_changed() {
        let now = Instant::now();
        let mut registry = Registry::default();
        let beat = |app_down: &str| v1::HeartbeatRequest {
            instance_id: "o-1".into(),
            app_down: app_down.into(),
            ..Default::default()
        };
        assert_eq!(registry.heartbeat("orders", &beat(""), now), Beat::Unknown);
        let first = instance("o-1", "127.0.0.1:15006");
        registry
            .register(
                "orders",
                &first,
                Some("127.0.0.1:15006".parse().unwrap()),
                now,
                10,
            )
            .unwrap();
        let seen: Vec<Beat> = ["", "503", "503", ""]
            .into_iter()
            .map(|app_down| registry.heartbeat("orders", &beat(app_down), now))
            .collect();
        use Beat::{AppChanged, Renewed};
        assert_eq!(seen, [Renewed, AppChanged, Renewed, AppChanged]);
        // Another service's certificate cannot renew this instance.
        assert_eq!(
            registry.heartbeat("payments", &beat(""), now),
            Beat::Unknown
        );
    }

    #[test]
    fn leases_expire_and_deregistration_removes() {
        let now = Instant::now();
        let lease = Duration::from_secs(10);
        let mut registry = Registry::default();
        for id in ["o-1", "o-2"] {
            let i = instance(id, "127.0.0.1:15006");
            registry
                .register("orders", &i, "127.0.0.1:15006".parse().ok(), now, 10)
                .unwrap();
        }
        let later = now + Duration::from_secs(6);
        let o2 = v1::HeartbeatRequest {
            instance_id: "o-2".into(),
            ..Default::default()
        };
        registry.heartbeat("orders", &o2, later);
        assert_eq!(registry.live(lease, now + lease).count(), 1);
        assert_eq!(registry.expire(lease, now + lease), 1);
        assert_eq!(registry.len(), 1);
        assert!(registry.deregister("orders", "o-1").is_none());
        assert!(registry.deregister("orders", "o-2").is_some());
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn acknowledgements_last_while_a_stream_is_open() {
        let mut registry = Registry::default();
        let key = ("orders".to_owned(), "o-1".to_owned());
        registry.watch_stream("orders", "o-1", true);
        registry.watch_stream("orders", "o-1", true);
        registry.ack("orders", "o-1", 7, "");
        registry.ack("orders", "o-1", 5, "");
        registry.ack("orders", "o-1", 8, "bad route");
        let ack = registry.ack_of(&key).unwrap();
        assert_eq!(
            ack.acked_version, 7,
            "an older acknowledgement never lowers it"
        );
        assert_eq!(ack.rejected, Some((8, "bad route".to_owned())));
        registry.watch_stream("orders", "o-1", false);
        assert!(registry.ack_of(&key).is_some(), "one stream is still open");
        registry.watch_stream("orders", "o-1", false);
        assert!(registry.ack_of(&key).is_none());
    }
}
