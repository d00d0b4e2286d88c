//! Root rotation gating: a root becomes the signer only once every live instance runs a
//! snapshot that trusts it, and leaves the bundle only once no live instance holds a certificate
//! it issued. Until a lease has passed after a start, the registry cannot say either.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::registry::Registry;
use crate::ca::{RootInfo, RotationError};

/// Why an admin CA operation was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// The operation is unsafe now; `force` overrides.
    #[error("{0}")]
    Conflict(String),
    /// No such root.
    #[error("{0}")]
    NotFound(String),
    /// The CA refused.
    #[error("{0}")]
    Rotation(#[from] RotationError),
    /// This replica does not lead; the message names the one that does.
    #[error("{0}")]
    NotLeader(String),
}

/// The first snapshot version whose bundle holds each root.
#[derive(Debug, Default)]
pub(super) struct RootsSince(HashMap<String, u64>);

impl RootsSince {
    /// Every root of a CA loaded at start, trusted since `version`.
    pub(super) fn new(roots: Vec<RootInfo>, version: u64) -> Self {
        Self(roots.into_iter().map(|r| (r.id, version)).collect())
    }

    /// Records that root `id` is in bundles from `version` on.
    pub(super) fn added(&mut self, id: &str, version: u64) {
        self.0.insert(id.to_owned(), version);
    }

    /// Forgets roots no longer in the bundle.
    pub(super) fn keep(&mut self, roots: &[RootInfo]) {
        self.0.retain(|id, _| roots.iter().any(|r| &r.id == id));
    }

    /// Whether root `id`'s first version is recorded.
    pub(super) fn knows(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    /// The first version trusting root `id` (0 when unknown).
    pub(super) fn since(&self, id: &str) -> u64 {
        self.0.get(id).copied().unwrap_or(0)
    }
}

/// How long the registry may still be refilling, `up` after a start: until a lease has passed,
/// live sidecars may not have registered again.
pub(super) fn warming_left(up: Duration, lease: Duration) -> Option<Duration> {
    lease.checked_sub(up).filter(|left| !left.is_zero())
}

/// After a restart the registry is empty until sidecars register again; until a lease has
/// passed, it cannot say who trusts what.
pub(super) fn warmed_up(up: Duration, lease: Duration) -> Result<(), AdminError> {
    if up < lease {
        return Err(AdminError::Conflict(format!(
            "the control plane started {:.1}s ago and sidecars may still be registering \
             again; retry after the lease ({}), or force",
            up.as_secs_f64(),
            humantime::format_duration(lease)
        )));
    }
    Ok(())
}

/// Refuses to make root `id` the signer while a live instance has not acknowledged or applied
/// a snapshot from `since` on (the first that trusts it).
pub(super) fn check_use(
    registry: &Registry,
    lease: Duration,
    now: Instant,
    id: &str,
    since: u64,
) -> Result<(), AdminError> {
    let behind: Vec<String> = registry
        .live(lease, now)
        .filter_map(|(key, record)| {
            let ack = registry.ack_of(key).map_or(0, |a| a.acked_version);
            let applied = ack.max(record.applied_version);
            (applied < since).then(|| format!("{}/{} (at {applied})", key.0, key.1))
        })
        .collect();
    if !behind.is_empty() {
        return Err(AdminError::Conflict(format!(
            "{} instance(s) have not acknowledged a snapshot (version {since} or later) \
             that trusts root {id}: {}; wait for them, or force",
            behind.len(),
            sample(&behind)
        )));
    }
    Ok(())
}

/// Refuses to remove `root` while a live instance holds a certificate it issued.
pub(super) fn check_remove(
    registry: &Registry,
    lease: Duration,
    now: Instant,
    root: &RootInfo,
) -> Result<(), AdminError> {
    let holders: Vec<String> = registry
        .live(lease, now)
        .filter(|(_, record)| record.issuer_sha256 == root.sha256)
        .map(|(key, _)| format!("{}/{}", key.0, key.1))
        .collect();
    if !holders.is_empty() {
        return Err(AdminError::Conflict(format!(
            "{} instance(s) still hold a certificate issued by root {}: {}; wait for \
             them to renew, or force",
            holders.len(),
            root.id,
            sample(&holders)
        )));
    }
    Ok(())
}

/// What one replica's live instances say about the roots, for the leader of several to gate
/// rotation on sidecars connected to any replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RotationSummary {
    /// Whether a registry lease has passed since the replica started (before, its sidecars
    /// may still be registering again).
    pub(crate) warm: bool,
    /// The roots of the replica's trust bundle.
    #[serde(default)]
    pub(crate) roots: Vec<String>,
    /// For each root, the live instances that have not acknowledged a snapshot trusting it.
    #[serde(default)]
    pub(crate) behind: BTreeMap<String, Vec<String>>,
    /// For each issuer (hex SHA-256), the live instances holding a certificate from it.
    #[serde(default)]
    pub(crate) holders: BTreeMap<String, Vec<String>>,
}

