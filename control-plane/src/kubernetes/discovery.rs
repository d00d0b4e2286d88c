//! Service discovery from the cluster: the Services and EndpointSlices of the mesh's namespace,
//! watched, and turned into what the mesh needs of them (each Service's ClusterIP and the ready
//! addresses of its slices), which the mesh combines with its registry (`mesh/cluster.rs`).
//!
//! Both kinds are watched with backoff; a relist replaces what was known only once it is
//! complete, so the last known state stays in force while the API server is away. Every change
//! is handed to the mesh at once, which rebuilds the snapshots it changes (coalesced with any
//! other change) without waiting for the configuration's poll.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::watched::Watched;
use crate::mesh::{Cluster, ClusterService, Mesh};

/// The label that names a slice's Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the watch keeps of one EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slice {
    /// The Service it belongs to.
    service: String,
    /// Its ready addresses, each with the name of the pod behind it.
    ready: BTreeMap<IpAddr, String>,
}

/// Watches the Services and EndpointSlices of `namespace` until `shutdown`, handing the mesh
/// what they say after each change. Returns once both first lists are in the mesh, with the
/// task that goes on watching.
pub(crate) async fn start(
    client: kube::Client,
    namespace: &str,
    mesh: Arc<Mesh>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (ready_tx, mut ready) = watch::channel(false);
    let task = tokio::spawn(run(client, namespace.to_owned(), mesh, ready_tx, shutdown));
    // Ends early only if the task ended (shutdown).
    let _ = ready.wait_for(|listed| *listed).await;
    task
}

/// The watch loop: both kinds' events, one at a time, into the mesh.
fn run(
    client: kube::Client,
    namespace: String,
    mesh: Arc<Mesh>,
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> {
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    async move {
        let services = watcher::watcher(services, watcher::Config::default()).default_backoff();
        let slices = watcher::watcher(
            slices,
            // Existence: only the slices of a Service.
            watcher::Config::default().labels(SERVICE_NAME_LABEL),
        )
        .default_backoff();
        let mut services = std::pin::pin!(services);
        let mut slices = std::pin::pin!(slices);
        let mut known_services: Watched<ServiceFacts> = Watched::default();
        let mut known_slices: Watched<Slice> = Watched::default();
        loop {
            let changed = tokio::select! {
                () = shutdown.cancelled() => return,
                event = services.next() => match event {
                    None => return,
                    Some(Err(e)) => {
                        tracing::warn!(%namespace, error = %e, "watching Services; retrying");
                        false
                    }
                    Some(Ok(event)) => known_services.apply(event, read_service),
                },
                event = slices.next() => match event {
                    None => return,
                    Some(Err(e)) => {
                        tracing::warn!(%namespace, error = %e, "watching EndpointSlices; retrying");
                        false
                    }
                    Some(Ok(event)) => known_slices.apply(event, read_slice),
                },
            };
            if !changed {
                continue;
            }
            let (Some(services), Some(slices)) = (&known_services.listed, &known_slices.listed)
            else {
                continue;
            };
            mesh.set_cluster(cluster(services, slices));
            ready.send_replace(true);
        }
    }
}

/// What the mesh needs of the Services and slices: per Service, its ClusterIP and the ready
/// addresses of all its slices (an address in two slices counts once).
fn cluster(services: &BTreeMap<String, ServiceFacts>, slices: &BTreeMap<String, Slice>) -> Cluster {
    let mut cluster: Cluster = services
        .iter()
        .map(|(name, facts)| {
            let service = ClusterService {
                cluster_ip: facts.cluster_ip,
                opaque_ports: facts.opaque_ports.clone(),
                endpoints: BTreeMap::new(),
            };
            (name.clone(), service)
        })
        .collect();
    for slice in slices.values() {
        if let Some(service) = cluster.get_mut(&slice.service) {
            for (ip, pod) in &slice.ready {
                service.endpoints.entry(*ip).or_insert_with(|| pod.clone());
            }
        }
    }
    cluster
}

/// What the mesh needs of a Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServiceFacts {
    /// `None` for a headless Service, or one without an IP yet.
    cluster_ip: Option<IpAddr>,
    /// Its ports that carry opaque TCP (see [`is_opaque`]).
    opaque_ports: BTreeSet<u16>,
}

