//! Leader election with Lease `mesh-control-plane` (coordination.k8s.io/v1) of the control
//! plane's namespace: one replica at a time decides the work only one may do.
//!
//! Every `renew_every` each replica reads the Lease:
//! - none: it creates the Lease naming itself (create is atomic: one replica wins);
//! - held by itself: it renews `renewTime` over the version it read;
//! - held by another: it notes when it first saw that version; once the version has not moved
//!   for the lease's duration (`leaseDurationSeconds`) on its own clock, the holder is gone,
//!   and it takes the Lease over that version (of several replicas trying, one wins);
//! - released (no holder): it takes it at once.
//!
//! A leader believes it leads only until two thirds of a lease duration after it *sent* its
//! last successful renewal, while others wait a whole duration after they *saw* it: two
//! replicas never both believe they lead. A clean stop releases the Lease (holder cleared), so
//! a successor takes over within one `renew_every`, not one lease duration.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::mesh::{Leadership, Replicas};

/// How the replicas elect their leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionOptions {
    /// How long the Lease holds without renewal (whole seconds, at least one): how long work
    /// waits after a leader dies without releasing it.
    pub lease_duration: Duration,
    /// How often the leader renews, and the others look at the Lease.
    pub renew_every: Duration,
}

impl Default for ElectionOptions {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }
}

impl ElectionOptions {
    /// Checks that a leader renews several times per lease.
    pub fn check(&self) -> Result<(), String> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err(format!(
                "lease duration {} is under one second",
                humantime::format_duration(self.lease_duration)
            ));
        }
        if self.renew_every.is_zero() || self.renew_every * 3 > self.lease_duration {
            return Err(format!(
                "renewing every {} does not fit three renewals in the lease duration {}",
                humantime::format_duration(self.renew_every),
                humantime::format_duration(self.lease_duration)
            ));
        }
        Ok(())
    }

    /// The Lease's `leaseDurationSeconds`.
    fn seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// This replica's part in the election.
#[derive(Debug)]
pub(crate) struct Election {
    api: Api<Lease>,
    namespace: String,
    replica: String,
    options: ElectionOptions,
    seen: RwLock<Seen>,
}

/// What this replica last learnt.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// The Lease's holder as last read or written.
    holder: Option<String>,
    /// Until when this replica may act as leader (its last renewal's send time plus two
    /// thirds of a lease duration).
    leading_until: Option<Instant>,
}

/// The version of the Lease another replica holds, and when this replica first saw it.
struct Observed {
    version: Option<String>,
    at: Instant,
}

