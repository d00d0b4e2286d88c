//! The gRPC services of `mesh.v1`: Identity, Registry and Discovery.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_api::proto::v1;
use mesh_api::spiffe::{SpiffeId, format_service_id};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::authenticate::Authenticator;
use crate::ca::CertError;
use crate::config::ApiLimits;
use crate::listener::{InFlight, PeerInfo};
use crate::log_limit::{LogLimit, escaped};
use crate::mesh::{Mesh, RegistryError};
use crate::rate_limit::KeyedLimit;

/// How long a new watch stream may take to name its instance.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Warnings about refused callers per second.
const REFUSALS_LOGGED_PER_SECOND: u64 = 5;

/// The API's handlers, over the shared state.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    mesh: Arc<Mesh>,
    authenticator: Authenticator,
    limits: Arc<CallLimits>,
    shutdown: CancellationToken,
}

/// The per-caller rates of `api.rate_limits`, and the cap on warnings about refusals.
#[derive(Debug)]
struct CallLimits {
    certify_per_source_ip: KeyedLimit<IpAddr>,
    certify_per_service: KeyedLimit<String>,
    register_per_caller: KeyedLimit<String>,
    rates: crate::config::RateLimits,
    refusals: LogLimit,
}

impl Api {
    pub(crate) fn new(
        mesh: Arc<Mesh>,
        authenticator: Authenticator,
        limits: &ApiLimits,
        shutdown: CancellationToken,
    ) -> Self {
        let rates = limits.rate_limits;
        let limits = CallLimits {
            certify_per_source_ip: KeyedLimit::new(rates.certify_per_source_ip),
            certify_per_service: KeyedLimit::new(rates.certify_per_service),
            register_per_caller: KeyedLimit::new(rates.register_per_caller),
            rates,
            refusals: LogLimit::new(REFUSALS_LOGGED_PER_SECOND),
        };
        Self {
            mesh,
            authenticator,
            limits: Arc::new(limits),
            shutdown,
        }
    }

    /// Counts and refuses a call over the limit at `field`.
    fn limited(&self, field: &'static str, rate: mesh_api::rate_limit::Rate, who: &str) -> Status {
        self.mesh.metrics().limited(field);
        if self.limits.refusals.allow("refused calls") {
            tracing::warn!(limit = field, caller = %who, "call refused: over its rate limit");
        }
        Status::resource_exhausted(format!(
            "too many calls from {who}: {field} allows {} per second (burst {}); retry later",
            rate.requests_per_second, rate.burst
        ))
    }

    /// The caller's service, from its verified client certificate.
    fn caller<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let id = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.clone())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "this call needs the client certificate that Identity.Certify issued",
                )
            })?;
        let config = self.mesh.config();
        let service = id.service().unwrap_or_default().to_owned();
        let expected = SpiffeId::for_service(&config.trust_domain, &config.namespace, &service);
        if id.trust_domain() != config.trust_domain || expected.as_ref() != Ok(&id) {
            let pattern = format_service_id(&config.trust_domain, &config.namespace, "<service>");
            return Err(Status::permission_denied(format!(
                "{id} is not a service identity of this mesh ({pattern})"
            )));
        }
        Ok(service)
    }
}

