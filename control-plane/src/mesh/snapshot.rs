//! What each service's sidecars run on, computed from the configuration, the trust in force and
//! the registry. Pure: the same inputs give the same snapshots, unversioned; `Mesh` stamps
//! versions on the ones that changed.

use mesh_api::proto::v1;
use mesh_api::spiffe::SpiffeId;

use super::cluster::{self, Cluster, Member};
use super::registry::Registry;
use crate::config::{MeshConfig, ServiceConfig};

/// The CA's part of every snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Trust {
    /// The roots sidecars trust, DER.
    pub(super) bundle_der: Vec<Vec<u8>>,
    /// Hex SHA-256 of the CA certificate that signs.
    pub(super) issuer_sha256: String,
}

/// The snapshot of `service`, unversioned; empty when it is not declared. `cluster` is what
/// the cluster says of the services in Kubernetes mode (`None` in local mode): a destination
/// with a Service there has the slices' endpoints and the Service's ClusterIP.
pub(super) fn snapshot(
    config: &MeshConfig,
    trust: &Trust,
    registry: &Registry,
    cluster: Option<&Cluster>,
    service: &str,
) -> v1::Snapshot {
    let Some(svc) = config.services.get(service) else {
        return v1::Snapshot::default();
    };
    // What it calls, and the services their routes send requests to in their stead.
    let mut names: Vec<&str> = svc.calls.iter().map(String::as_str).collect();
    let routed: Vec<&str> = names
        .iter()
        .filter_map(|name| config.services.get(*name))
        .flat_map(|dest| &dest.policy.routes)
        .flat_map(|route| route.backends())
        .map(|(_, backend)| backend.service.as_str())
        .collect();
    for name in routed {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let destinations = names
        .into_iter()
        .filter_map(|name| config.services.get(name))
        .map(|dest| {
            let in_cluster = cluster.and_then(|c| c.get(&dest.name));
            let members = match in_cluster {
                Some(service) => cluster::from_slices(registry, &dest.name, service),
                None => cluster::registered(registry, &dest.name),
            };
            // The ClusterIP is where the cluster's DNS sends apps: it takes the place of the
            // address from `virtual_addresses.range`.
            let virtual_address = in_cluster
                .and_then(|s| s.cluster_ip)
                .or(dest.virtual_address);
            v1::Destination {
                name: dest.name.clone(),
                identity: SpiffeId::for_service(
                    &config.trust_domain,
                    &config.namespace,
                    &dest.name,
                )
                .map(|id| id.to_string())
                .unwrap_or_default(),
                policy: Some(v1::Policy::from(&dest.policy)),
                backends: backends(dest, &members),
                tcp: dest.tcp.as_ref().map(v1::TcpDestination::from),
                virtual_address: virtual_address.map(|ip| ip.to_string()).unwrap_or_default(),
                opaque_ports: in_cluster
                    .map(|s| s.opaque_ports.iter().copied().map(u32::from).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    v1::Snapshot {
        version: 0,
        trust_bundle_der: trust.bundle_der.clone(),
        issuer_sha256: trust.issuer_sha256.clone(),
        authorization: Some(v1::Authorization::from(&svc.authorization)),
        rate_limit: (!svc.rate_limit.is_empty()).then(|| v1::RateLimit::from(&svc.rate_limit)),
        destinations,
        certificate_lifetime_secs: config.certificate_lifetime.as_secs(),
        gateway: config.gateways.get(service).map(|g| v1::Gateway {
            yaml: g.source.clone(),
        }),
    }
}

/// The endpoints of `dest` (`members`): one backend, or one per version of its traffic split.
fn backends(dest: &ServiceConfig, members: &[Member<'_>]) -> Vec<v1::Backend> {
    let endpoint = |member: &Member<'_>| v1::Endpoint {
        address: member.address.to_string(),
        instance_id: member.instance_id.clone(),
    };
    match &dest.traffic_split {
        None => vec![v1::Backend {
            version: String::new(),
            weight: 1,
            endpoints: members.iter().map(endpoint).collect(),
        }],
        Some(split) => split
            .iter()
            .map(|(version, weight)| v1::Backend {
                version: version.clone(),
                weight: *weight,
                endpoints: members
                    .iter()
                    .filter(|m| {
                        let v = if m.version.is_empty() {
                            "v1"
                        } else {
                            m.version
                        };
                        v == version
                    })
                    .map(endpoint)
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::config::{ConfigFiles, MESH_FILE, parse};
    use crate::mesh::registry::check;

    const MESH: &str = "trust_domain: mesh.local\ncertificate_lifetime: 1h\n";

    fn config(services: &[(&str, &str)]) -> MeshConfig {
        let mut files = ConfigFiles::new();
        files.insert(MESH_FILE.into(), MESH.as_bytes().to_vec());
        for (name, text) in services {
            files.insert(format!("services/{name}.yaml"), text.as_bytes().to_vec());
        }
        parse(&files).unwrap()
    }

    fn trust() -> Trust {
        Trust {
            bundle_der: vec![vec![1, 2, 3], vec![4, 5]],
            issuer_sha256: "ab".repeat(32),
        }
    }

    /// Registers `service`/`id` at `address` with an app `version` ("" means v1).
    fn register(registry: &mut Registry, service: &str, id: &str, address: &str, version: &str) {
        let instance = v1::Instance {
            instance_id: id.into(),
            service: service.into(),
            address: address.into(),
            version: version.into(),
            app_down: String::new(),
            admin_address: String::new(),
        };
        let address = check(service, &instance).unwrap();
        registry
            .register(service, &instance, address, Instant::now(), 100)
            .unwrap();
    }

    fn endpoints(backend: &v1::Backend) -> Vec<(&str, &str)> {
        backend
            .endpoints
            .iter()
            .map(|e| (e.instance_id.as_str(), e.address.as_str()))
            .collect()
    }

    #[test]
    fn destinations_are_the_services_it_calls_and_no_others() {
        let config = config(&[
            ("orders", "name: orders\ncalls: [inventory, payments]\n"),
            ("inventory", "name: inventory\n"),
            ("payments", "name: payments\n"),
            ("audit", "name: audit\n"),
        ]);
        let registry = Registry::default();
        let orders = snapshot(&config, &trust(), &registry, None, "orders");
        let names: Vec<&str> = orders
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["inventory", "payments"]);
        let inventory = snapshot(&config, &trust(), &registry, None, "inventory");
        assert!(inventory.destinations.is_empty());
    }

    #[test]
    fn a_destination_carries_its_identity_and_resolved_policy() {
        let config = config(&[
            ("orders", "name: orders\ncalls: [inventory]\n"),
            (
                "inventory",
                "name: inventory\ntimeout: 2s\nretries: { attempts: 3 }\nroutes:\n  - name: stock\n    match: { methods: [GET], path_prefix: /stock }\n    timeout: 500ms\n",
            ),
        ]);
        let orders = snapshot(&config, &trust(), &Registry::default(), None, "orders");
        let inventory = &orders.destinations[0];
        assert_eq!(
            inventory.identity,
            "spiffe://mesh.local/ns/default/sa/inventory"
        );
        let policy = inventory.policy.as_ref().unwrap();
        assert_eq!(
            *policy,
            v1::Policy::from(&config.services["inventory"].policy)
        );
        assert_eq!(policy.timeout_ms, 2000);
        // The route arrives resolved: its own timeout, and the attempts it inherits.
        assert_eq!(policy.routes.len(), 1);
        let route = &policy.routes[0];
        assert_eq!(route.name, "stock");
        // Sent as matches; the earlier fields stay empty.
        assert!(route.methods.is_empty() && route.path_prefix.is_empty());
        assert_eq!(route.matches.len(), 1);
        assert_eq!(route.matches[0].method, "GET");
        assert_eq!(route.matches[0].path, "/stock");
        assert_eq!(route.matches[0].path_type, v1::PathMatchType::Prefix as i32);
        assert_eq!(route.timeout_ms, 500);
        assert_eq!(route.retries.as_ref().unwrap().attempts, 3);
    }

    #[test]
    fn services_a_route_sends_requests_to_are_destinations_of_its_callers() {
        let config = config(&[
            ("orders", "name: orders\ncalls: [inventory]\n"),
            (
                "inventory",
                "name: inventory\nroutes: [{ name: next, backendRefs: [{ name: next }] }]\n",
            ),
            ("next", "name: next\n"),
        ]);
        let orders = snapshot(&config, &trust(), &Registry::default(), None, "orders");
        let names: Vec<&str> = orders
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["inventory", "next"]);
        let route = &orders.destinations[0].policy.as_ref().unwrap().routes[0];
        assert_eq!(route.backend_refs[0].service, "next");
    }

    #[test]
    fn a_services_rate_limit_is_in_its_own_snapshot_only() {
        let config = config(&[
            ("orders", "name: orders\ncalls: [inventory]\n"),
            (
                "inventory",
                "name: inventory\nrate_limit: { requests_per_second: 50, callers: { orders: { requests_per_second: 10 } } }\n",
            ),
        ]);
        let inventory = snapshot(&config, &trust(), &Registry::default(), None, "inventory");
        let limit = inventory.rate_limit.unwrap();
        assert_eq!(limit.total.unwrap().requests_per_second, 50.0);
        assert_eq!(limit.callers[0].caller, "orders");
        let orders = snapshot(&config, &trust(), &Registry::default(), None, "orders");
        assert!(orders.rate_limit.is_none());
    }

    #[test]
    fn trust_authorization_and_lifetime_are_the_services_own() {
        let config = config(&[
            ("orders", "name: orders\n"),
            (
                "inventory",
                "name: inventory\nauthorization: { default: deny, allow: [orders] }\n",
            ),
        ]);
        let inventory = snapshot(&config, &trust(), &Registry::default(), None, "inventory");
        assert_eq!(inventory.version, 0, "Mesh stamps the version");
        assert_eq!(inventory.trust_bundle_der, trust().bundle_der);
        assert_eq!(inventory.issuer_sha256, trust().issuer_sha256);
        assert_eq!(inventory.certificate_lifetime_secs, 3600);
        let authorization = inventory.authorization.unwrap();
        assert_eq!(
            authorization,
            v1::Authorization::from(&config.services["inventory"].authorization)
        );
        assert_eq!(authorization.default, v1::Decision::Deny as i32);
        assert_eq!(authorization.allow, ["orders"]);
    }

    #[test]
    fn without_a_split_one_backend_holds_every_instance_of_the_destination() {
        let config = config(&[
            ("orders", "name: orders\ncalls: [inventory]\n"),
            ("inventory", "name: inventory\n"),
            // Sorts right after "inventory": its instances must not leak into it.
            ("inventory2", "name: inventory2\n"),
        ]);
        let mut registry = Registry::default();
        register(&mut registry, "inventory", "b", "10.0.0.2:15006", "v2");
        register(&mut registry, "inventory", "a", "10.0.0.1:15006", "");
        register(&mut registry, "inventory2", "c", "10.0.0.3:15006", "");
        register(&mut registry, "orders", "d", "10.0.0.4:15006", "");
        let orders = snapshot(&config, &trust(), &registry, None, "orders");
        let backends = &orders.destinations[0].backends;
        assert_eq!(backends.len(), 1);
        assert_eq!(backends[0].version, "");
        assert_eq!(backends[0].weight, 1);
        assert_eq!(
            endpoints(&backends[0]),
            [("a", "10.0.0.1:15006"), ("b", "10.0.0.2:15006")]
        );
    }

    #[test]
    fn a_split_gives_each_version_its_weight_and_instances() {
        let config = config(&[
            ("orders", "name: orders\ncalls: [inventory]\n"),
            (
                "inventory",
                "name: inventory\ntraffic_split: { v1: 90, v2: 10, v3: 0 }\n",
            ),
        ]);
        let mut registry = Registry::default();
        register(&mut registry, "inventory", "old", "10.0.0.1:15006", "");
        register(&mut registry, "inventory", "v1", "10.0.0.2:15006", "v1");
        register(&mut registry, "inventory", "new", "10.0.0.3:15006", "v2");
        register(&mut registry, "inventory", "odd", "10.0.0.4:15006", "v9");
        let orders = snapshot(&config, &trust(), &registry, None, "orders");
        let backends = &orders.destinations[0].backends;
        let summary: Vec<(&str, u32, Vec<(&str, &str)>)> = backends
            .iter()
            .map(|b| (b.version.as_str(), b.weight, endpoints(b)))
            .collect();
        assert_eq!(
            summary,
            [
                // An instance without a version is v1.
                (
                    "v1",
                    90,
                    vec![("old", "10.0.0.1:15006"), ("v1", "10.0.0.2:15006")]
                ),
                ("v2", 10, vec![("new", "10.0.0.3:15006")]),
                ("v3", 0, vec![]),
            ]
        );
    }

    #[test]
    fn an_instance_whose_app_is_down_is_left_out_until_it_is_up() {
        let config = config(&[
            ("orders", "name: orders\ncalls: [inventory]\n"),
            ("inventory", "name: inventory\n"),
        ]);
        let mut registry = Registry::default();
        register(&mut registry, "inventory", "a", "10.0.0.1:15006", "");
        register(&mut registry, "inventory", "b", "10.0.0.2:15006", "");
        let beat = |app_down: &str| v1::HeartbeatRequest {
            instance_id: "b".into(),
            app_down: app_down.into(),
            ..Default::default()
        };
        registry.heartbeat("inventory", &beat("GET /health: 503"), Instant::now());
        let down = snapshot(&config, &trust(), &registry, None, "orders");
        assert_eq!(
            endpoints(&down.destinations[0].backends[0]),
            [("a", "10.0.0.1:15006")]
        );
        registry.heartbeat("inventory", &beat(""), Instant::now());
        let up = snapshot(&config, &trust(), &registry, None, "orders");
        assert_eq!(
            endpoints(&up.destinations[0].backends[0]),
            [("a", "10.0.0.1:15006"), ("b", "10.0.0.2:15006")]
        );
    }

    #[test]
    fn an_instance_without_an_address_is_no_endpoint() {
        let config = config(&[
            ("orders", "name: orders\ncalls: [gateway]\n"),
            ("gateway", "name: gateway\n"),
        ]);
        let mut registry = Registry::default();
        register(&mut registry, "gateway", "g", "", "");
        assert_eq!(registry.instances_of("gateway").count(), 1);
        let orders = snapshot(&config, &trust(), &registry, None, "orders");
        assert!(endpoints(&orders.destinations[0].backends[0]).is_empty());
    }

    #[test]
    fn the_same_inputs_give_the_same_snapshot() {
        let config = config(&[
            ("orders", "name: orders\ncalls: [inventory]\n"),
            ("inventory", "name: inventory\n"),
        ]);
        let mut registry = Registry::default();
        register(&mut registry, "inventory", "a", "10.0.0.1:15006", "");
        let first = snapshot(&config, &trust(), &registry, None, "orders");
        // A lease renewal changes nothing a snapshot shows.
        registry.heartbeat(
            "inventory",
            &v1::HeartbeatRequest {
                instance_id: "a".into(),
                applied_version: 7,
                ..Default::default()
            },
            Instant::now() + Duration::from_secs(1),
        );
        assert_eq!(
            snapshot(&config, &trust(), &registry, None, "orders"),
            first
        );
    }

    #[test]
    fn an_undeclared_service_gets_an_empty_snapshot() {
        let config = config(&[("orders", "name: orders\n")]);
        assert_eq!(
            snapshot(&config, &trust(), &Registry::default(), None, "ghost"),
            v1::Snapshot::default()
        );
    }
}
