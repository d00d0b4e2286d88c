//! Step 10: is this caller allowed to call this service? The policy and its rules live in
//! `mesh_api::authorization`, shared with the control plane that validates and pushes it; here
//! is the check each inbound request passes before it is forwarded: the caller, and the
//! method and path of its request for the policy's `rules`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Method, Request};

use super::identify::Caller;
use crate::headers::TUNNEL;
use crate::metrics::Metrics;

pub use mesh_api::authorization::{AuthorizationPolicy, Decision, Principal, Unauthorized};

/// Who may call this service.
#[derive(Debug)]
pub(crate) struct Authorization {
    /// Replaced whole when the control plane pushes a new policy.
    policy: ArcSwap<AuthorizationPolicy>,
    trust_domain: String,
}

// === impl Authorization ===

impl Authorization {
    pub(crate) fn new(policy: AuthorizationPolicy, trust_domain: String) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            trust_domain,
        }
    }

    /// Puts `policy` in force for the requests that arrive from now on.
    pub(crate) fn set(&self, policy: AuthorizationPolicy) {
        self.policy.store(Arc::new(policy));
    }

    /// Refuses a caller the policy does not let make this request to `service`; refusals are
    /// counted by caller. A TCP stream (`x-mesh-tunnel`, an app's CONNECT or a `tcp`
    /// destination's connection) has no path: its rules are those for CONNECT.
    pub(crate) fn check<B>(
        &self,
        caller: &Caller,
        service: &str,
        req: &Request<B>,
        metrics: &Metrics,
    ) -> Result<(), Unauthorized> {
        let tunnel = req.headers().contains_key(TUNNEL)
            || (req.method() == Method::CONNECT
                && req.extensions().get::<hyper::ext::Protocol>().is_none());
        let (method, path) = if tunnel {
            (Method::CONNECT.as_str(), "")
        } else {
            (req.method().as_str(), req.uri().path())
        };
        self.policy
            .load()
            .check(&caller.id, service, &self.trust_domain, method, path)
            .inspect_err(|_| metrics.authorization_denied(&caller.label))
    }
}
