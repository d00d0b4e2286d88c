//! The injecting admission webhook: HTTPS, `POST /inject` with an AdmissionReview, answered
//! with a JSONPatch that adds the mesh to the pod (`mesh_inject` does the work).
//!
//! The settings of each injection are read from the control plane's state at that request:
//! the trust domain in force and the trust bundle as it is now, so a root rotation reaches the
//! next pod without a restart.
//!
//! - `review`: the AdmissionReview types and the answer to one review;
//! - `certificate`: the serving certificate and its renewal.
//!
//! Every request is bounded: at most [`MAX_CONNECTIONS`] connections, [`MAX_BODY`] bytes of
//! body, and [`REQUEST_TIMEOUT`] for each of TLS handshake, headers and body (the API server
//! gives up after the configuration's `timeoutSeconds` anyway).

mod certificate;
mod review;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use mesh_inject::Settings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accept::CappedListener;
use crate::ca::ServingName;
use crate::log_limit::escaped;
use crate::mesh::Mesh;
use crate::tls::TlsError;

/// The one path served.
pub const PATH: &str = "/inject";
/// The names of the serving certificate unless configured: the Service in `mesh-system`.
pub const DEFAULT_NAMES: &str = "mesh-control-plane.mesh-system.svc";
/// Connections open at once; more are closed at accept.
pub(crate) const MAX_CONNECTIONS: usize = 128;
/// The largest request body read. A review holds one pod (etcd stores objects of at most
/// 1.5 MiB), so 3 MiB leaves room for the envelope.
pub(crate) const MAX_BODY: usize = 3 * 1024 * 1024;
/// The time each step of a request (TLS handshake, headers, body) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How the webhook injects pods: its certificate's names and what injected sidecars get.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// The serving certificate's names (DNS SANs; IP SANs for addresses).
    pub names: Vec<ServingName>,
    /// The sidecar image; `mesh_inject`'s default (`ghcr.io/mesh-rs/sidecar:<version>`) if
    /// unset.
    pub proxy_image: Option<String>,
    /// The control plane address (`host:port`) injected sidecars dial.
    pub sidecar_control_plane: String,
    /// The OTLP endpoint injected sidecars export spans to; none exports nothing.
    pub tracing_endpoint: Option<String>,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            names: vec![ServingName::Dns(DEFAULT_NAMES.to_owned())],
            proxy_image: None,
            sidecar_control_plane: mesh_inject::DEFAULT_CONTROL_PLANE.to_owned(),
            tracing_endpoint: None,
        }
    }
}

/// The webhook's state: what it reads for each review, and its TLS.
#[derive(Debug)]
pub(crate) struct Webhook {
    mesh: Arc<Mesh>,
    options: WebhookOptions,
    tls: certificate::ServingTls,
}

type Reply = http::Response<Full<Bytes>>;

impl Webhook {
    /// Issues the first serving certificate.
    pub(crate) fn new(mesh: Arc<Mesh>, options: WebhookOptions) -> Result<Self, TlsError> {
        let tls = certificate::ServingTls::new(&mesh.authority(), options.names.clone())?;
        Ok(Self { mesh, options, tls })
    }

    /// Keeps the serving certificate fresh until `shutdown`.
    pub(crate) async fn maintain(self: Arc<Self>, shutdown: CancellationToken) {
        self.tls.maintain(self.mesh.clone(), shutdown).await;
    }

    /// The settings of an injection now: trust domain and trust bundle as they are in force.
    fn settings(&self) -> Settings {
        let mut settings = Settings::new(
            self.mesh.config().trust_domain.clone(),
            self.mesh.authority().trust_bundle_pem(),
        );
        if let Some(image) = &self.options.proxy_image {
            settings.proxy_image.clone_from(image);
        }
        settings
            .control_plane
            .clone_from(&self.options.sidecar_control_plane);
        settings
            .tracing_endpoint
            .clone_from(&self.options.tracing_endpoint);
        settings
    }

    /// Serves until `shutdown`, then lets requests in flight finish (for up to 5 s).
    pub(crate) async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let graceful = GracefulShutdown::new();
        let listener = CappedListener::new(listener, MAX_CONNECTIONS, "webhook");
        let acceptor = self.tls.acceptor();
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(REQUEST_TIMEOUT)
            .keep_alive(true);
        while let Some((stream, remote, slot)) = listener.next(&shutdown, || {}).await {
            let handshake = tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(stream));
            let webhook = self.clone();
            let http = http.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let stream = match handshake.await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "webhook TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "webhook TLS handshake timed out");
                        return;
                    }
                };
                let service = service_fn(move |request| {
                    let webhook = webhook.clone();
                    async move { Ok::<_, Infallible>(webhook.handle(request).await) }
                });
                let conn = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                if let Err(e) = conn.await {
                    tracing::debug!(%remote, error = %e, "webhook connection failed");
                }
                drop(slot);
            });
        }
        drop(listener);
        if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("webhook connections still open after 5s; closing them");
        }
    }

    async fn handle(&self, request: http::Request<Incoming>) -> Reply {
        let path = request.uri().path();
        if path != PATH {
            return text(
                StatusCode::NOT_FOUND,
                format!("no such path {path}; the webhook serves {PATH}\n"),
            );
        }
        if request.method() != Method::POST {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not allowed on {PATH}: POST an AdmissionReview\n",
                    request.method()
                ),
            );
        }
        let body = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            Limited::new(request.into_body(), MAX_BODY).collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(e)) => {
                return self.bad_request(format!(
                    "cannot read the body: {e} (at most {MAX_BODY} bytes)"
                ));
            }
            Err(_) => {
                return text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the body did not arrive within {REQUEST_TIMEOUT:?}\n"),
                );
            }
        };
        // Injection is CPU work on a JSON tree of up to MAX_BODY: off the async threads.
        let settings = self.settings();
        let answered = tokio::task::spawn_blocking(move || review::answer(&body, &settings)).await;
        let answer = match answered {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return self.bad_request(e.to_string()),
            Err(e) => {
                tracing::error!(error = %e, "webhook review failed");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the review failed\n".to_owned(),
                );
            }
        };
        self.mesh.metrics().webhook_request(answer.outcome.label());
        match &answer.outcome {
            review::Outcome::Refused(reason) => {
                let pod = escaped(&answer.object);
                tracing::warn!(%pod, ?reason, "refused a pod the mesh cannot inject");
            }
            review::Outcome::Injected => {
                tracing::debug!(pod = %escaped(&answer.object), "injected");
            }
            review::Outcome::Skipped => {
                tracing::debug!(pod = %escaped(&answer.object), "let through");
            }
        }
        let mut reply = http::Response::new(Full::new(Bytes::from(answer.body)));
        reply.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        reply
    }

    fn bad_request(&self, message: String) -> Reply {
        self.mesh.metrics().webhook_request("bad_request");
        text(StatusCode::BAD_REQUEST, format!("{message}\n"))
    }
}

fn text(status: StatusCode, body: String) -> Reply {
    let mut reply = http::Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}
