//! Why minting, signing or storing a certificate failed.

use std::io;
use std::path::PathBuf;

use mesh_api::spiffe;

/// Errors from minting or storing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or the key.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A name that cannot appear in a SPIFFE ID.
    #[error("{what}: {source}")]
    InvalidName {
        /// Which part of the identity.
        what: &'static str,
        /// The name and the rule it breaks.
        source: spiffe::InvalidName,
    },
    /// A certificate signing request that cannot be parsed or whose signature is wrong.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(rcgen::Error),
    /// A certificate signing request for another identity than the one allowed.
    #[error("the request asks for {requested}, but may only ask for {allowed}")]
    WrongIdentity {
        /// What the request names (its URI SANs).
        requested: String,
        /// The identity the caller proved.
        allowed: String,
    },
    /// A name a serving certificate cannot carry.
    #[error("serving certificate name {name:?} {reason}")]
    InvalidServingName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The names do not make a valid SPIFFE ID.
    #[error("invalid identity: {0}")]
    Identity(#[from] spiffe::InvalidSpiffeId),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The CA files in a state directory do not fit together.
    #[error("{path}: {message}")]
    InvalidState {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}
