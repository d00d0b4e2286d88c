//! Step 6: pick an endpoint of the destination.
//!
//! Round robin: every endpoint gets its turn, with one atomic increment per request and no
//! lock. Endpoints keep their pooled connection across requests, so rotating between them does
//! not cost handshakes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::connect::Endpoint;

/// Rotates over a fixed set of endpoints.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

// === impl RoundRobin ===

impl RoundRobin {
    pub(crate) fn new(endpoints: Vec<Arc<Endpoint>>) -> Self {
        Self {
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint, or `None` when the destination has none.
    pub(crate) fn pick(&self) -> Option<&Arc<Endpoint>> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn endpoint(port: u16) -> Arc<Endpoint> {
        let creds_free_config = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        );
        Arc::new(Endpoint::new(
            ([127, 0, 0, 1], port).into(),
            "spiffe://mesh.local/ns/default/sa/x".parse().unwrap(),
            "x",
            creds_free_config,
            Duration::from_secs(1),
        ))
    }

    #[test]
    fn every_endpoint_gets_its_turn() {
        let rr = RoundRobin::new(vec![endpoint(1), endpoint(2), endpoint(3)]);
        let ports: Vec<u16> = (0..6).map(|_| rr.pick().unwrap().addr().port()).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn no_endpoints_is_none() {
        assert!(RoundRobin::new(Vec::new()).pick().is_none());
    }
}
