//! Entry points into crate-private hot paths, for `benches/hot_paths.rs` only.
//!
//! Each item wraps the code the request path runs and adds no logic of its own, so the
//! benchmarks measure the real thing. This is not a stable API: nothing but the benchmarks
//! should use it, and it changes whenever they need it to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http::uri::Authority;
use rustls::ClientConfig;
use tower::retry::budget::Budget as _;

use crate::classify::Class;
use crate::config::{Destination, DestinationPolicy, LoadBalancer, RetryPolicy};
use crate::identity::{CredentialsError, Identity, SpiffeId};
use crate::metrics::{Label, Metrics, RetryReason};
use crate::outbound::attempts;
use crate::outbound::balance::{Backend, Balance};
use crate::outbound::breaker::Outlier;
use crate::outbound::connect::Endpoint;
use crate::outbound::destination;
use crate::outbound::policy::{BuildContext, DestinationSpec, Destinations};
use crate::outbound::retry::{self, RetryLayer};

/// Stacks are built with this; nothing here ever connects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Step 2: the authority a request names (its URI's, else its `Host` header's).
pub fn authority<B>(req: &Request<B>) -> Option<Authority> {
    destination::authority(req)
}

/// Step 2: the destination service an authority refers to.
pub fn service_name(authority: &Authority) -> String {
    destination::service_name(authority)
}

/// Step 3: the table of destinations, as the sidecar builds it from its bootstrap file.
#[derive(Debug)]
pub struct Table(Destinations);

impl Table {
    /// Builds the table from `(name, destination)` pairs, as `run` does at start-up.
    pub fn build<'a>(
        identity: &Identity,
        metrics: &Metrics,
        destinations: impl IntoIterator<Item = (&'a String, &'a Destination)>,
    ) -> Result<Self, CredentialsError> {
        let cx = BuildContext {
            identity,
            connect_timeout: CONNECT_TIMEOUT,
            metrics,
        };
        let specs = destinations
            .into_iter()
            .map(|(name, dest)| (name.clone(), DestinationSpec::from(dest)));
        Destinations::build(specs, &cx, None).map(Self)
    }

    /// The stack of the destination called `name`, held as a request holds it.
    pub fn get(&self, name: &str) -> Option<impl Sized + use<>> {
        self.0.get(name)
    }

    /// Step 3 in full: the destination called `name`, then the name of the route the request
    /// takes (`None` when none matches), as the outbound handler finds it.
    pub fn route(
        &self,
        name: &str,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Option<Label> {
        let stack = self.0.get(name)?;
        stack
            .route(method, uri, headers)
            .map(|(route, _)| route.name.clone())
    }
}

/// What one request has been through: the record the retry layer and the balancer share.
#[derive(Debug, Default)]
pub struct Attempts(attempts::Attempts);

impl Attempts {
    /// Records a try sent to slot `index`, as the balancer does.
    pub fn record(&self, index: usize) {
        self.0.record(index);
    }
}

/// Step 6: a balancer over weighted backends of real (never connected) endpoints, with the
/// default breaker policy.
#[derive(Clone, Debug)]
pub struct Balancer(Balance);

impl Balancer {
    /// A balancer for `destination` over `backends`, each a weight and its endpoints' addresses;
    /// every endpoint is expected to present `peer` and is reached with `tls`.
    pub fn new(
        destination: &str,
        algorithm: LoadBalancer,
        backends: &[(u32, Vec<SocketAddr>)],
        peer: &SpiffeId,
        tls: &Arc<ClientConfig>,
        metrics: &Metrics,
    ) -> Self {
        let backends: Vec<Backend> = backends
            .iter()
            .map(|(weight, addrs)| Backend {
                version: String::new(),
                weight: *weight,
                endpoints: addrs
                    .iter()
                    .map(|addr| {
                        let endpoint = Endpoint::new(
                            *addr,
                            peer.clone(),
                            destination,
                            tls.clone(),
                            CONNECT_TIMEOUT,
                        );
                        (Arc::new(endpoint), metrics.endpoint(destination, *addr))
                    })
                    .collect(),
            })
            .collect();
        let count = backends.iter().map(|b| b.endpoints.len()).sum();
        let outlier = Outlier::new(
            DestinationPolicy::default().circuit_breaker,
            count,
            metrics.destination(destination).ejected_endpoints,
        );
        Self(Balance::split(
            destination.into(),
            backends,
            algorithm,
            outlier,
            None,
        ))
    }

    /// The slot the next try of a request that has made `attempts` goes to.
    pub fn pick(&self, attempts: &Attempts) -> Option<usize> {
        self.0.pick(Some(&attempts.0))
    }
}

/// Step 5b: the retry budget of one destination, as its retry layer holds it.
#[derive(Clone, Debug)]
pub struct RetryBudget(RetryLayer);

impl RetryBudget {
    /// The budget of a retry layer for `destination` under `policy`.
    pub fn new(destination: &str, policy: RetryPolicy, metrics: &Metrics) -> Self {
        Self(RetryLayer::new(policy, metrics.destination(destination)))
    }

    /// What every request does on entering the retry layer.
    pub fn deposit(&self) {
        self.0.budget().deposit();
    }

    /// What a failed try does before it is retried: whether the budget allows the retry.
    pub fn withdraw(&self) -> bool {
        self.0.budget().withdraw()
    }
}

/// Step 5b: why a try with outcome `class` should be retried under `policy`, if it should.
pub fn retry_reason(policy: &RetryPolicy, class: Class) -> Option<RetryReason> {
    retry::retry_reason(policy, class)
}

/// The request-span starter as `run` makes it: `recording` as with an OTLP endpoint (the
/// spans are recorded; with no processor attached they are then dropped).
pub fn spans(recording: bool) -> crate::telemetry::spans::Spans {
    use opentelemetry::trace::TracerProvider as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    crate::telemetry::spans::Spans::new(provider.tracer("bench"), recording, 1.0)
}