/// A Service's name, ClusterIP and opaque ports.
fn read_service(service: &Service) -> Option<(String, ServiceFacts)> {
    let name = service.metadata.name.clone()?;
    let spec = service.spec.as_ref();
    let cluster_ip = spec
        .and_then(|spec| spec.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified());
    let opaque_ports = spec
        .and_then(|spec| spec.ports.as_ref())
        .into_iter()
        .flatten()
        .filter(|port| is_opaque(port.app_protocol.as_deref(), port.name.as_deref()))
        .filter_map(|port| u16::try_from(port.port).ok())
        .collect();
    Some((
        name,
        ServiceFacts {
            cluster_ip,
            opaque_ports,
        },
    ))
}

/// Whether a Service port carries opaque TCP rather than HTTP: its `appProtocol` says a
/// protocol other than HTTP's (`tcp`, `mysql`, `redis`, ...), or, without one, its name is
/// `tcp` or starts with `tcp-` (the naming convention meshes read). Anything else is detected
/// per connection: HTTP is served as requests, the rest tunnelled.
fn is_opaque(app_protocol: Option<&str>, name: Option<&str>) -> bool {
    const HTTP: [&str; 9] = [
        "http",
        "https",
        "http2",
        "h2c",
        "grpc",
        "kubernetes.io/h2c",
        "kubernetes.io/ws",
        "kubernetes.io/wss",
        "grpc-web",
    ];
    match app_protocol.map(str::to_ascii_lowercase) {
        Some(protocol) if !protocol.is_empty() => !HTTP.contains(&protocol.as_str()),
        _ => name.is_some_and(|name| name == "tcp" || name.starts_with("tcp-")),
    }
}

