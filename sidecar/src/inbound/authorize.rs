//! Step 10: is this caller allowed to call this service? The policy and its check live in
//! `mesh_api::authorization`, shared with the control plane that validates and pushes it.

pub use mesh_api::authorization::{AuthorizationPolicy, Decision, Principal, Unauthorized};
