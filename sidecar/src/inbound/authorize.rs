//! Step 10: is this caller allowed to call this service? The policy and its rules live in
//! `mesh_api::authorization`, shared with the control plane that validates and pushes it; here
//! is the check each inbound request passes before it is forwarded: the caller, and the
//! method and path of its request for the policy's `rules`. A plain caller from outside the
//! mesh, with no identity, is checked against `unauthenticated` instead (see
//! `mesh_api::authorization`).

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Method, Request};

use super::identify::Caller;
use crate::body::BoxError;
use crate::headers::TUNNEL;
use crate::metrics::Metrics;

pub use mesh_api::authorization::{
    AuthorizationPolicy, Decision, Principal, Unauthenticated, UnauthenticatedRefused, Unauthorized,
};

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
    ) -> Result<(), BoxError> {
        let tunnel = req.headers().contains_key(TUNNEL)
            || (req.method() == Method::CONNECT
                && req.extensions().get::<hyper::ext::Protocol>().is_none());
        let (method, path) = if tunnel {
            (Method::CONNECT.as_str(), "")
        } else {
            (req.method().as_str(), req.uri().path())
        };
        let policy = self.policy.load();
        let checked = match &caller.id {
            Some(id) => policy
                .check(id, service, &self.trust_domain, method, path)
                .map_err(BoxError::from),
            None => policy
                .check_unauthenticated(service, method, path)
                .map_err(|refused| match refused {
                    UnauthenticatedRefused::Plain(e) => BoxError::from(e),
                    UnauthenticatedRefused::Rule(e) => BoxError::from(e),
                }),
        };
        checked.inspect_err(|_| metrics.authorization_denied(&caller.label))
    }

    /// Whether a plain connection that is not HTTP may be joined to the app: only when
    /// `unauthenticated` is allow and no rule keeps tunnels for callers it names. A refusal is
    /// counted as the caller `unauthenticated`.
    pub(crate) fn admits_plain_tcp(
        &self,
        caller: &Caller,
        service: &str,
        metrics: &Metrics,
    ) -> bool {
        let admitted = self
            .policy
            .load()
            .check_unauthenticated(service, Method::CONNECT.as_str(), "")
            .is_ok();
        if !admitted {
            metrics.authorization_denied(&caller.label);
        }
        admitted
    }
}