/// The summary of `registry`'s live instances against `roots` (each trusted since the version
/// `since` gives).
pub(super) fn summary(
    registry: &Registry,
    lease: Duration,
    now: Instant,
    roots: &[RootInfo],
    since: &RootsSince,
    warm: bool,
) -> RotationSummary {
    let mut summary = RotationSummary {
        warm,
        roots: roots.iter().map(|r| r.id.clone()).collect(),
        ..RotationSummary::default()
    };
    for (key, record) in registry.live(lease, now) {
        let name = format!("{}/{}", key.0, key.1);
        let ack = registry.ack_of(key).map_or(0, |a| a.acked_version);
        let applied = ack.max(record.applied_version);
        for root in roots {
            if applied < since.since(&root.id) {
                summary
                    .behind
                    .entry(root.id.clone())
                    .or_default()
                    .push(name.clone());
            }
        }
        if !record.issuer_sha256.is_empty() {
            summary
                .holders
                .entry(record.issuer_sha256.clone())
                .or_default()
                .push(name);
        }
    }
    summary
}

/// Refuses to make root `id` the signer while another replica's sidecars do not all trust it.
pub(super) fn check_use_on(
    replica: &str,
    summary: &RotationSummary,
    id: &str,
) -> Result<(), AdminError> {
    if !summary.warm {
        return Err(AdminError::Conflict(format!(
            "replica {replica} started less than a registry lease ago and its sidecars may \
             still be registering again; retry, or force"
        )));
    }
    if !summary.roots.iter().any(|r| r == id) {
        return Err(AdminError::Conflict(format!(
            "replica {replica} does not trust root {id} yet; retry, or force"
        )));
    }
    match summary.behind.get(id) {
        Some(behind) if !behind.is_empty() => Err(AdminError::Conflict(format!(
            "{} instance(s) of replica {replica} have not acknowledged a snapshot that trusts \
             root {id}: {}; wait for them, or force",
            behind.len(),
            sample(behind)
        ))),
        _ => Ok(()),
    }
}

/// Refuses to remove `root` while another replica's sidecars hold certificates it issued.
pub(super) fn check_remove_on(
    replica: &str,
    summary: &RotationSummary,
    root: &RootInfo,
) -> Result<(), AdminError> {
    if !summary.warm {
        return Err(AdminError::Conflict(format!(
            "replica {replica} started less than a registry lease ago and its sidecars may \
             still be registering again; retry, or force"
        )));
    }
    match summary.holders.get(&root.sha256) {
        Some(holders) if !holders.is_empty() => Err(AdminError::Conflict(format!(
            "{} instance(s) of replica {replica} still hold a certificate issued by root {}: \
             {}; wait for them to renew, or force",
            holders.len(),
            root.id,
            sample(holders)
        ))),
        _ => Ok(()),
    }
}

/// The first five items, for a message.
fn sample(items: &[String]) -> String {
    let mut text = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        text.push_str(", ...");
    }
    text
}

#[cfg(test)]
mod tests {
    use mesh_api::proto::v1;

    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    /// A registry with `orders/o-1` reporting `applied` and a certificate issued by `issuer`.
    fn registry(now: Instant, applied: u64, issuer: &str) -> Registry {
        let mut registry = Registry::default();
        let instance = v1::Instance {
            instance_id: "o-1".into(),
            service: "orders".into(),
            address: "127.0.0.1:15006".into(),
            ..Default::default()
        };
        registry
            .register(
                "orders",
                &instance,
                Some("127.0.0.1:15006".parse().unwrap()),
                now,
                10,
            )
            .unwrap();
        let beat = v1::HeartbeatRequest {
            instance_id: "o-1".into(),
            applied_version: applied,
            certificate_issuer_sha256: issuer.into(),
            ..Default::default()
        };
        registry.heartbeat("orders", &beat, now);
        registry
    }

    fn root(id: &str, sha256: &str) -> RootInfo {
        RootInfo {
            id: id.into(),
            sha256: sha256.into(),
            not_after_unix: 0,
            has_key: true,
            signer: false,
        }
    }

