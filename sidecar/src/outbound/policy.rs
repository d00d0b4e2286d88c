//! Step 3: look up the destination and its stack.
//!
//! The table of destinations is built once per configuration, one stack per destination (its
//! pooled endpoints, TLS configs, breaker state and retry budget made up front), and published
//! whole through a `watch` channel. A request clones one `Arc` out of it; a new table never
//! disturbs requests already holding the old one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tower::ServiceBuilder;

use crate::config::Destination;
use crate::identity::{Credentials, CredentialsError};
use crate::metrics::{Label, Metrics};

use super::balance::Balance;
use super::breaker::Outlier;
use super::connect::Endpoint;
use super::retry::{Retry, RetryLayer};
use super::shed::{Shed, ShedLayer};
use super::timeout::{self, Timeout, TimeoutLayer};

/// Steps 5a to 8 of one destination, as one service type. Every layer clones by `Arc`, so a
/// request takes its own copy of the stack without allocating.
pub(crate) type DestinationService = Timeout<Shed<Retry<Timeout<Balance>>>>;

/// Every destination this sidecar may call.
#[derive(Debug, Default)]
pub(crate) struct Destinations {
    by_name: HashMap<String, Arc<DestinationStack>>,
}

/// One destination service and the stack that reaches it.
#[derive(Debug)]
pub(crate) struct DestinationStack {
    /// The destination's name, shared with its metric labels.
    pub(crate) name: Label,
    pub(crate) service: DestinationService,
}

// === impl Destinations ===

impl Destinations {
    /// Builds the table, with one client config per destination identity.
    pub(crate) fn build<'a>(
        destinations: impl IntoIterator<Item = (&'a String, &'a Destination)>,
        credentials: &Credentials,
        connect_timeout: Duration,
        metrics: &Metrics,
    ) -> Result<Self, CredentialsError> {
        let mut by_name = HashMap::new();
        for (name, dest) in destinations {
            let service = stack(name, dest, credentials, connect_timeout, metrics)?;
            by_name.insert(
                name.clone(),
                Arc::new(DestinationStack {
                    name: name.as_str().into(),
                    service,
                }),
            );
        }
        Ok(Self { by_name })
    }

    /// The destination called `name`, if this sidecar may call it.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<DestinationStack>> {
        self.by_name.get(name).cloned()
    }
}

/// The stack of one destination, layers in request order.
fn stack(
    name: &str,
    dest: &Destination,
    credentials: &Credentials,
    connect_timeout: Duration,
    metrics: &Metrics,
) -> Result<DestinationService, CredentialsError> {
    let tls = credentials.client_config(&dest.identity)?;
    let policy = &dest.policy;
    let m = metrics.destination(name);
    let label: Arc<str> = name.into();
    let endpoints = dest
        .endpoints
        .iter()
        .map(|addr| {
            let endpoint = Endpoint::new(
                *addr,
                dest.identity.clone(),
                name,
                tls.clone(),
                connect_timeout,
            );
            (endpoint, metrics.endpoint(name, *addr))
        })
        .collect::<Vec<_>>();
    let outlier = Outlier::new(
        policy.circuit_breaker,
        endpoints.len(),
        m.ejected_endpoints.clone(),
    );
    Ok(ServiceBuilder::new()
        // 5a: the whole request, queueing and every try included, or 504.
        .layer(TimeoutLayer::new(
            policy.timeout,
            timeout::Kind::Request,
            label.clone(),
            m.request_timeouts.clone(),
        ))
        // 7a: max_requests in flight, max_pending waiting, the rest shed with 503 at once.
        .layer(ShedLayer::new(
            &policy.circuit_breaker,
            label.clone(),
            m.shed.clone(),
        ))
        // 5b: budgeted retries with backoff; each try re-enters the balancer below.
        .layer(RetryLayer::new(policy.retries.clone(), m.clone()))
        // 5c: one try.
        .layer(TimeoutLayer::new(
            policy.retries.per_try_timeout,
            timeout::Kind::PerTry,
            label.clone(),
            m.per_try_timeouts.clone(),
        ))
        // 6 and 7b: choose an endpoint, skipping ejected ones; 8: its pooled mTLS connection.
        .service(Balance::new(
            label,
            endpoints,
            policy.load_balancer,
            outlier,
        )))
}
