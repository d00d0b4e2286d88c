//! The control-plane client: this sidecar's certificate, registration and configuration.
//!
//! - [`certify`]: a key pair made here and a CSR sent with the service's join token (the
//!   private key never leaves the process); renewal at about two thirds of the lifetime, or
//!   soon after the control plane starts issuing from another CA (root rotation).
//! - [`register`]: the instance announced and kept alive by heartbeats, which also report what
//!   `meshctl status` shows (applied version, certificate expiry, ejected endpoints).
//! - [`watch`]: the stream of snapshots, each applied whole or not at all, and acknowledged.
//!
//! Static stability: when the control plane is unreachable, everything keeps running on the last
//! snapshot and certificate, and every loop reconnects with capped, jittered backoff.

pub(crate) mod apply;
pub(crate) mod backoff;
pub(crate) mod certify;
pub(crate) mod channel;
pub(crate) mod register;
pub(crate) mod watch;
