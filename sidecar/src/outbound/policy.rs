//! Step 3: look up the destination's policy.
//!
//! The table of destinations is built once per configuration (one pooled client per endpoint,
//! TLS configs made up front) and published whole through a `watch` channel. A request clones
//! one `Arc` out of it; nothing is copied per request, and a new table never disturbs requests
//! already holding the old one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Destination;
use crate::identity::{Credentials, CredentialsError};

use super::balance::RoundRobin;
use super::connect::Endpoint;

/// Every destination this sidecar may call.
#[derive(Debug, Default)]
pub(crate) struct Destinations {
    by_name: HashMap<String, Arc<DestinationStack>>,
}

/// One destination service and the means to reach it.
#[derive(Debug)]
pub(crate) struct DestinationStack {
    pub(crate) name: String,
    pub(crate) balancer: RoundRobin,
}

// === impl Destinations ===

impl Destinations {
    /// Builds the table, with one client config per destination identity.
    pub(crate) fn build<'a>(
        destinations: impl IntoIterator<Item = (&'a String, &'a Destination)>,
        credentials: &Credentials,
        connect_timeout: Duration,
    ) -> Result<Self, CredentialsError> {
        let mut by_name = HashMap::new();
        for (name, dest) in destinations {
            let tls = credentials.client_config(&dest.identity)?;
            let endpoints = dest
                .endpoints
                .iter()
                .map(|addr| {
                    Arc::new(Endpoint::new(
                        *addr,
                        dest.identity.clone(),
                        name,
                        tls.clone(),
                        connect_timeout,
                    ))
                })
                .collect();
            by_name.insert(
                name.clone(),
                Arc::new(DestinationStack {
                    name: name.clone(),
                    balancer: RoundRobin::new(endpoints),
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