/// A slice's name, its Service, and its ready addresses. An endpoint is ready unless its
/// `conditions.ready` is false (unset means ready, as the API says); Kubernetes sets it false
/// for a terminating pod too. FQDN slices name no address, and add none.
fn read_slice(slice: &EndpointSlice) -> Option<(String, Slice)> {
    let name = slice.metadata.name.clone()?;
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    let ready = slice
        .endpoints
        .iter()
        .flatten()
        .filter(|endpoint| {
            endpoint
                .conditions
                .as_ref()
                .and_then(|conditions| conditions.ready)
                != Some(false)
        })
        .flat_map(|endpoint| {
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|target| target.kind.as_deref() == Some("Pod"))
                .and_then(|target| target.name.clone())
                .unwrap_or_default();
            endpoint
                .addresses
                .iter()
                .filter_map(|address| address.parse::<IpAddr>().ok())
                .map(move |ip| (ip.to_canonical(), pod.clone()))
        })
        .collect();
    Some((name, Slice { service, ready }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use kube::runtime::watcher::Event;

    use super::*;

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_endpoint_is_ready_unless_it_says_it_is_not() {
        let slice = slice(json!({
            "metadata": { "name": "inventory-1", "labels": { SERVICE_NAME_LABEL: "inventory" } },
            "addressType": "IPv4",
            "endpoints": [
                { "addresses": ["10.244.0.1"] },
                { "addresses": ["10.244.0.2"], "conditions": { "ready": true },
                  "targetRef": { "kind": "Pod", "name": "inventory-b" } },
                { "addresses": ["10.244.0.3"], "conditions": { "ready": false } },
                { "addresses": ["10.244.0.4"],
                  "conditions": { "ready": false, "serving": true, "terminating": true } },
                { "addresses": ["not-an-ip"] },
            ],
        }));
        let (name, read) = read_slice(&slice).unwrap();
        assert_eq!(name, "inventory-1");
        assert_eq!(read.service, "inventory");
        let ready: Vec<(String, &str)> = read
            .ready
            .iter()
            .map(|(ip, pod)| (ip.to_string(), pod.as_str()))
            .collect();
        assert_eq!(
            ready,
            [
                ("10.244.0.1".to_owned(), ""),
                ("10.244.0.2".to_owned(), "inventory-b")
            ]
        );
    }

    #[test]
    fn a_slice_without_its_services_label_is_nobodys() {
        let slice = slice(json!({
            "metadata": { "name": "loose" },
            "addressType": "IPv4",
            "endpoints": [{ "addresses": ["10.244.0.1"] }],
        }));
        assert!(read_slice(&slice).is_none());
    }

    /// While a relist is under way (the API server came back), the list in force stays whole;
    /// the relist replaces it only once complete, dropping what was deleted meanwhile.
    #[test]
    fn the_last_complete_list_stays_in_force_until_a_relist_completes() {
        let service = |name: &str, ip: &str| -> Service {
            serde_json::from_value(json!({
                "metadata": { "name": name },
                "spec": { "clusterIP": ip },
            }))
            .unwrap()
        };
        let names = |watched: &Watched<ServiceFacts>| -> Vec<String> {
            watched.listed.as_ref().unwrap().keys().cloned().collect()
        };
        let mut watched: Watched<ServiceFacts> = Watched::default();
        assert!(!watched.apply(Event::Apply(service("early", "10.96.0.1")), read_service));
        assert!(!watched.apply(Event::Init, read_service));
        assert!(!watched.apply(Event::InitApply(service("a", "10.96.0.1")), read_service));
        assert!(!watched.apply(Event::InitApply(service("b", "10.96.0.2")), read_service));
        assert!(
            watched.listed.is_none(),
            "nothing in force before the first list"
        );
        assert!(watched.apply(Event::InitDone, read_service));
        assert_eq!(names(&watched), ["a", "b"]);

        // The API server is away, then back: a relist starts.
        assert!(!watched.apply(Event::Init, read_service));
        assert!(!watched.apply(Event::InitApply(service("b", "10.96.0.2")), read_service));
        assert_eq!(names(&watched), ["a", "b"], "the last list stays in force");
        assert!(watched.apply(Event::InitDone, read_service));
        assert_eq!(names(&watched), ["b"], "a deleted while away");

        assert!(watched.apply(Event::Delete(service("b", "10.96.0.2")), read_service));
        assert!(names(&watched).is_empty());
    }

    #[test]
    fn a_headless_service_has_no_cluster_ip() {
        let service = |ip: &str| -> Service {
            serde_json::from_value(json!({
                "metadata": { "name": "inventory" },
                "spec": { "clusterIP": ip },
            }))
            .unwrap()
        };
        assert_eq!(read_service(&service("None")).unwrap().1.cluster_ip, None);
        assert_eq!(
            read_service(&service("fd00::10")).unwrap().1.cluster_ip,
            Some("fd00::10".parse().unwrap())
        );
        assert_eq!(
            read_service(&service("10.96.0.10")).unwrap().1.cluster_ip,
            Some("10.96.0.10".parse().unwrap())
        );
    }

    #[test]
    fn ports_whose_app_protocol_is_not_https_are_opaque() {
        let service: Service = serde_json::from_value(json!({
            "metadata": { "name": "cache" },
            "spec": {
                "clusterIP": "10.96.0.20",
                "ports": [
                    { "name": "http", "port": 80, "appProtocol": "http" },
                    { "name": "grpc", "port": 9090, "appProtocol": "kubernetes.io/h2c" },
                    { "name": "redis", "port": 6379, "appProtocol": "redis" },
                    { "name": "tcp-db", "port": 5432 },
                    { "name": "web", "port": 8080 },
                    { "name": "raw", "port": 7000, "appProtocol": "TCP" },
                ],
            },
        }))
        .unwrap();
        let facts = read_service(&service).unwrap().1;
        assert_eq!(
            facts.opaque_ports.into_iter().collect::<Vec<_>>(),
            [5432, 6379, 7000]
        );
    }

    #[test]
    fn slices_of_one_service_merge_and_slices_of_no_service_are_left_out() {
        let ready = |ips: &[&str]| -> BTreeMap<IpAddr, String> {
            ips.iter()
                .map(|ip| (ip.parse().unwrap(), String::new()))
                .collect()
        };
        let services = BTreeMap::from([("inventory".to_owned(), ServiceFacts::default())]);
        let slices = BTreeMap::from([
            (
                "a".to_owned(),
                Slice {
                    service: "inventory".into(),
                    ready: ready(&["10.244.0.1", "10.244.0.2"]),
                },
            ),
            (
                "b".to_owned(),
                Slice {
                    service: "inventory".into(),
                    ready: ready(&["10.244.0.2", "10.244.0.3"]),
                },
            ),
            (
                "c".to_owned(),
                Slice {
                    service: "ghost".into(),
                    ready: ready(&["10.244.0.9"]),
                },
            ),
        ]);
        let cluster = cluster(&services, &slices);
        assert_eq!(cluster.keys().collect::<Vec<_>>(), ["inventory"]);
        assert_eq!(
            cluster["inventory"].endpoints,
            ready(&["10.244.0.1", "10.244.0.2", "10.244.0.3"])
        );
    }
}
