//! Applies a snapshot: checked whole first, then swapped in whole.
//!
//! A snapshot that does not convert (a bad address, an unknown enum value) is rejected before
//! anything changes, and the sidecar keeps running on the previous one. Requests in flight keep
//! the destination stack they started with; new requests see the new table.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use mesh_api::authorization::AuthorizationPolicy;
use mesh_api::proto::InvalidMessage;
use mesh_api::proto::v1;
use mesh_api::rate_limit::RateLimitPolicy;
use rustls::pki_types::CertificateDer;
use std::sync::RwLock;
use tokio::sync::{Notify, watch};

use crate::config::{DestinationPolicy, GatewayConfig, TcpDestination};
use crate::identity::{Identity, SpiffeId, trust_store};
use crate::inbound::Inbound;
use crate::metrics::{ControlMetrics, Metrics};
use crate::outbound::policy::{BackendSpec, BuildContext, DestinationSpec, Destinations};

/// Why a snapshot was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejected {
    #[error("{0}")]
    Invalid(#[from] InvalidMessage),
    #[error("trust bundle: {0}")]
    TrustBundle(crate::identity::CredentialsError),
    #[error("destination {name}: {error}")]
    Destination { name: String, error: String },
    #[error("building destinations: {0}")]
    Build(crate::identity::CredentialsError),
    #[error("gateway: {0}")]
    Gateway(String),
}

/// Everything a snapshot changes.
pub(crate) struct Applier {
    pub(crate) identity: Arc<Identity>,
    pub(crate) destinations: watch::Sender<Arc<Destinations>>,
    pub(crate) inbound: Arc<Inbound>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) connect_timeout: Duration,
    /// Woken when the control plane issues from another CA than ours.
    pub(crate) renew_now: Arc<Notify>,
    /// The version in force (0: none yet).
    pub(crate) applied: AtomicU64,
    /// Fires when the first snapshot is in force.
    pub(crate) first: watch::Sender<bool>,
    /// The gateway configuration the control plane declares, and where its relative
    /// certificate paths start.
    pub(crate) gateway: (watch::Sender<Option<Arc<GatewayConfig>>>, PathBuf),
    /// The admin endpoint's `/snapshot`.
    json: Arc<ArcSwapOption<Bytes>>,
    last_bundle: RwLock<Vec<Vec<u8>>>,
    last_issuer: RwLock<String>,
}

/// A snapshot converted and checked, not yet in force.
struct Checked {
    bundle: Option<Vec<CertificateDer<'static>>>,
    authorization: AuthorizationPolicy,
    rate_limit: RateLimitPolicy,
    destinations: Vec<(String, DestinationSpec)>,
    gateway: Option<Arc<GatewayConfig>>,
}

impl Applier {
    pub(crate) fn new(
        identity: Arc<Identity>,
        destinations: watch::Sender<Arc<Destinations>>,
        inbound: Arc<Inbound>,
        metrics: Arc<Metrics>,
        connect_timeout: Duration,
        json: Arc<ArcSwapOption<Bytes>>,
        gateway: (watch::Sender<Option<Arc<GatewayConfig>>>, PathBuf),
    ) -> Self {
        Self {
            json,
            gateway,
            identity,
            destinations,
            inbound,
            metrics,
            connect_timeout,
            renew_now: Arc::new(Notify::new()),
            applied: AtomicU64::new(0),
            first: watch::channel(false).0,
            last_bundle: RwLock::new(Vec::new()),
            last_issuer: RwLock::new(String::new()),
        }
    }

    fn control(&self) -> &ControlMetrics {
        &self.metrics.control
    }

    /// Puts `snapshot` in force, or leaves everything as it was and says why not.
    pub(crate) fn apply(&self, snapshot: &v1::Snapshot) -> Result<(), Rejected> {
        let checked = match self.check(snapshot) {
            Ok(checked) => checked,
            Err(e) => {
                self.control().snapshots_rejected.inc();
                return Err(e);
            }
        };
        let json = self.describe(snapshot, &checked);
        // Trust first: new endpoints may already hold certificates from a newly added root.
        if let Some(bundle) = checked.bundle {
            let store = trust_store(&bundle).map_err(Rejected::TrustBundle)?;
            self.identity
                .set_trust_bundle(Arc::new(store))
                .map_err(Rejected::TrustBundle)?;
            if let Ok(mut last) = self.last_bundle.write() {
                *last = bundle.iter().map(|c| c.to_vec()).collect();
            }
        }
        let cx = BuildContext {
            identity: &self.identity,
            connect_timeout: self.connect_timeout,
            metrics: &self.metrics,
        };
        let previous = self.destinations.borrow().clone();
        let table = Destinations::build(checked.destinations, &cx, Some(&previous))
            .map_err(Rejected::Build)?;
        self.destinations.send_replace(Arc::new(table));
        self.inbound.set_authorization(checked.authorization);
        self.inbound.set_rate_limit(checked.rate_limit);
        self.gateway.0.send_if_modified(|current| {
            let changed = *current != checked.gateway;
            if changed {
                current.clone_from(&checked.gateway);
            }
            changed
        });
        self.applied.store(snapshot.version, Ordering::Release);
        self.control()
            .snapshot_version
            .set(i64::try_from(snapshot.version).unwrap_or(i64::MAX));
        self.control().snapshots_applied.inc();
        self.json.store(json.map(Arc::new));
        self.first.send_replace(true);
        self.check_issuer(&snapshot.issuer_sha256);
        Ok(())
    }

