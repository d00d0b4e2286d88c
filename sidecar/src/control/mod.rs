//! The control-plane client: this sidecar's certificate, registration and configuration.
//!
//! - [`certify`]: a key pair made here and a CSR sent with the service's join token (the
//!   private key never leaves the process); renewal at about two thirds of the lifetime, or
//!   soon after the control plane starts issuing from another CA (root rotation).
//! - [`register`]: the instance announced and kept alive by heartbeats, which also report what
//!   `meshctl status` shows (applied version, certificate expiry, ejected endpoints).
//! - [`watch`]: the stream of snapshots, each applied whole or not at all, and acknowledged.
//!
//! [`credentials`] obtains the first certificate and [`start`] follows snapshots, renews and
//! registers; [`Registration::leave`] takes the instance out of the registry on shutdown.
//!
//! Static stability: when the control plane is unreachable, everything keeps running on the last
//! snapshot and certificate, and every loop reconnects with capped, jittered backoff.

pub(crate) mod apply;
pub(crate) mod backoff;
pub(crate) mod certify;
pub(crate) mod channel;
pub(crate) mod register;
pub(crate) mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use self::apply::Applier;
use self::certify::Certifier;
use self::register::InstanceInfo;
use crate::app_health::AppStatus;
use crate::config::{Config, ControlPlaneConfig, TrustAnchor};
use crate::identity::{self, Credentials, Identity};
use crate::inbound::Inbound;
use crate::metrics::Metrics;
use crate::outbound::policy::Destinations;

/// A sidecar enrolled with the control plane: where it is, and how to renew the certificate.
pub(crate) struct Client {
    config: ControlPlaneConfig,
    certifier: Certifier,
}

/// What the control plane's snapshots update and its heartbeats report on.
pub(crate) struct Controlled {
    pub(crate) identity: Arc<Identity>,
    pub(crate) destinations: tokio::sync::watch::Sender<Arc<Destinations>>,
    pub(crate) inbound: Arc<Inbound>,
    pub(crate) metrics: Arc<Metrics>,
    /// The admin endpoint's `/snapshot` body.
    pub(crate) snapshot_json: Arc<ArcSwapOption<Bytes>>,
    pub(crate) app_health: Option<tokio::sync::watch::Receiver<AppStatus>>,
    /// The inbound listener's bound address; what is registered is `listen.advertise`,
    /// defaulting to this. None for a gateway: it registers no address, so no caller is sent
    /// to it.
    pub(crate) inbound_addr: Option<SocketAddr>,
    /// The admin listener's bound address, registered for operator tools.
    pub(crate) admin_addr: SocketAddr,
    /// Where the gateway configuration the control plane declares goes.
    pub(crate) gateway: tokio::sync::watch::Sender<Option<Arc<crate::config::GatewayConfig>>>,
    /// A gateway's listeners as bound (name, address), which its heartbeats report.
    pub(crate) gateway_bound: Option<tokio::sync::watch::Receiver<Vec<(String, SocketAddr)>>>,
}

/// How the control plane's part of a sidecar started.
pub(crate) enum Started {
    /// There is no control plane: the bootstrap file's destinations stay as they are.
    Static,
    /// Following snapshots, renewing the certificate, and registered.
    Registered(Registration),
    /// Stopped before the first snapshot arrived.
    Stopped,
}

/// This instance in the registry, kept there by heartbeats until [`Registration::leave`].
pub(crate) struct Registration {
    stop: CancellationToken,
    task: JoinHandle<()>,
    channel: Channel,
    instance_id: String,
}

