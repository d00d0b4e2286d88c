//! The admin HTTP server (plain HTTP/1.1): health, metrics, status, configuration, and CA
//! rotation.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /live` | 200 while the process runs |
//! | `GET /ready` | 200 once the CA is loaded, the configuration valid and the API listening |
//! | `GET /metrics` | Prometheus text |
//! | `GET /status` | JSON: versions, trust bundle, signer, instances per service |
//! | `GET /config` | JSON: the validated configuration in force |
//! | `GET /ca/roots` | JSON: the trusted roots |
//! | `POST /ca/roots` | generate a root and add it to the trust bundle: `{"id": ...}` |
//! | `POST /ca/signer/<id>[?force=true]` | make a root the signer (409 until every live instance trusts it) |
//! | `DELETE /ca/roots/<id>[?force=true]` | remove a root (409 while it signs or a live instance holds a certificate from it) |
//!
//! With replicas (Kubernetes mode) the three changes to the CA are the leader's: another
//! replica answers 409 naming the leader, and `/status` says who leads (`replicas`).
//!
//! Errors are JSON `{"error": "..."}`.
//!
//! Changes need the admin token (`Authorization: Bearer <token>`), always. On a listener that
//! is not a loopback address, so do the reads that show the mesh's layout (`/status`,
//! `/config`, `/ca/roots`); `/live`, `/ready` and `/metrics` stay open for probes and
//! scrapers. The listener keeps at most `admin.max_connections` open and closes a connection
//! whose request headers take longer than `admin.header_timeout`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accept::CappedListener;
use crate::config::AdminLimits;
use crate::mesh::{AdminError, Mesh};
use crate::tokens::{ADMIN_TOKEN_NAME, Tokens};
use mesh_api::admin_host::names_admin_listener;

/// What the admin server reads.
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) mesh: Arc<Mesh>,
    pub(crate) ready: AtomicBool,
    /// Holds the admin token that changes to the CA need.
    pub(crate) tokens: Tokens,
    /// The admin listener's port, for the `Host` check.
    pub(crate) port: u16,
    /// Whether the listener is on a loopback address; if not, reads of the mesh's layout need
    /// the token too.
    pub(crate) loopback: bool,
}

type Reply = http::Response<Full<Bytes>>;

/// Serves until `shutdown`, then lets requests in flight finish (for up to 5 s).
pub(crate) async fn serve(
    admin: Arc<Admin>,
    listener: TcpListener,
    limits: AdminLimits,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let listener = CappedListener::new(listener, limits.max_connections, "admin");
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let metrics = admin.mesh.metrics();
    while let Some((stream, _, slot)) = listener
        .next(&shutdown, || metrics.limited("admin.max_connections"))
        .await
    {
        let handler = admin.clone();
        let service = service_fn(move |request| {
            let admin = handler.clone();
            async move { Ok::<_, Infallible>(handle(&admin, request).await) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection failed");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin connections still open after 5s; closing them");
    }
}

async fn handle(admin: &Admin, request: http::Request<Incoming>) -> Reply {
    if !names_admin_listener(request.headers().get(header::HOST), admin.port) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "the admin endpoint answers only requests addressed to an IP address or localhost"
                .to_owned(),
        );
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if needs_token(admin, &method, &path) && !authorized(admin, &request) {
        let what = if method == Method::GET {
            format!("GET {path} on an admin listener that is not a loopback address")
        } else {
            method.to_string()
        };
        return error(
            StatusCode::UNAUTHORIZED,
            format!(
                "{what} needs the admin token: `Authorization: Bearer <token>`, the token being \
                 the file admin/tokens/control-plane in the state directory (meshctl reads it)"
            ),
        );
    }
    let force = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "force=true" || kv == "force=1"));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mesh = &admin.mesh;
    match (segments.as_slice(), &method) {
        (["live"], &Method::GET) => text(StatusCode::OK, "live\n"),
        (["ready"], &Method::GET) => {
            if admin.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (["metrics"], &Method::GET) => {
            let mut reply = text(StatusCode::OK, mesh.metrics().encode());
            reply.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            reply
        }
        (["status"], &Method::GET) => json(StatusCode::OK, &mesh.status()),
        (["config"], &Method::GET) => json(StatusCode::OK, &*mesh.config()),
        (["ca", "roots"], &Method::GET) => json(StatusCode::OK, &mesh.authority().roots()),
        (["ca", "roots"], &Method::POST) => match mesh.add_root().await {
            Ok(id) => json(StatusCode::OK, &serde_json::json!({ "id": id })),
            Err(e) => admin_error(&e),
        },
        (["ca", "signer", id], &Method::POST) => match mesh.use_root(id, force).await {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "signer": id })),
            Err(e) => admin_error(&e),
        },
        (["ca", "roots", id], &Method::DELETE) => match mesh.remove_root(id, force).await {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "removed": id })),
            Err(e) => admin_error(&e),
        },
        (
            ["live"]
            | ["ready"]
            | ["metrics"]
            | ["status"]
            | ["config"]
            | ["ca", "roots"]
            | ["ca", "signer", _]
            | ["ca", "roots", _],
            _,
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no such path {path}")),
    }
}

/// Whether a request needs the admin token: every change, and on a listener other than
/// loopback every read but health and metrics.
fn needs_token(admin: &Admin, method: &Method, path: &str) -> bool {
    if method != Method::GET {
        return true;
    }
    let open = matches!(path.trim_end_matches('/'), "/live" | "/ready" | "/metrics");
    !admin.loopback && !open
}

/// Whether `request` carries the admin token.
fn authorized(admin: &Admin, request: &http::Request<Incoming>) -> bool {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| admin.tokens.check(ADMIN_TOKEN_NAME, token))
}

fn admin_error(e: &AdminError) -> Reply {
    let status = match e {
        AdminError::Conflict(_) | AdminError::NotLeader(_) => StatusCode::CONFLICT,
        AdminError::NotFound(_) => StatusCode::NOT_FOUND,
        AdminError::Rotation(crate::ca::RotationError::UnknownRoot(_)) => StatusCode::NOT_FOUND,
        AdminError::Rotation(crate::ca::RotationError::Store(_)) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        AdminError::Rotation(_) => StatusCode::CONFLICT,
    };
    error(status, e.to_string())
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut reply = http::Response::new(Full::new(body.into()));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut reply = http::Response::new(Full::new(Bytes::from(body)));
            *reply.status_mut() = status;
            reply.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            reply
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {e}\n"),
        ),
    }
}

fn error(status: StatusCode, message: String) -> Reply {
    json(status, &serde_json::json!({ "error": message }))
}
