//! What a Kubernetes cluster says of the mesh's services (Kubernetes mode): each Service's
//! ClusterIP and its ready EndpointSlice addresses, and how that combines with the registry.
//!
//! The slices say WHO is an endpoint: an address they do not list gets no traffic, whatever
//! registered from it. A sidecar's registration from a listed address adds what only it knows:
//! the port of its inbound listener, its version (for traffic splits), whether its app is down,
//! and its instance id. An address whose sidecar has not registered (yet) is dialled at the
//! injected sidecar's inbound port, so a pod is reachable as soon as the cluster marks it ready.

use std::collections::{BTreeMap, HashMap};
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
