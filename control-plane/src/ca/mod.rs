//! Certificate authorities for SPIFFE workload certificates.
//!
//! Each leaf carries exactly one identity, as a URI SAN
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service>`, and no DNS name: sidecars verify each
//! other by that URI, not by host name. Keys are ECDSA P-256, the curve every TLS stack supports.
//!
//! - [`DevCa`]: one root that also makes key pairs, for development files and tests.
//! - [`Authority`]: the control plane's CA, kept in its state directory, with several trusted
//!   roots (for rotation) or an operator's intermediate; it signs CSRs for workloads, and the
//!   control plane's own certificates: its API's SPIFFE one and the webhook's serving one
//!   (DNS and IP SANs, a [`ServingName`] each, the one kind of leaf without a SPIFFE ID).
//!
//! - `x509`: the fields of roots and leaves, and signing a CSR; `files`: the state directory's
//!   files; `error`: [`CertError`].

mod authority;
mod dev;
mod error;
mod files;
mod x509;

pub use self::authority::{Authority, Issued, RootInfo, RotationError};
pub use self::dev::DevCa;
pub use self::error::CertError;
pub(crate) use self::files::{create_private_dir, write_atomic};
pub use self::x509::{DEFAULT_LEAF_LIFETIME, Leaf, LeafSpec, ServingName, root_id, sha256_hex};
pub(crate) use self::x509::{hex, random_bytes};
