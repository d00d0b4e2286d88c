//! Gateway mode: HTTP from outside the mesh, routed by host and HTTPRoute-shaped rules to mesh
//! services.
//!
//! The listeners and routes are the bootstrap's `gateway:` section, or those the control plane
//! declares, followed live ([`live`]). A request on a gateway listener ([`accept`]) is routed ([`routes`]) to a mesh service, then
//! handed to the outbound proxy as if a local app had called that service by name: its Host
//! and `:authority` become the service's name, so everything the outbound side does applies
//! (the destination's routes and policy, retries, balancing, ejection, mTLS with the gateway's
//! own identity, spans, metrics, access log). The host the client asked for travels on in
//! `x-forwarded-host`.

pub(crate) mod accept;
pub(crate) mod certificates;
pub(crate) mod edge;
pub(crate) mod listener;
pub(crate) mod live;
pub(crate) mod routes;