/// Who sent a request, as the connection it came on says.
fn peer<T>(request: &Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

/// Marks the call in flight on its connection (which is not idle meanwhile).
fn in_flight<T>(request: &Request<T>) -> Option<InFlight> {
    peer(request).map(PeerInfo::call)
}

/// The request's source address (IPv4-mapped IPv6 as IPv4).
fn source_ip<T>(request: &Request<T>) -> Option<IpAddr> {
    peer(request)
        .and_then(|p| p.remote_addr)
        .map(|a| a.ip().to_canonical())
}

#[tonic::async_trait]
impl v1::identity_server::Identity for Api {
    async fn certify(
        &self,
        request: Request<v1::CertifyRequest>,
    ) -> Result<Response<v1::CertifyResponse>, Status> {
        let _call = in_flight(&request);
        let source = source_ip(&request);
        let request = request.into_inner();
        let config = self.mesh.config();
        let metrics = self.mesh.metrics();
        let rates = &self.limits.rates;
        if let Some(ip) = source
            && !self.limits.certify_per_source_ip.allow(ip)
        {
            let who = ip.to_string();
            return Err(self.limited(
                "api.rate_limits.certify_per_source_ip",
                rates.certify_per_source_ip,
                &who,
            ));
        }
        let service = request.service;
        let declared = config.services.contains_key(&service);
        // Only declared services get a bucket: a caller cannot grow the map with made-up names.
        if declared && !self.limits.certify_per_service.allow(service.clone()) {
            return Err(self.limited(
                "api.rate_limits.certify_per_service",
                rates.certify_per_service,
                &format!("service {service}"),
            ));
        }
        let checked = self
            .authenticator
            .check(&service, declared, &config.namespace, &request.token)
            .await;
        if let Err(refused) = checked {
            metrics.refused(refused.reason());
            if self.limits.refusals.allow("refused calls") {
                let service = escaped(&service);
                tracing::warn!(%service, source = ?source, reason = %refused, "certificate refused");
            }
            return Err(refused.status());
        }
        let id = SpiffeId::for_service(&config.trust_domain, &config.namespace, &service)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ca = self.mesh.authority();
        match ca.sign_csr_der(&request.csr_der, id.as_str(), config.certificate_lifetime) {
            Ok(issued) => {
                metrics.certificates_issued.inc();
                tracing::debug!(%service, not_after = issued.not_after_unix, "issued a certificate");
                Ok(Response::new(v1::CertifyResponse {
                    chain_der: issued.chain_der,
                    trust_bundle_der: ca.trust_bundle_der(),
                    not_after_unix: issued.not_after_unix,
                }))
            }
            Err(e @ CertError::WrongIdentity { .. }) => {
                metrics.refused("wrong_identity");
                tracing::warn!(%service, error = %e, "certificate refused");
                Err(Status::permission_denied(e.to_string()))
            }
            Err(e @ CertError::InvalidCsr(_)) => {
                metrics.refused("invalid_csr");
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e) => {
                metrics.refused("internal");
                tracing::error!(%service, error = %e, "cannot issue a certificate");
                Err(Status::internal("the CA failed to issue the certificate"))
            }
        }
    }
}

#[tonic::async_trait]
impl v1::registry_server::Registry for Api {
    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let _call = in_flight(&request);
        let caller = self.caller(&request)?;
        if !self.limits.register_per_caller.allow(caller.clone()) {
            return Err(self.limited(
                "api.rate_limits.register_per_caller",
                self.limits.rates.register_per_caller,
                &format!("service {caller}"),
            ));
        }
        let source = source_ip(&request);
        let instance = request
            .into_inner()
            .instance
            .ok_or_else(|| Status::invalid_argument("instance is missing"))?;
        match self.mesh.register(&caller, &instance, source) {
            Ok((heartbeat, lease)) => {
                tracing::info!(
                    service = %caller,
                    instance = %instance.instance_id,
                    address = %instance.address,
                    version = %instance.version,
                    "registered"
                );
                Ok(Response::new(v1::RegisterResponse {
                    heartbeat_interval_ms: millis(heartbeat),
                    lease_ms: millis(lease),
                }))
            }
            Err(e @ RegistryError::WrongService { .. }) => {
                Err(Status::permission_denied(e.to_string()))
            }
            Err(e @ RegistryError::Undeclared(_)) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            Err(e @ RegistryError::Invalid(_)) => Err(Status::invalid_argument(e.to_string())),
            Err(e @ RegistryError::NotSourceAddress { .. }) => {
                Err(Status::permission_denied(e.to_string()))
            }
            Err(e @ RegistryError::TooManyInstances { .. }) => {
                self.mesh
                    .metrics()
                    .limited("registration.max_instances_per_service");
                Err(Status::resource_exhausted(e.to_string()))
            }
        }
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let _call = in_flight(&request);
        let caller = self.caller(&request)?;
        let known = self.mesh.heartbeat(&caller, request.get_ref());
        Ok(Response::new(v1::HeartbeatResponse { known }))
    }

    async fn deregister(
        &self,
        request: Request<v1::DeregisterRequest>,
    ) -> Result<Response<v1::DeregisterResponse>, Status> {
        let _call = in_flight(&request);
        let caller = self.caller(&request)?;
        let removed = self
            .mesh
            .deregister(&caller, &request.get_ref().instance_id);
        Ok(Response::new(v1::DeregisterResponse { removed }))
    }
}

