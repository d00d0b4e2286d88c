//! The contract between sidecars and the control plane.
//!
//! # Layout
//! - [`spiffe`]: SPIFFE IDs and the names they are built from; the only place that knows the
//!   `spiffe://<trust-domain>/ns/<namespace>/sa/<service>` format.
//! - [`policy`]: resilience policy of a destination, with its defaults and validation.
//! - [`retry`]: retries, their backoff and budget, shared by a destination's policy and its
//!   routes.
//! - [`backend_ref`]: where a route sends requests or copies: a service or one of its versions.
//! - [`route`]: routes within a destination in the shape of Gateway API HTTPRoute rules, with
//!   their own timeout, retries and backends; [`route_match`] their matches and precedence,
//!   [`route_filter`] their filters.
//! - [`authorization`]: who may call a service, and by method and path.
//! - [`fault`]: delays and aborts the caller's sidecar injects.
//! - [`rate_limit`]: how many requests a service's sidecars let in, in all and per caller.
//! - [`tcp`]: `protocol: tcp` destinations, their local listener and their app's port.
//! - [`proto`]: the gRPC API (`proto/mesh/v1/mesh.proto`) and its mapping to policy types.
//! - [`tls`]: SPIFFE verification and live certificates and bundles, for both ends.
//! - [`certify`]: a key pair and CSR made locally, and `Identity.Certify` with a join token:
//!   how a sidecar (or a test acting as one) gets its certificate.
//! - [`channel`]: gRPC channels to the control plane, verified by its SPIFFE ID;
//!   [`host_port`]: the address they dial, an IP or a name resolved at each connect.
//! - [`trace_context`]: the trace headers an app copies from the request it serves onto the
//!   calls it makes.
//! - [`validate`]: errors collected with their field paths.
//! - [`stats`]: the sidecar's `/stats` document, which operator tools add up across sidecars.

#![deny(missing_docs)]

pub mod admin_host;
pub mod authorization;
pub mod backend_ref;
pub mod certify;
pub mod channel;
pub mod fault;
pub mod gateway;
pub mod host_port;
pub mod log_limit;
pub mod policy;
pub mod proto;
pub mod rate_limit;
pub mod retry;
pub mod route;
pub mod route_filter;
pub mod route_match;
pub mod spiffe;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod trace_context;
pub mod validate;