/// This sidecar's credentials: those `given` (from files), or the first certificate from the
/// control plane with the client that renews it. `None` when the sidecar is stopped first.
pub(crate) async fn credentials(
    given: Option<Credentials>,
    config: &Config,
    stop: &CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Option<(Credentials, Option<Client>)>> {
    match (given, &config.control_plane) {
        (Some(credentials), _) => Ok(Some((credentials, None))),
        (None, Some(cp)) => {
            let enrolled = tokio::select! {
                enrolled = enroll(config, cp, stop) => enrolled?,
                () = shutdown => None,
            };
            Ok(enrolled.map(|(credentials, client)| (credentials, Some(client))))
        }
        (None, None) => anyhow::bail!("no certificate: set tls or control_plane"),
    }
}

/// Obtains the first certificate from the control plane, trying until it works; `None` when
/// the sidecar is stopped first.
async fn enroll(
    config: &Config,
    cp: &ControlPlaneConfig,
    stop: &CancellationToken,
) -> anyhow::Result<Option<(Credentials, Client)>> {
    let roots = anchor_roots(&cp.trust_anchor)?;
    let tls = identity::anonymous_client_config(
        Arc::new(roots),
        channel::control_plane_id(&config.trust_domain)?,
    )?;
    let certifier = Certifier {
        service: config.service.clone(),
        id: config.identity.clone(),
        token_file: cp.token_file.clone(),
    };
    let channel = channel::channel(cp.address.clone(), tls);
    ::tracing::info!(control_plane = %cp.address, identity = %config.identity, "requesting a certificate");
    Ok(certifier
        .certify_until_ok(&channel, stop)
        .await
        .map(|credentials| {
            let client = Client {
                config: cp.clone(),
                certifier,
            };
            (credentials, client)
        }))
}

/// The certificates the control plane's must chain to, from the file or the inline PEM; errors
/// name the field.
fn anchor_roots(anchor: &TrustAnchor) -> anyhow::Result<rustls::RootCertStore> {
    let (field, pem, from) = match anchor {
        TrustAnchor::File(path) => {
            let pem = std::fs::read(path).with_context(|| {
                format!("control_plane.trust_anchor: cannot read {}", path.display())
            })?;
            (
                "control_plane.trust_anchor",
                pem,
                format!(" in {}", path.display()),
            )
        }
        TrustAnchor::Pem(pem) => (
            "control_plane.trust_anchor_pem",
            pem.clone().into_bytes(),
            String::new(),
        ),
    };
    let roots = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{field}: bad PEM{from}"))?;
    identity::trust_store(&roots).with_context(|| format!("{field}{from}"))
}

/// With a control plane, follows its snapshots, waits for the first one to be applied, then
/// renews the certificate and keeps the instance registered until `drain`; stopped (by
/// `stop` or `shutdown`) before the first snapshot, it says so. Without one, warns if the
/// certificate from files is about to expire.
pub(crate) async fn start(
    client: Option<Client>,
    config: &Config,
    controlled: Controlled,
    drain: &CancellationToken,
    stop: &CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Started> {
    let Some(client) = client else {
        warn_if_expiring(&controlled.identity);
        return Ok(Started::Static);
    };
    let Controlled {
        identity,
        destinations,
        inbound: inbound_proxy,
        metrics,
        snapshot_json,
        app_health,
        inbound_addr,
        admin_addr: admin_address,
        gateway,
        gateway_bound,
    } = controlled;
    let cp_tls = identity.client_config(&channel::control_plane_id(&config.trust_domain)?)?;
    let channel = channel::channel(client.config.address.clone(), cp_tls);
    let applier = Arc::new(Applier::new(
        identity.clone(),
        destinations,
        inbound_proxy,
        metrics.clone(),
        config.connect_timeout,
        snapshot_json,
        (gateway, config.base_dir.clone()),
    ));
    let instance = InstanceInfo {
        id: config.instance.clone().unwrap_or_else(|| {
            format!(
                "{}-{}-{:04x}",
                config.service,
                std::process::id(),
                fastrand::u16(..)
            )
        }),
        service: config.service.clone(),
        address: match inbound_addr {
            Some(bound) => Some(config.listen.advertised(bound)?),
            None => None,
        },
        version: config.version.clone(),
        admin_address,
    };
    let mut first = applier.first.subscribe();
    tokio::spawn(watch::follow(
        channel.clone(),
        instance.id.clone(),
        applier.clone(),
        drain.clone(),
    ));
    ::tracing::info!(instance = %instance.id, "waiting for the first snapshot");
    let started = tokio::select! {
        waited = first.wait_for(|applied| *applied) => waited.is_ok(),
        () = shutdown => false,
        () = stop.cancelled() => false,
    };
    if !started {
        return Ok(Started::Stopped);
    }
    tokio::spawn(certify::renew(
        client.certifier,
        channel.clone(),
        identity,
        applier.renew_now.clone(),
        metrics.control.clone(),
        drain.clone(),
    ));
    let stop_heartbeats = CancellationToken::new();
    let instance_id = instance.id.clone();
    let task = tokio::spawn(register::keep_registered(
        channel.clone(),
        instance,
        applier,
        (app_health, gateway_bound),
        stop_heartbeats.clone(),
    ));
    Ok(Started::Registered(Registration {
        stop: stop_heartbeats,
        task,
        channel,
        instance_id,
    }))
}

/// Warns when this sidecar's certificate has expired or expires within a day: every peer will
/// refuse it, and without a control plane nothing renews it.
fn warn_if_expiring(identity: &Identity) {
    let left = identity.not_after() - certify::unix_now();
    if left <= 0 {
        ::tracing::warn!(identity = %identity.id(), "this sidecar's certificate has expired; peers will refuse it");
    } else if left < 24 * 3600 {
        ::tracing::warn!(identity = %identity.id(), seconds_left = left, "this sidecar's certificate expires within a day");
    }
}

// === impl Registration ===

impl Registration {
    /// Stops the heartbeats, then deregisters: a heartbeat after the deregistration would
    /// register the instance again.
    pub(crate) async fn leave(self) {
        self.stop.cancel();
        let _ = self.task.await;
        register::deregister(self.channel, &self.instance_id).await;
    }
}
