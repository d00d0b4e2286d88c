//! What a Kubernetes cluster says of the mesh's services (Kubernetes mode): each Service's
//! ClusterIP and its ready EndpointSlice addresses, and how that combines with the registry.
//!
//! The slices say WHO is an endpoint: an address they do not list gets no traffic, whatever
//! registered from it. A sidecar's registration from a listed address adds what only it knows:
//! the port of its inbound listener, its version (for traffic splits), whether its app is down,
//! and its instance id. An address whose sidecar has not registered (yet) is dialled at the
//! injected sidecar's inbound port, so a pod is reachable as soon as the cluster marks it ready.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use super::registry::Registry;

/// The port of an injected sidecar's inbound listener, where callers dial a pod whose sidecar
/// has not registered.
pub(crate) const DEFAULT_INBOUND_PORT: u16 = mesh_inject::names::INBOUND_PORT;

/// The cluster's view of the mesh's namespace: by service name, what its Service and
/// EndpointSlices say.
pub(crate) type Cluster = BTreeMap<String, ClusterService>;

/// One Service and its EndpointSlices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClusterService {
    /// Its ClusterIP, when it has one (not a headless Service).
    pub(crate) cluster_ip: Option<IpAddr>,
    /// Its ports that carry opaque TCP (by `appProtocol`), tunnelled without detection.
    pub(crate) opaque_ports: BTreeSet<u16>,
    /// The ready addresses of its slices, deduplicated, each with the name of the pod behind it
    /// (empty when the slice names none).
    pub(crate) endpoints: BTreeMap<IpAddr, String>,
}

/// One endpoint of a destination as snapshots carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Member<'a> {
    pub(super) instance_id: String,
    pub(super) address: SocketAddr,
    /// The app version its sidecar reported; empty when it reported none (or has not
    /// registered).
    pub(super) version: &'a str,
}

/// The endpoints of `service` from the registry alone (local mode, or a service that has no
/// Service in the cluster): every instance with an address whose app is not down.
pub(super) fn registered<'a>(registry: &'a Registry, service: &'a str) -> Vec<Member<'a>> {
    registry
        .instances_of(service)
        // An instance whose app is down gets no traffic until its sidecar says it is up; one
        // without an address (a gateway) never does.
        .filter(|(_, record)| record.app_down.is_empty())
        .filter_map(|(id, record)| {
            Some(Member {
                instance_id: id.clone(),
                address: record.address?,
                version: &record.version,
            })
        })
        .collect()
}

/// The endpoints of `service` whose Service is `cluster`: one per ready slice address, at its
/// registered sidecar's address when one registered from that IP (and left out while that
/// sidecar reports its app down), else at the default inbound port.
pub(super) fn from_slices<'a>(
    registry: &'a Registry,
    service: &'a str,
    cluster: &'a ClusterService,
) -> Vec<Member<'a>> {
    let mut by_ip: HashMap<IpAddr, (&String, &super::registry::InstanceRecord)> = HashMap::new();
    for (id, record) in registry.instances_of(service) {
        if let Some(address) = record.address {
            // Instances are visited by id, so the same one wins on every rebuild.
            by_ip
                .entry(address.ip().to_canonical())
                .or_insert((id, record));
        }
    }
    cluster
        .endpoints
        .iter()
        .filter_map(|(ip, pod)| match by_ip.get(&ip.to_canonical()) {
            Some((_, record)) if !record.app_down.is_empty() => None,
            Some((id, record)) => Some(Member {
                instance_id: (*id).clone(),
                address: record.address?,
                version: &record.version,
            }),
            None => Some(Member {
                instance_id: if pod.is_empty() {
                    ip.to_string()
                } else {
                    pod.clone()
                },
                address: SocketAddr::new(*ip, DEFAULT_INBOUND_PORT),
                version: "",
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use mesh_api::proto::v1;
    use tokio::time::Instant;

    use super::*;
    use crate::mesh::registry::check;

    fn register(registry: &mut Registry, id: &str, address: &str, version: &str) {
        let instance = v1::Instance {
            instance_id: id.into(),
            service: "inventory".into(),
            address: address.into(),
            version: version.into(),
            ..Default::default()
        };
        let address = check("inventory", &instance).unwrap();
        registry
            .register("inventory", &instance, address, Instant::now(), 100)
            .unwrap();
    }

    fn service(addresses: &[(&str, &str)]) -> ClusterService {
        ClusterService {
            cluster_ip: None,
            opaque_ports: BTreeSet::new(),
            endpoints: addresses
                .iter()
                .map(|(ip, pod)| (ip.parse().unwrap(), (*pod).to_owned()))
                .collect(),
        }
    }

    fn summary<'a>(members: &'a [Member<'a>]) -> Vec<(String, String, &'a str)> {
        members
            .iter()
            .map(|m| (m.instance_id.clone(), m.address.to_string(), m.version))
            .collect()
    }

    #[test]
    fn the_slices_say_who_and_registrations_from_their_addresses_say_where_and_which_version() {
        let mut registry = Registry::default();
        register(&mut registry, "i-1", "10.244.0.1:16006", "v2");
        // Registered, but no slice lists its address: no endpoint.
        register(&mut registry, "gone", "10.244.0.9:15006", "");
        let cluster = service(&[("10.244.0.1", "inventory-a"), ("10.244.0.2", "inventory-b")]);
        let members = from_slices(&registry, "inventory", &cluster);
        assert_eq!(
            summary(&members),
            [
                ("i-1".to_owned(), "10.244.0.1:16006".to_owned(), "v2"),
                // Not registered (yet): the pod's name, the injected inbound port.
                ("inventory-b".to_owned(), "10.244.0.2:15006".to_owned(), ""),
            ]
        );
    }

    #[test]
    fn an_endpoint_whose_sidecar_reports_its_app_down_is_left_out() {
        let mut registry = Registry::default();
        register(&mut registry, "i-1", "10.244.0.1:15006", "");
        let beat = v1::HeartbeatRequest {
            instance_id: "i-1".into(),
            app_down: "GET /health: 503".into(),
            ..Default::default()
        };
        registry.heartbeat("inventory", &beat, Instant::now());
        let cluster = service(&[("10.244.0.1", ""), ("10.244.0.2", "")]);
        let members = from_slices(&registry, "inventory", &cluster);
        assert_eq!(
            summary(&members),
            [("10.244.0.2".to_owned(), "10.244.0.2:15006".to_owned(), "")]
        );
    }
}