#[tonic::async_trait]
impl v1::discovery_server::Discovery for Api {
    type WatchStream = ReceiverStream<Result<v1::Snapshot, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<v1::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let call = in_flight(&request);
        let service = self.caller(&request)?;
        let snapshots = self.mesh.subscribe(&service).ok_or_else(|| {
            Status::failed_precondition(format!(
                "service {service:?} is not declared in the configuration"
            ))
        })?;
        // Capacity 1: a slow watcher holds at most one snapshot in hand and then skips straight
        // to the latest.
        let (tx, rx) = mpsc::channel(1);
        let watch = Watch {
            mesh: self.mesh.clone(),
            service,
            snapshots,
            requests: request.into_inner(),
            tx,
            shutdown: self.shutdown.clone(),
            _call: call,
        };
        tokio::spawn(watch.run());
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One watch stream.
struct Watch {
    mesh: Arc<Mesh>,
    service: String,
    snapshots: watch::Receiver<Arc<v1::Snapshot>>,
    requests: Streaming<v1::WatchRequest>,
    tx: mpsc::Sender<Result<v1::Snapshot, Status>>,
    shutdown: CancellationToken,
    /// The stream is a call in flight on its connection for as long as it lives.
    _call: Option<InFlight>,
}

/// Counts an open stream for as long as it lives.
struct Open {
    mesh: Arc<Mesh>,
    service: String,
    instance: String,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.mesh.metrics().watchers.dec();
        self.mesh.watch_stream(&self.service, &self.instance, false);
    }
}

impl Watch {
    async fn run(mut self) {
        let first = tokio::select! {
            () = self.shutdown.cancelled() => return,
            first = tokio::time::timeout(FIRST_REQUEST_TIMEOUT, self.requests.message()) => first,
        };
        let first = match first {
            Ok(Ok(Some(first))) => first,
            Ok(Ok(None) | Err(_)) => return,
            Err(_) => {
                let _ = self
                    .tx
                    .send(Err(Status::deadline_exceeded(
                        "the first WatchRequest must name the instance",
                    )))
                    .await;
                return;
            }
        };
        if first.instance_id.is_empty() {
            let _ = self
                .tx
                .send(Err(Status::invalid_argument(
                    "the first WatchRequest must name the instance",
                )))
                .await;
            return;
        }
        let instance = first.instance_id.clone();
        self.mesh.watch_stream(&self.service, &instance, true);
        self.mesh.metrics().watchers.inc();
        let _open = Open {
            mesh: self.mesh.clone(),
            service: self.service.clone(),
            instance: instance.clone(),
        };
        tracing::debug!(service = %self.service, %instance, "watch opened");
        self.acknowledge(&instance, &first);
        // A sidecar that already runs on a snapshot (it reconnects after a restart of the
        // control plane) keeps it until the registry has refilled: a snapshot computed now
        // would lack every instance that has not registered again yet, and take its endpoints
        // away. A new sidecar (version 0) gets the current snapshot at once.
        if first.ack_version != 0
            && let Some(left) = self.mesh.warming_left()
        {
            tracing::debug!(service = %self.service, %instance, ?left, "holding the first snapshot until the registry refills");
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                () = self.shutdown.cancelled() => return,
                () = self.tx.closed() => return,
            }
        }
        let mut reading = true;
        loop {
            let snapshot = self.snapshots.borrow_and_update().clone();
            if self.tx.send(Ok((*snapshot).clone())).await.is_err() {
                return;
            }
            self.mesh.metrics().snapshots_pushed.inc();
            loop {
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    () = self.tx.closed() => return,
                    changed = self.snapshots.changed() => {
                        if changed.is_err() {
                            let _ = self.tx.send(Err(Status::not_found(format!(
                                "service {:?} is no longer declared", self.service
                            )))).await;
                            return;
                        }
                        break;
                    }
                    message = self.requests.message(), if reading => match message {
                        Ok(Some(request)) => self.acknowledge(&instance, &request),
                        // The sidecar closed its side; keep pushing.
                        Ok(None) => reading = false,
                        Err(status) => {
                            tracing::debug!(service = %self.service, %instance, %status, "watch ended");
                            return;
                        }
                    },
                }
            }
        }
    }

    fn acknowledge(&self, instance: &str, request: &v1::WatchRequest) {
        if request.ack_version == 0 && request.error.is_empty() {
            return;
        }
        if !request.error.is_empty() {
            self.mesh.metrics().snapshots_rejected.inc();
            tracing::warn!(
                service = %self.service,
                %instance,
                version = request.ack_version,
                error = %request.error,
                "a sidecar rejected a snapshot"
            );
        }
        self.mesh
            .ack(&self.service, instance, request.ack_version, &request.error);
    }
}
