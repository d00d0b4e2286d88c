//! What stops a chaos run before it has a report. A fault that fails during the run does not:
//! it is noted in the report, which then says the run proves nothing.

use std::path::PathBuf;

/// What stops the run before it has a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] crate::datapath::Error),
    #[error(
        "{} not found; build it first: cargo build --release -p mesh-sidecar \
         -p mesh-control-plane -p mesh-testkit -p mesh-benches",
        .0.display()
    )]
    MissingBinary(PathBuf),
    #[error("admin API: {0}")]
    Admin(String),
    #[error("setup: {0}")]
    Setup(String),
}