impl Election {
    pub(crate) fn new(
        client: kube::Client,
        namespace: &str,
        replica: &str,
        options: ElectionOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            replica: replica.to_owned(),
            options,
            seen: RwLock::new(Seen::default()),
        })
    }

    fn seen(&self) -> Seen {
        self.seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_seen(&self, seen: Seen) {
        *self.seen.write().unwrap_or_else(PoisonError::into_inner) = seen;
    }

    fn leading(&self) -> bool {
        self.seen()
            .leading_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Takes part until `shutdown`, then releases the Lease if it holds it.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut observed: Option<Observed> = None;
        let mut held: Option<Lease> = None;
        let mut was_leading = false;
        loop {
            if let Some(lease) = self.step(&mut observed, held.take()).await {
                held = Some(lease);
            }
            let leading = self.leading();
            if leading != was_leading {
                if leading {
                    tracing::info!(replica = %self.replica, lease = %self.name(), "leading");
                } else {
                    tracing::warn!(replica = %self.replica, lease = %self.name(), "no longer leading");
                }
                was_leading = leading;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.options.renew_every) => {}
            }
        }
        self.release(held).await;
    }

    fn name(&self) -> String {
        format!("{}/{}", self.namespace, mesh_kube::names::LEASE)
    }

    /// One look at the Lease; returns it when this replica holds it (as written).
    async fn step(&self, observed: &mut Option<Observed>, held: Option<Lease>) -> Option<Lease> {
        let sent = Instant::now();
        let current = match self.api.get_opt(mesh_kube::names::LEASE).await {
            Ok(current) => current,
            Err(e) => {
                tracing::warn!(lease = %self.name(), error = %e, "cannot read the Lease");
                return held;
            }
        };
        let Some(lease) = current else {
            return self.create(sent).await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        match holder {
            Some(holder) if holder == self.replica => self.write(lease, sent, false).await,
            Some(holder) => {
                let version = lease.metadata.resource_version.clone();
                self.set_seen(Seen {
                    holder: Some(holder),
                    leading_until: None,
                });
                let fresh = observed.as_ref().is_none_or(|o| o.version != version);
                if fresh {
                    *observed = Some(Observed {
                        version,
                        at: Instant::now(),
                    });
                    return None;
                }
                let duration = spec
                    .lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map_or(self.options.lease_duration, Duration::from_secs);
                let expired = observed
                    .as_ref()
                    .is_some_and(|o| o.at.elapsed() >= duration);
                if expired {
                    self.write(lease, sent, true).await
                } else {
                    None
                }
            }
            None => {
                // Released: nobody leads until a replica takes it.
                self.set_seen(Seen::default());
                self.write(lease, sent, true).await
            }
        }
    }

    async fn create(&self, sent: Instant) -> Option<Lease> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(mesh_kube::names::LEASE.to_owned()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.replica.clone()),
                lease_duration_seconds: Some(self.options.seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                self.lead(sent);
                Some(created)
            }
            Err(e) => {
                tracing::debug!(lease = %self.name(), error = %e, "another replica created the Lease first");
                None
            }
        }
    }

    /// Renews (or, `acquire`, takes over) the Lease over the version read.
    async fn write(&self, mut lease: Lease, sent: Instant, acquire: bool) -> Option<Lease> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if acquire {
            spec.holder_identity = Some(self.replica.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.lease_duration_seconds = Some(self.options.seconds());
        spec.renew_time = Some(now);
        match self
            .api
            .replace(mesh_kube::names::LEASE, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.lead(sent);
                Some(written)
            }
            Err(e) => {
                // Not renewed: leadership lapses on its own at the deadline.
                tracing::warn!(lease = %self.name(), error = %e, acquire, "cannot write the Lease");
                None
            }
        }
    }

    fn lead(&self, sent: Instant) {
        self.set_seen(Seen {
            holder: Some(self.replica.clone()),
            leading_until: Some(sent + self.options.lease_duration * 2 / 3),
        });
    }

    /// Clears the holder of a Lease this replica holds, so a successor need not wait.
    async fn release(&self, held: Option<Lease>) {
        let leading = self.leading();
        self.set_seen(Seen::default());
        let Some(mut lease) = held.filter(|_| leading) else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        match self
            .api
            .replace(mesh_kube::names::LEASE, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name(), "released the Lease"),
            Err(e) => tracing::warn!(lease = %self.name(), error = %e, "cannot release the Lease"),
        }
    }
}

impl Leadership for Election {
    fn view(&self) -> Replicas {
        let seen = self.seen();
        let leading = seen
            .leading_until
            .is_some_and(|until| Instant::now() < until);
        Replicas {
            replica: self.replica.clone(),
            leading,
            leader: seen.holder,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_renews_several_times_per_lease() {
        assert!(ElectionOptions::default().check().is_ok());
        let short = ElectionOptions {
            lease_duration: Duration::from_secs(2),
            renew_every: Duration::from_secs(1),
        };
        let err = short.check().unwrap_err();
        assert!(err.contains("three renewals"), "{err}");
        let tiny = ElectionOptions {
            lease_duration: Duration::from_millis(500),
            renew_every: Duration::from_millis(100),
        };
        assert!(tiny.check().unwrap_err().contains("under one second"));
    }
}
