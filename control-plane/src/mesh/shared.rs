//! A CA shared by several replicas, and which replica leads: in Kubernetes mode the CA's state
//! lives in the cluster and only the leader changes it. The mesh sees both through these
//! traits, so it knows nothing of where they are kept.

use std::fmt;

use futures_util::future::BoxFuture;
use serde::Serialize;

use super::rotation::RotationSummary;
use crate::ca::Authority;

/// Where a CA shared with other replicas is kept. A rotation step is in force only once stored
/// there; the state directory is this replica's copy of it.
pub(crate) trait SharedCa: Send + Sync + fmt::Debug {
    /// Stores the CA the state directory holds now, over the version last read (never over a
    /// change this replica has not seen).
    fn store(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Reads the CA as stored, into the state directory, and opens it.
    fn load(&self) -> BoxFuture<'_, Result<Authority, String>>;
    /// Writes the CA as last read or stored with success into the state directory again, and
    /// opens it: what undoes a step when the store holds nothing usable.
    fn restore(&self) -> BoxFuture<'_, Result<Authority, String>>;
}

/// Which replica may decide the work only one may do.
pub(crate) trait Leadership: Send + Sync + fmt::Debug {
    /// Who leads, as this replica sees it now.
    fn view(&self) -> Replicas;
}

/// The replicas' part of `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Replicas {
    /// This replica's name.
    pub replica: String,
    /// Whether this replica leads (holds the lease and renewed it in time).
    pub leading: bool,
    /// The lease's holder as last read, `None` while no one holds it.
    pub leader: Option<String>,
}

/// The other replicas, as far as rotation needs them: what their sidecars trust and hold.
pub(crate) trait Peers: Send + Sync + fmt::Debug {
    /// Each other live replica's name and latest summary.
    fn summaries(&self) -> BoxFuture<'_, Result<Vec<(String, RotationSummary)>, String>>;
}