    #[test]
    fn a_root_signs_only_once_every_live_instance_trusts_it() {
        let now = Instant::now();
        let mut behind = registry(now, 5, "");
        let err = check_use(&behind, LEASE, now, "r2", 6).unwrap_err();
        assert_eq!(
            err.to_string(),
            "1 instance(s) have not acknowledged a snapshot (version 6 or later) that trusts \
             root r2: orders/o-1 (at 5); wait for them, or force"
        );
        // An acknowledgement on the watch stream counts as much as a heartbeat.
        behind.ack("orders", "o-1", 6, "");
        assert!(check_use(&behind, LEASE, now, "r2", 6).is_ok());
        // An instance whose lease expired does not hold the rotation back.
        let stale = registry(now, 1, "");
        assert!(check_use(&stale, LEASE, now + LEASE, "r2", 6).is_ok());
    }

    #[test]
    fn a_root_leaves_only_once_no_live_instance_holds_its_certificate() {
        let now = Instant::now();
        let old = root("r1", "aa");
        let err = check_remove(&registry(now, 5, "aa"), LEASE, now, &old).unwrap_err();
        assert_eq!(
            err.to_string(),
            "1 instance(s) still hold a certificate issued by root r1: orders/o-1; wait for \
             them to renew, or force"
        );
        assert!(check_remove(&registry(now, 5, "bb"), LEASE, now, &old).is_ok());
        assert!(check_remove(&registry(now, 5, "aa"), LEASE, now + LEASE, &old).is_ok());
    }

    #[test]
    fn until_a_lease_has_passed_the_registry_may_be_refilling() {
        assert_eq!(
            warming_left(Duration::from_secs(4), LEASE),
            Some(Duration::from_secs(6))
        );
        assert_eq!(warming_left(LEASE, LEASE), None);
        let err = warmed_up(Duration::from_secs(4), LEASE).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the control plane started 4.0s ago"),
            "{err}"
        );
        assert!(warmed_up(LEASE, LEASE).is_ok());
    }

    #[test]
    fn roots_since_follows_the_bundle() {
        let mut since = RootsSince::new(vec![root("r1", "aa")], 100);
        since.added("r2", 140);
        assert_eq!((since.since("r1"), since.since("r2")), (100, 140));
        since.keep(&[root("r2", "bb")]);
        assert_eq!((since.since("r1"), since.since("r2")), (0, 140));
    }

    #[test]
    fn another_replicas_sidecars_gate_the_steps_too() {
        let now = Instant::now();
        let mut since = RootsSince::new(vec![root("r1", "aa")], 5);
        since.added("r2", 6);
        let roots = [root("r1", "aa"), root("r2", "bb")];
        let behind = summary(&registry(now, 5, "aa"), LEASE, now, &roots, &since, true);
        let err = check_use_on("cp-b", &behind, "r2").unwrap_err();
        assert_eq!(
            err.to_string(),
            "1 instance(s) of replica cp-b have not acknowledged a snapshot that trusts root \
             r2: orders/o-1; wait for them, or force"
        );
        let err = check_remove_on("cp-b", &behind, &roots[0]).unwrap_err();
        assert!(
            err.to_string()
                .contains("still hold a certificate issued by root r1: orders/o-1"),
            "{err}"
        );
        let caught_up = summary(&registry(now, 6, "bb"), LEASE, now, &roots, &since, true);
        assert!(check_use_on("cp-b", &caught_up, "r2").is_ok());
        assert!(check_remove_on("cp-b", &caught_up, &roots[0]).is_ok());
        // A replica that has not loaded the root, or has just started, holds the step back.
        let err = check_use_on("cp-b", &caught_up, "r3").unwrap_err();
        assert!(
            err.to_string().contains("does not trust root r3 yet"),
            "{err}"
        );
        let cold = summary(&registry(now, 6, "bb"), LEASE, now, &roots, &since, false);
        assert!(check_use_on("cp-b", &cold, "r2").is_err());
        assert!(check_remove_on("cp-b", &cold, &roots[0]).is_err());
    }

    #[test]
    fn a_long_list_is_cut_to_five() {
        let items: Vec<String> = (1..=7).map(|i| format!("s/{i}")).collect();
        assert_eq!(sample(&items), "s/1, s/2, s/3, s/4, s/5, ...");
        assert_eq!(sample(&items[..2]), "s/1, s/2");
    }
}
