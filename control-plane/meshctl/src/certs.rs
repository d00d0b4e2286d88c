//! The development certificate authority, which lives in the control plane's `ca` module; kept
//! here under its old names for the tools and tests that use them.

pub use mesh_control_plane::ca::{CertError, DEFAULT_LEAF_LIFETIME, DevCa, Leaf, LeafSpec};
