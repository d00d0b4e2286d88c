//! Step 3: look up the destination and its stack.
//!
//! The table of destinations is built once per configuration, one stack per destination (its
//! pooled endpoints, TLS configs, breaker state and retry budget made up front), and published
//! whole through a `watch` channel. A destination with routes has one stack per route besides
//! its own, differing only in timeouts and retry policy: every stack of a destination shares
//! its concurrency limits, retry budget and balancer, so a route is another way of calling the
//! same endpoints, never a way around their limits. A request clones one `Arc` out of it; a new table never
//! disturbs requests already holding the old one.
//!
//! A new table keeps what still holds from the previous one: a destination whose spec did not
//! change keeps its whole stack (breaker state, latency estimates, retry budget), and a changed
//! one keeps the pooled connections of the endpoints it still has.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Uri};
use mesh_api::route::{BackendRef, Filter};
use tower::ServiceBuilder;

use crate::config::{Config, Destination, DestinationPolicy, TcpDestination};
use crate::identity::{CredentialsError, Identity, SpiffeId};
use crate::metrics::{Label, Metrics};

use super::balance::{Backend, Balance};
use super::breaker::Outlier;
use super::connect::Endpoint;
use super::fault::Faults;
use super::retry::{Retry, RetryLayer};
use super::route_match::{Matched, RouteTable};
use super::shed::{Shed, ShedLayer};
use super::timeout::{self, Timeout, TimeoutLayer};
use super::weighted;

/// Steps 5a to 8 of one destination, as one service type. Every layer clones by `Arc`, so a
/// request takes its own copy of the stack without allocating.
pub(crate) type DestinationService = Timeout<Shed<Retry<Timeout<Balance>>>>;

/// What a destination is: where its sidecars are, who they must be, and how to call them. From
/// the bootstrap file or from a control-plane snapshot.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DestinationSpec {
    /// The identity its sidecars must present.
    pub(crate) identity: SpiffeId,
    /// Timeouts, retries, circuit breaking and load balancing.
    pub(crate) policy: DestinationPolicy,
    /// Its endpoints, in one backend, or one per version under a traffic split.
    pub(crate) backends: Vec<BackendSpec>,
    /// For a destination with a listener of its own, the listener and its app's port.
    pub(crate) tcp: Option<TcpDestination>,
    /// The IP the local app reaches it at, when its connections are redirected here.
    pub(crate) virtual_address: Option<IpAddr>,
    /// Ports of `virtual_address` that carry opaque TCP: tunnelled without detection.
    pub(crate) opaque_ports: Vec<u16>,
}

/// The endpoints of one version of a destination, and its share of requests.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BackendSpec {
    /// The version (empty without a split).
    pub(crate) version: String,
    /// Share of requests relative to the other backends.
    pub(crate) weight: u32,
    /// Inbound addresses of its sidecars.
    pub(crate) endpoints: Vec<SocketAddr>,
}

impl From<&Destination> for DestinationSpec {
    fn from(dest: &Destination) -> Self {
        Self {
            identity: dest.identity.clone(),
            policy: dest.policy.clone(),
            backends: vec![BackendSpec {
                version: String::new(),
                weight: 1,
                endpoints: dest.endpoints.clone(),
            }],
            tcp: dest.tcp,
            virtual_address: dest.virtual_address,
            opaque_ports: Vec::new(),
        }
    }
}

/// Every destination this sidecar may call.
#[derive(Debug, Default)]
pub(crate) struct Destinations {
    by_name: HashMap<String, Arc<DestinationStack>>,
    /// Destination names by virtual address, then by endpoint: a redirected connection's
    /// original destination is one or the other.
    by_virtual_address: HashMap<IpAddr, String>,
    by_endpoint: HashMap<SocketAddr, String>,
}

/// One destination service and the stacks that reach it.
#[derive(Debug)]
pub(crate) struct DestinationStack {
    /// The destination's name, shared with its metric labels.
    pub(crate) name: Label,
    /// For requests that match none of `routes`.
    pub(crate) service: DestinationService,
    /// Faults injected into requests that match none of `routes`.
    pub(crate) faults: Option<Arc<Faults>>,
    /// In the order written; `table` finds the one a request takes.
    routes: Box<[RouteStack]>,
    table: RouteTable,
    spec: DestinationSpec,
    balance: Balance,
}

