//! This sidecar's own identity: its certificate, its key, and the trust bundle.
//!
//! [`Credentials`] turns PEM files into the two rustls configurations the data path needs: a
//! server config for the inbound listener (client certificate required, chained to the trust
//! bundle) and, per destination identity, a client config that presents our certificate and
//! accepts only that identity. Both speak TLS 1.3 only and offer ALPN `h2`, because sidecars
//! always talk HTTP/2 to each other. Configs are built once (per destination, not per request)
//! and shared; TLS work on the request path is limited to new pooled connections.

//!
//! `credentials.rs` loads and checks the files; `live.rs` holds the [`Identity`] in force,
//! swapped whole when the certificate is renewed; `trust.rs` tells open connections when their
//! peer's certificate stops verifying against a changed trust bundle.

mod credentials;
mod live;
mod trust;

pub use self::credentials::{
    ALPN_H2, Credentials, CredentialsError, anonymous_client_config, sha256_hex, trust_store,
};
pub use self::live::Identity;
pub use self::trust::TrustChanges;
pub use mesh_api::spiffe::{
    InvalidSpiffeId, NoIdentity, SpiffeId, describe, id_in_certificate, ids_in_certificate,
};
pub use mesh_api::tls::PeerIdentityMismatch;
