//! Outbound: routes plain HTTP from the local app to other services, over mutual TLS.
//!
//! The request path, one module per step:
//! 1. accept, detect HTTP/1.1 or HTTP/2 (`serve`)
//! 2. name the destination service from Host / :authority ([`destination`])
//! 3. look up its policy and endpoints in the current table ([`policy`])
//! 6. pick an endpoint ([`balance`])
//! 8. send over the endpoint's pooled mTLS HTTP/2 connection, which verifies the peer's
//!    SPIFFE ID ([`connect`])
//!
//! Steps 4 (split), 5 (timeouts and retries) and 7 (circuit breaking) slot in between 3 and 8.
//! Errors at any step become one synthetic response in `error::rescue`.

pub(crate) mod balance;
pub(crate) mod connect;
pub(crate) mod destination;
pub(crate) mod policy;

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{EXPECT, HOST};
use http::uri::Authority;
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Body;
use crate::error::{self, BoxError, NoAuthority, NoEndpoints, NoRoute, Unsupported};
use crate::headers::{
    ORIG_PROTO, ORIG_PROTO_HTTP1, absolute_uri, forwarded_response, remove_hop_by_hop,
};
use crate::metrics::{Direction, Metrics};

use self::policy::{DestinationStack, Destinations};

/// Label used for requests whose destination is not known, to bound metric cardinality.
const UNKNOWN: &str = "unknown";

/// The outbound proxy of one sidecar.
#[derive(Debug)]
pub(crate) struct Outbound {
    service: String,
    destinations: watch::Receiver<Arc<Destinations>>,
    metrics: Arc<Metrics>,
}

// === impl Outbound ===

impl Outbound {
    pub(crate) fn new(
        service: String,
        destinations: watch::Receiver<Arc<Destinations>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            service,
            destinations,
            metrics,
        }
    }

    /// Proxies one request; every failure becomes a response, so this never errors.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let (destination, result) = match self.route(&req) {
            Ok((stack, authority)) => {
                let name = stack.name.clone();
                (name, self.forward(&stack, authority, req).await)
            }
            Err(err) => (UNKNOWN.to_owned(), Err(err)),
        };
        let rsp = match result {
            Ok(rsp) => forwarded_response(rsp),
            Err(err) => {
                let (reason, rsp) = error::rescue(err.as_ref());
                if reason.is_tls() {
                    self.metrics
                        .tls_failure(Direction::Outbound, reason.as_str());
                }
                tracing::warn!(%destination, reason = reason.as_str(), error = %err, "outbound request failed");
                rsp
            }
        };
        self.metrics.request(
            Direction::Outbound,
            &self.service,
            &destination,
            rsp.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        Ok(rsp)
    }

    /// Steps 2 and 3: the destination's stack and the authority to forward.
    fn route<B>(&self, req: &Request<B>) -> Result<(Arc<DestinationStack>, Authority), BoxError> {
        if req.method() == Method::CONNECT {
            return Err(Unsupported {
                method: Method::CONNECT,
            }
            .into());
        }
        let authority = destination::authority(req).ok_or(NoAuthority)?;
        let name = destination::service_name(&authority);
        let stack = self
            .destinations
            .borrow()
            .get(&name)
            .ok_or(NoRoute { destination: name })?;
        Ok((stack, authority))
    }

    /// Steps 6 and 8: pick an endpoint and send.
    async fn forward(
        &self,
        stack: &DestinationStack,
        authority: Authority,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, BoxError> {
        let req = to_peer_request(req, authority)?;
        let endpoint = stack.balancer.pick().ok_or_else(|| NoEndpoints {
            destination: stack.name.clone(),
        })?;
        tracing::trace!(destination = %stack.name, endpoint = %endpoint.addr(), "forwarding");
        endpoint.send(req).await
    }
}

/// Rewrites an app's request for the HTTP/2 hop to the peer sidecar.
///
/// The body is passed through as a stream, never buffered. `Expect: 100-continue` is answered by
/// our own HTTP/1.1 server (it sends `100 Continue` when the body is first read), so it is not
/// forwarded; HTTP/2 has no use for it on the mesh hop.
fn to_peer_request(
    req: Request<Incoming>,
    authority: Authority,
) -> Result<Request<Body>, BoxError> {
    let (mut parts, body) = req.into_parts();
    let http1 = parts.version < Version::HTTP_2;
    remove_hop_by_hop(&mut parts.headers);
    parts.headers.remove(HOST);
    parts.headers.remove(EXPECT);
    // Only a sidecar may say what the app spoke.
    parts.headers.remove(ORIG_PROTO);
    if http1 {
        parts.headers.insert(ORIG_PROTO, ORIG_PROTO_HTTP1);
    }
    parts.uri = absolute_uri(&parts.uri, authority.as_str())?;
    parts.version = Version::HTTP_2;
    let body = body.map_err(BoxError::from).boxed_unsync();
    Ok(Request::from_parts(parts, body))
}