/// One named route of a destination and its stack.
#[derive(Debug)]
pub(crate) struct RouteStack {
    /// The route's name, its metric label.
    pub(crate) name: Label,
    pub(crate) service: DestinationService,
    /// Its filters, in order; shared with the requests that take it.
    pub(crate) filters: Arc<[Filter]>,
    /// The faults it injects.
    pub(crate) faults: Option<Arc<Faults>>,
    /// Where its `RequestMirror` filters send copies.
    pub(crate) mirrors: Box<[RouteMirror]>,
    /// Its replay buffer: the longest body a retry, or a mirror, copies.
    pub(crate) max_body: u64,
    /// Its `backendRefs`, resolved where they can be; empty: the destination's own split.
    backends: Box<[(RouteTarget, u32)]>,
    total_weight: u32,
}

/// One `RequestMirror` of a route.
#[derive(Debug)]
pub(crate) struct RouteMirror {
    pub(crate) target: RouteTarget,
    /// The service copies go to.
    pub(crate) service: Label,
    pub(crate) percent: f64,
    /// Copies in flight from this route to it.
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
}

/// Where a route sends a request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RouteTarget {
    /// Through the route's stack, to the destination split as it splits itself.
    Split,
    /// Through the route's stack, to this backend of the destination's balancer (out of range
    /// when the version has no endpoints, which fails the request as having none).
    Backend(usize),
    /// To another destination, through that destination's own stack.
    Service {
        name: String,
        version: Option<String>,
    },
}

// === impl RouteStack ===

impl RouteStack {
    /// Where this request goes: one of the route's backends by weight.
    pub(crate) fn target(&self) -> &RouteTarget {
        match &*self.backends {
            [] => &RouteTarget::Split,
            [(only, _)] => only,
            backends => weighted::draw(backends.iter().map(|(_, w)| *w), self.total_weight)
                .and_then(|i| backends.get(i))
                .map_or(&RouteTarget::Split, |(target, _)| target),
        }
    }
}

impl RouteTarget {
    /// `backend` of a route of the destination `own`, whose balancer is `balance`.
    fn of(backend: &BackendRef, own: &str, balance: &Balance) -> Self {
        match (&backend.version, backend.service == own) {
            (None, true) => Self::Split,
            (Some(version), true) => {
                Self::Backend(balance.backend_of(version).unwrap_or(usize::MAX))
            }
            (version, false) => Self::Service {
                name: backend.service.clone(),
                version: version.clone(),
            },
        }
    }
}

/// What stacks are built with.
pub(crate) struct BuildContext<'a> {
    pub(crate) identity: &'a Identity,
    pub(crate) connect_timeout: Duration,
    pub(crate) metrics: &'a Metrics,
}

// === impl Destinations ===

impl Destinations {
    /// The table of the bootstrap file's destinations (the control plane replaces it when
    /// there is one).
    pub(crate) fn from_config(
        config: &Config,
        identity: &Identity,
        metrics: &Metrics,
    ) -> Result<Self, CredentialsError> {
        let cx = BuildContext {
            identity,
            connect_timeout: config.connect_timeout,
            metrics,
        };
        let specs = config
            .destinations
            .iter()
            .map(|(name, dest)| (name.clone(), DestinationSpec::from(dest)));
        Self::build(specs, &cx, None)
    }

    /// Builds the table, keeping from `previous` what is unchanged.
    pub(crate) fn build(
        specs: impl IntoIterator<Item = (String, DestinationSpec)>,
        cx: &BuildContext<'_>,
        previous: Option<&Destinations>,
    ) -> Result<Self, CredentialsError> {
        let mut by_name = HashMap::new();
        for (name, spec) in specs {
            let old = previous.and_then(|p| p.by_name.get(&name));
            let stack = match old {
                Some(old) if old.spec == spec => old.clone(),
                _ => Arc::new(DestinationStack::build(&name, spec, cx, old.map(|o| &**o))?),
            };
            by_name.insert(name, stack);
        }
        let (by_virtual_address, by_endpoint) = address_index(&by_name);
        let table = Self {
            by_name,
            by_virtual_address,
            by_endpoint,
        };
        if let Some(previous) = previous {
            for (name, addr) in previous.endpoint_addrs() {
                if !table.has_endpoint(name, addr) {
                    cx.metrics.forget_endpoint(name, addr);
                }
            }
        }
        Ok(table)
    }

    /// Every endpoint of every destination, as `(destination, address)`.
    fn endpoint_addrs(&self) -> impl Iterator<Item = (&str, SocketAddr)> {
        self.by_name.iter().flat_map(|(name, stack)| {
            stack
                .balance
                .endpoints()
                .map(move |endpoint| (name.as_str(), endpoint.addr()))
        })
    }

    /// Whether `destination` has an endpoint at `addr`.
    fn has_endpoint(&self, destination: &str, addr: SocketAddr) -> bool {
        self.by_name
            .get(destination)
            .is_some_and(|stack| stack.balance.endpoints().any(|e| e.addr() == addr))
    }