    /// The snapshot as `/snapshot` shows it.
    fn describe(&self, snapshot: &v1::Snapshot, checked: &Checked) -> Option<Bytes> {
        let destinations: serde_json::Map<String, serde_json::Value> = checked
            .destinations
            .iter()
            .map(|(name, spec)| {
                let backends: Vec<_> = spec
                    .backends
                    .iter()
                    .map(|b| {
                        serde_json::json!({
                            "version": b.version,
                            "weight": b.weight,
                            "endpoints": b.endpoints,
                        })
                    })
                    .collect();
                let mut value = serde_json::json!({
                    "identity": spec.identity,
                    "virtual_address": spec.virtual_address,
                    "opaque_ports": spec.opaque_ports,
                    "policy": spec.policy,
                    "backends": backends,
                });
                if let (Some(tcp), Some(object)) = (spec.tcp, value.as_object_mut()) {
                    object.insert("tcp".to_owned(), serde_json::json!(tcp));
                }
                (name.clone(), value)
            })
            .collect();
        let roots: Vec<String> = snapshot
            .trust_bundle_der
            .iter()
            .map(|der| crate::identity::sha256_hex(der))
            .collect();
        let json = serde_json::json!({
            "version": snapshot.version,
            "destinations": destinations,
            "authorization": checked.authorization,
            "rate_limit": checked.rate_limit,
            "trust_bundle_sha256": roots,
            "issuer_sha256": snapshot.issuer_sha256,
            "gateway": checked.gateway.as_deref(),
        });
        let mut body = serde_json::to_vec_pretty(&json).ok()?;
        body.push(b'\n');
        Some(body.into())
    }

    /// Renews early when the control plane has started issuing from another CA than the one
    /// that issued our certificate, once per change of issuer.
    fn check_issuer(&self, issuer: &str) {
        let Ok(mut last) = self.last_issuer.write() else {
            return;
        };
        if issuer.is_empty() || *last == issuer {
            return;
        }
        issuer.clone_into(&mut last);
        if *self.identity.issuer_sha256() != issuer {
            tracing::info!(
                issuer,
                "the control plane issues from another CA; renewing the certificate"
            );
            self.renew_now.notify_one();
        }
    }

    fn check(&self, snapshot: &v1::Snapshot) -> Result<Checked, Rejected> {
        let changed = self
            .last_bundle
            .read()
            .map_or(true, |last| *last != snapshot.trust_bundle_der);
        let bundle = if changed {
            let bundle: Vec<CertificateDer<'static>> = snapshot
                .trust_bundle_der
                .iter()
                .map(|der| CertificateDer::from(der.clone()))
                .collect();
            trust_store(&bundle).map_err(Rejected::TrustBundle)?;
            Some(bundle)
        } else {
            None
        };
        let authorization = match &snapshot.authorization {
            Some(a) => AuthorizationPolicy::try_from(a)?,
            None => AuthorizationPolicy::default(),
        };
        let rate_limit = match &snapshot.rate_limit {
            Some(r) => RateLimitPolicy::try_from(r)?,
            None => RateLimitPolicy::default(),
        };
        let destinations = snapshot
            .destinations
            .iter()
            .map(|d| destination(d).map(|spec| (d.name.clone(), spec)))
            .collect::<Result<_, _>>()?;
        let gateway = match &snapshot.gateway {
            None => None,
            Some(pushed) => Some(Arc::new(
                crate::gateway::live::parse(&pushed.yaml, &self.gateway.1)
                    .map_err(Rejected::Gateway)?,
            )),
        };
        Ok(Checked {
            bundle,
            authorization,
            rate_limit,
            destinations,
            gateway,
        })
    }
}

fn destination(d: &v1::Destination) -> Result<DestinationSpec, Rejected> {
    let fail = |error: String| Rejected::Destination {
        name: d.name.clone(),
        error,
    };
    mesh_api::spiffe::check_label(&d.name).map_err(|e| fail(e.to_string()))?;
    let identity: SpiffeId = d
        .identity
        .parse()
        .map_err(|e| fail(format!("identity {:?}: {e}", d.identity)))?;
    let policy = d
        .policy
        .as_ref()
        .ok_or_else(|| fail("no policy".into()))
        .and_then(|p| DestinationPolicy::try_from(p).map_err(|e| fail(e.to_string())))?;
    let backends = d
        .backends
        .iter()
        .map(|b| {
            let endpoints = b
                .endpoints
                .iter()
                .map(|e| {
                    e.address
                        .parse::<SocketAddr>()
                        .map_err(|_| fail(format!("invalid endpoint address {:?}", e.address)))
                })
                .collect::<Result<_, _>>()?;
            Ok(BackendSpec {
                version: b.version.clone(),
                weight: b.weight,
                endpoints,
            })
        })
        .collect::<Result<_, Rejected>>()?;
    let tcp = d
        .tcp
        .as_ref()
        .map(|t| TcpDestination::try_from(t).map_err(|e| fail(e.to_string())))
        .transpose()?;
    let virtual_address = match d.virtual_address.as_str() {
        "" => None,
        text => Some(
            text.parse::<IpAddr>()
                .map_err(|_| fail(format!("invalid virtual address {text:?}")))?
                .to_canonical(),
        ),
    };
    let opaque_ports = d
        .opaque_ports
        .iter()
        .map(|&port| {
            u16::try_from(port)
                .ok()
                .filter(|&port| port != 0)
                .ok_or_else(|| fail(format!("invalid opaque port {port}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(DestinationSpec {
        identity,
        policy,
        backends,
        tcp,
        virtual_address,
        opaque_ports,
    })
}