    /// The destination called `name`, if this sidecar may call it.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<DestinationStack>> {
        self.by_name.get(name).cloned()
    }

    /// The destination a connection redirected here was sent to, by its original destination:
    /// a destination's virtual address (any port), else the `ip:port` of one of its
    /// endpoints (an app that dialled an instance directly). Two hash lookups, no allocation.
    ///
    /// For the outbound listener's redirected connections; an endpoint shared by two
    /// destinations maps to the first by name.
    pub(crate) fn by_address(&self, addr: SocketAddr) -> Option<(&str, Arc<DestinationStack>)> {
        let ip = addr.ip().to_canonical();
        let name = self
            .by_virtual_address
            .get(&ip)
            .or_else(|| self.by_endpoint.get(&SocketAddr::new(ip, addr.port())))?;
        let (name, stack) = self.by_name.get_key_value(name)?;
        Some((name.as_str(), stack.clone()))
    }

    /// The destinations with a listener of their own (`protocol: tcp`, or `http` with
    /// `listen`), by name.
    pub(crate) fn listeners(&self) -> impl Iterator<Item = (&str, TcpDestination)> {
        self.by_name
            .iter()
            .filter_map(|(name, stack)| Some((name.as_str(), stack.listener()?)))
    }

    /// Endpoints ejected right now, as `destination/address`.
    pub(crate) fn ejected(&self) -> Vec<String> {
        let mut ejected: Vec<String> = self
            .by_name
            .iter()
            .flat_map(|(name, stack)| {
                stack
                    .balance
                    .ejected()
                    .into_iter()
                    .map(move |addr| format!("{name}/{addr}"))
            })
            .collect();
        ejected.sort();
        ejected
    }
}

/// The address indexes of a table, built once with it. Names are visited in order, so when
/// two destinations claim one address the first by name keeps it, on every build.
fn address_index(
    by_name: &HashMap<String, Arc<DestinationStack>>,
) -> (HashMap<IpAddr, String>, HashMap<SocketAddr, String>) {
    let mut stacks: Vec<(&String, &Arc<DestinationStack>)> = by_name.iter().collect();
    stacks.sort_by_key(|(name, _)| *name);
    let mut virtual_addresses = HashMap::new();
    let mut endpoints = HashMap::new();
    for (name, stack) in stacks {
        let spec = &stack.spec;
        if let Some(ip) = spec.virtual_address {
            virtual_addresses.entry(ip).or_insert_with(|| name.clone());
        }
        for addr in spec.backends.iter().flat_map(|b| &b.endpoints) {
            let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
            endpoints.entry(addr).or_insert_with(|| name.clone());
        }
    }
    (virtual_addresses, endpoints)
}

// === impl DestinationStack ===

impl DestinationStack {
    /// For a `protocol: tcp` destination, its listener and its app's port; `None` for an
    /// HTTP destination, with or without a listener.
    pub(crate) fn tcp(&self) -> Option<TcpDestination> {
        self.spec.tcp.filter(|tcp| !tcp.detect)
    }

    /// Whether a connection redirected to `port` of the destination is tunnelled at once,
    /// without detection: a `protocol: tcp` destination, or an opaque port of its Service.
    pub(crate) fn skips_detection(&self, port: u16) -> bool {
        self.tcp().is_some() || self.spec.opaque_ports.contains(&port)
    }

    /// The destination's own listener, whether it detects or only tunnels.
    pub(crate) fn listener(&self) -> Option<TcpDestination> {
        self.spec.tcp
    }

    /// The destination's `timeout`, if it has one; it bounds an upgrade's wait for its answer.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.spec.policy.timeout
    }

    /// The balancer alone (steps 6 to 8, no timeout, limits or retries), for TCP tunnels: a
    /// stream's bytes cannot be replayed, so a tunnel is opened once, on one endpoint.
    pub(crate) fn balance(&self) -> &Balance {
        &self.balance
    }

    /// The route a request takes, if any matches, and the match that took it.
    pub(crate) fn route(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<(&RouteStack, Matched<'_>)> {
        let matched = self.table.find(method, uri, headers)?;
        Some((self.routes.get(matched.route)?, matched))
    }

    /// The stack of one destination, layers in request order. Endpoints of `previous` that
    /// remain are reused with their connections.
    fn build(
        name: &str,
        spec: DestinationSpec,
        cx: &BuildContext<'_>,
        previous: Option<&DestinationStack>,
    ) -> Result<Self, CredentialsError> {
        let tls = cx.identity.client_config(&spec.identity)?;
        let policy = &spec.policy;
        let m = cx.metrics.destination(name);
        let label: Arc<str> = name.into();
        let reusable: HashMap<SocketAddr, &Arc<Endpoint>> = previous
            .map(|p| {
                p.balance
                    .endpoints()
                    .filter(|e| *e.peer() == spec.identity)
                    .map(|e| (e.addr(), e))
                    .collect()
            })
            .unwrap_or_default();
        let backends: Vec<Backend> = spec
            .backends
            .iter()
            .map(|backend| Backend {
                version: backend.version.clone(),
                weight: backend.weight,
                endpoints: backend
                    .endpoints
                    .iter()
                    .map(|addr| {
                        let endpoint = match reusable.get(addr) {
                            Some(endpoint) => Arc::clone(endpoint),
                            None => Arc::new(
                                Endpoint::new(
                                    *addr,
                                    spec.identity.clone(),
                                    name,
                                    tls.clone(),
                                    cx.connect_timeout,
                                )
                                .watching(cx.identity.trust_changes()),
                            ),
                        };
                        (endpoint, cx.metrics.endpoint(name, *addr))
                    })
                    .collect(),
            })
            .collect();
        let endpoint_count = backends.iter().map(|b| b.endpoints.len()).sum();
        let outlier = Outlier::new(
            policy.circuit_breaker,
            endpoint_count,
            m.ejected_endpoints.clone(),
        );
        let balance = Balance::split(
            label.clone(),
            backends,
            policy.load_balancer,
            outlier,
            previous.map(|p| &p.balance),
        );
        // Shared by every route's stack: one set of limits, one budget, one balancer.
        let shed = ShedLayer::new(&policy.circuit_breaker, label.clone(), m.shed.clone());
        let retry = RetryLayer::new(policy.retries.clone(), m.clone());
        let stack = |timeout, retry: RetryLayer, per_try_timeout| {
            ServiceBuilder::new()
                // 5a: the whole request, queueing and every try included, or 504.
                .layer(TimeoutLayer::new(
                    timeout,
                    timeout::Kind::Request,
                    label.clone(),
                    m.request_timeouts.clone(),
                ))
                // 7a: max_requests in flight, max_pending waiting, the rest shed with 503 at
                // once.
                .layer(shed.clone())
                // 5b: budgeted retries with backoff; each try re-enters the balancer below.
                .layer(retry)
                // 5c: one try.
                .layer(TimeoutLayer::new(
                    per_try_timeout,
                    timeout::Kind::PerTry,
                    label.clone(),
                    m.per_try_timeouts.clone(),
                ))
                // 4, 6 and 7b: pick a backend by weight, an endpoint in it (skipping ejected
                // ones); 8: its pooled mTLS connection.
                .service(balance.clone())
        };
        let routes = policy
            .routes
            .iter()
            .map(|route| {
                let backends: Box<[(RouteTarget, u32)]> = route
                    .backend_refs
                    .iter()
                    .map(|b| (RouteTarget::of(b, name, &balance), b.weight))
                    .collect();
                RouteStack {
                    name: route.name.as_str().into(),
                    service: stack(
                        route.timeout,
                        retry.for_route(route.retries.clone()),
                        route.retries.per_try_timeout,
                    ),
                    filters: route.filters.clone().into(),
                    faults: Faults::new(&route.fault, cx.metrics, name, &route.name),
                    mirrors: route
                        .filters
                        .iter()
                        .filter_map(|f| match f {
                            Filter::RequestMirror { mirror } => Some(RouteMirror {
                                target: RouteTarget::of(&mirror.backend_ref, name, &balance),
                                service: mirror.backend_ref.service.as_str().into(),
                                percent: mirror.percent,
                                in_flight: Arc::new(tokio::sync::Semaphore::new(
                                    super::mirror::MAX_IN_FLIGHT,
                                )),
                            }),
                            _ => None,
                        })
                        .collect(),
                    max_body: route.retries.max_buffered_body,
                    // Saturating, as the traffic split's: weights on the wire are not bounded.
                    total_weight: backends
                        .iter()
                        .fold(0, |sum: u32, (_, w)| sum.saturating_add(*w)),
                    backends,
                }
            })
            .collect();
        let table = RouteTable::new(&policy.routes);
        let service = stack(policy.timeout, retry, policy.retries.per_try_timeout);
        Ok(Self {
            name: name.into(),
            service,
            faults: Faults::new(&policy.fault, cx.metrics, name, ""),
            routes,
            table,
            spec,
            balance,
        })
    }
}

#[cfg(test)]
mod tests;
