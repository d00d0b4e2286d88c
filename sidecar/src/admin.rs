//! The admin endpoint: health, metrics, the configuration in force, and shutdown.
//!
//! - `GET /live`: the process is up.
//! - `GET /ready`: 200 once the listeners are serving, 503 while draining, and 503 naming the
//!   failure while the app's health probe finds it down (with `app_health`).
//! - `GET /metrics`: Prometheus text, or OpenMetrics when asked for (see [`crate::metrics`]).
//! - `GET /config`: the configuration in force as JSON (paths to key files, never keys): the
//!   bootstrap file's, except that with a control plane `authorization` is the snapshot's, the
//!   one enforced (`authorization_source` says so).
//! - `GET /snapshot`: the control-plane snapshot in force as JSON (404 without a control
//!   plane): version, destinations with their endpoints and policy, authorization, and the
//!   certificate's expiry and issuer.
//! - `GET /stats?window=30s`: each edge's requests, failures, retries and latency buckets over
//!   the last whole seconds (up to 5m), for `meshctl stat` and the dashboard.
//! - `GET /tap?path=/api&caller=orders&rate=100`: the requests crossing this sidecar as they
//!   are answered, one JSON line each (no bodies, no header values), until the client goes or
//!   the sidecar drains; a line `{"skipped":n,"dropped":m}` counts what the tap missed.
//! - `POST /shutdown`: drain and exit, as on SIGTERM; lets a batch job end its sidecar.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use mesh_api::admin_host::names_admin_listener;

use crate::app_health::AppStatus;
use crate::body::{Body, BoxError};
use crate::config::Config;
use crate::metrics::{Direction, Metrics};
use crate::serve::{self, ConnectionCap, Drain, Draining};
use crate::telemetry::tap::{self, TapFilter};

/// Shared state the admin endpoint reports on.
#[derive(Debug)]
pub(crate) struct Admin {
    /// True while serving; false before start and while draining.
    pub(crate) ready: AtomicBool,
    /// What start-up waits for while not ready, for `/ready` to say (`None`: draining, or
    /// nothing named).
    pub(crate) waiting_for: ArcSwapOption<String>,
    /// `/config` body, rendered once: the configuration does not change while running.
    pub(crate) config_json: Bytes,
    /// Whether a control plane pushes authorization (then `/config` shows the snapshot's).
    controlled: bool,
    pub(crate) metrics: Arc<Metrics>,
    /// `/snapshot` body, replaced with each snapshot applied.
    pub(crate) snapshot_json: Arc<ArcSwapOption<Bytes>>,
    /// Cancelled by `POST /shutdown` to start the drain.
    pub(crate) shutdown: CancellationToken,
    /// The app's health, when the sidecar probes it.
    pub(crate) app: Option<tokio::sync::watch::Receiver<AppStatus>>,
}

/// The admin listener's task; it runs until [`AdminServer::stop`], after the other listeners
/// have drained.
pub(crate) struct AdminServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

// === impl Admin ===

impl Admin {
    /// Not ready until the listeners serve; `/config` is rendered once, here.
    pub(crate) fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        app: Option<tokio::sync::watch::Receiver<AppStatus>>,
    ) -> serde_json::Result<Self> {
        let mut config_json = serde_json::to_vec_pretty(config)?;
        config_json.push(b'\n');
        Ok(Self {
            ready: AtomicBool::new(false),
            waiting_for: ArcSwapOption::empty(),
            config_json: config_json.into(),
            controlled: config.control_plane.is_some(),
            metrics,
            snapshot_json: Arc::default(),
            shutdown,
            app,
        })
    }

    /// `/config`: the bootstrap configuration, with the control plane's authorization (the one
    /// in force) in place of the file's when there is a control plane.
    fn config(&self) -> Bytes {
        if !self.controlled {
            return self.config_json.clone();
        }
        let Ok(mut config) = serde_json::from_slice::<serde_json::Value>(&self.config_json) else {
            return self.config_json.clone();
        };
        let snapshot = self
            .snapshot_json
            .load_full()
            .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s).ok());
        let (authorization, source) = match snapshot {
            Some(s) => (
                s.get("authorization").cloned().unwrap_or_default(),
                format!(
                    "control plane snapshot {}",
                    s.get("version").cloned().unwrap_or_default()
                ),
            ),
            None => (
                serde_json::Value::Null,
                "none yet: no snapshot from the control plane".to_owned(),
            ),
        };
        if let Some(map) = config.as_object_mut() {
            map.insert("authorization".into(), authorization);
            map.insert("authorization_source".into(), source.into());
        }
        let mut body = serde_json::to_vec_pretty(&config).unwrap_or_default();
        body.push(b'\n');
        body.into()
    }

    /// Names what start-up waits for, for `/ready`; `None` once it waits for nothing.
    pub(crate) fn waiting_for(&self, what: Option<String>) {
        self.waiting_for.store(what.map(Arc::new));
    }

    /// Serves the admin endpoint (HTTP/1.1) on `listener` until [`AdminServer::stop`].
    pub(crate) fn serve(self: Arc<Self>, listener: TcpListener, config: &Config) -> AdminServer {
        // Header bytes and count past the limits are refused with 431 by hyper; the header
        // read timeout runs from the connection's start, so it also closes a silent client.
        let limits = &config.limits.admin;
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes as usize)
            .max_header_size(limits.max_header_bytes as usize)
            .max_headers(limits.max_headers as usize);
        let stop = CancellationToken::new();
        let metrics = self.metrics.clone();
        let port = listener.local_addr().map_or(0, |a| a.port());
        let task = tokio::spawn(serve::serve(
            Direction::Admin,
            listener,
            Drain {
                token: stop.clone(),
                timeout: config.drain_timeout,
            },
            metrics,
            ConnectionCap::new(limits.max_connections),
            move |tcp, peer: SocketAddr, draining: Draining| {
                let admin = self.clone();
                let conn = http.serve_connection(
                    TokioIo::new(tcp),
                    service_fn(move |req| {
                        let admin = admin.clone();
                        async move {
                            if !names_admin_listener(req.headers().get(HOST), port) {
                                return Ok(text(
                                    StatusCode::MISDIRECTED_REQUEST,
                                    "the admin endpoint answers only requests addressed to an IP \
                                     address or localhost\n",
                                ));
                            }
                            admin.handle(req, peer).await
                        }
                    }),
                );
                async move {
                    let _ = draining.serve(conn, None, None, None).await;
                }
            },
        ));
        AdminServer { stop, task }
    }

    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        Ok(match (req.method(), req.uri().path()) {
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
            (&Method::GET, "/ready") => {
                let app_down = self.app.as_ref().and_then(|rx| rx.borrow().clone());
                match (self.ready.load(Ordering::Acquire), app_down) {
                    (false, _) => match self.waiting_for.load_full() {
                        Some(what) => with_type(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {what}\n"),
                            "text/plain; charset=utf-8",
                        ),
                        None => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
                    },
                    (true, Some(reason)) => with_type(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("app down: {reason}\n"),
                        "text/plain; charset=utf-8",
                    ),
                    (true, None) => text(StatusCode::OK, "ready\n"),
                }
            }
            (&Method::GET, "/metrics") => {
                // Prometheus asks for OpenMetrics in Accept; anything else gets the classic
                // text format, which every scraper and promtool read.
                let openmetrics = req
                    .headers()
                    .get_all(http::header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.contains("application/openmetrics-text"));
                let encoded = if openmetrics {
                    self.metrics.encode().map(|body| {
                        (
                            body,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                    })
                } else {
                    self.metrics
                        .encode_prometheus()
                        .map(|body| (body, "text/plain; version=0.0.4; charset=utf-8"))
                };
                match encoded {
                    Ok((body, content_type)) => with_type(StatusCode::OK, body, content_type),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
                }
            }
            (&Method::GET, "/config") => {
                with_type(StatusCode::OK, self.config(), "application/json")
            }
            (&Method::GET, "/snapshot") => match self.snapshot_json.load_full() {
                Some(json) => with_type(StatusCode::OK, (*json).clone(), "application/json"),
                None => text(
                    StatusCode::NOT_FOUND,
                    "no snapshot: this sidecar runs without a control plane, or has none yet\n",
                ),
            },
            (&Method::GET, "/stats") => match window_param(req.uri().query()) {
                Ok(window) => match serde_json::to_vec(&self.metrics.window.report(window)) {
                    Ok(body) => with_type(StatusCode::OK, body, "application/json"),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode stats\n"),
                },
                Err(message) => with_type(
                    StatusCode::BAD_REQUEST,
                    message,
                    "text/plain; charset=utf-8",
                ),
            },
            (&Method::GET, "/tap") => match tap_params(req.uri().query()) {
                Ok((filter, rate)) => self.tap(filter, rate),
                Err(message) => with_type(
                    StatusCode::BAD_REQUEST,
                    message,
                    "text/plain; charset=utf-8",
                ),
            },
            (&Method::POST, "/shutdown") => {
                let confirmed = req
                    .headers()
                    .get(SHUTDOWN_CONFIRM)
                    .is_some_and(|v| v == "shutdown");
                if !peer.ip().is_loopback() || !confirmed {
                    return Ok(text(
                        StatusCode::FORBIDDEN,
                        "POST /shutdown is taken only from this machine, with the header \
                         x-mesh-confirm: shutdown\n",
                    ));
                }
                tracing::info!("shutdown requested on the admin endpoint");
                self.shutdown.cancel();
                text(StatusCode::ACCEPTED, "shutting down\n")
            }
            (
                _,
                "/live" | "/ready" | "/metrics" | "/config" | "/snapshot" | "/stats" | "/tap"
                | "/shutdown",
            ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /live, /ready, /metrics, /config, /snapshot, /stats, /tap or POST /shutdown\n",
            ),
        })
    }
}

impl Admin {
    /// Opens a tap and streams its events as JSON lines. A task per tap moves events from the
    /// tap's bounded channel to the response; when the client is slower than the traffic the
    /// tap's channel fills and the sidecar drops (and counts) events, never waits.
    fn tap(&self, filter: TapFilter, rate: u64) -> Response<Body> {
        let taps = self.metrics.taps.clone();
        let mut tap = taps.open(filter, rate);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut first = Vec::new();
            append(&mut first, &serde_json::json!({"tap": "open"}));
            if tx.send(Ok(Frame::data(first.into()))).await.is_err() {
                return;
            }
            loop {
                let mut lines = Vec::new();
                tokio::select! {
                    event = tap.events.recv() => match event {
                        // Whatever else is waiting goes in the same write.
                        Some(event) => {
                            append(&mut lines, &event);
                            for _ in 0..TAP_BATCH {
                                let Ok(event) = tap.events.try_recv() else { break };
                                append(&mut lines, &event);
                            }
                        }
                        None => break,
                    },
                    _ = tick.tick() => {
                        let missed = tap.missed();
                        if missed.skipped == 0 && missed.dropped == 0 {
                            continue;
                        }
                        append(&mut lines, &missed);
                    }
                    () = taps.closed() => break,
                    () = tx.closed() => break,
                };
                if tx.send(Ok(Frame::data(lines.into()))).await.is_err() {
                    break;
                }
            }
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut rsp = Response::new(BodyExt::boxed_unsync(body));
        rsp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        rsp
    }
}

/// Events a tap's stream writes at once at most.
const TAP_BATCH: usize = 64;

/// Appends `value` as one JSON line.
fn append(out: &mut Vec<u8>, value: &impl serde::Serialize) {
    if serde_json::to_writer(&mut *out, value).is_ok() {
        out.push(b'\n');
    }
}

/// `/tap`'s filter and rate from its query: `path` (a prefix), `caller` (a service or a SPIFFE
/// ID), `rate` (events per second, default 100, at most 1000).
fn tap_params(query: Option<&str>) -> Result<(TapFilter, u64), String> {
    let mut filter = TapFilter::default();
    let mut rate = tap::DEFAULT_RATE;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| format!("{key}: bad %-escape\n"))?;
        match key {
            "path" if value.starts_with('/') => filter.path_prefix = Some(value),
            "path" => return Err(format!("path {value:?}: must start with /\n")),
            "caller" => filter.caller = Some(value),
            "rate" => match value.parse::<u64>() {
                Ok(n) if (1..=tap::MAX_RATE).contains(&n) => rate = n,
                _ => {
                    return Err(format!(
                        "rate {value:?}: must be 1 to {} events a second\n",
                        tap::MAX_RATE
                    ));
                }
            },
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; use path, caller, rate\n"
                ));
            }
        }
    }
    Ok((filter, rate))
}

/// Decodes `%XX` escapes (and `+` as a space, as forms write it).
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

// === impl AdminServer ===

impl AdminServer {
    /// Closes the admin listener and waits for its connections.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The `window` of `/stats` in whole seconds (default 30s), or what is wrong with it.
fn window_param(query: Option<&str>) -> Result<u64, String> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("window="))
        .unwrap_or("30s");
    let seconds = match value.parse::<u64>() {
        Ok(seconds) => seconds,
        Err(_) => humantime::parse_duration(value)
            .map_err(|e| format!("window {value:?}: {e}; write e.g. 30s or 2m\n"))?
            .as_secs(),
    };
    let max = crate::metrics::window::MAX_WINDOW_SECONDS;
    if seconds == 0 || seconds > max {
        return Err(format!("window {value:?}: must be from 1s to {max}s\n"));
    }
    Ok(seconds)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    with_type(status, body, "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Body> {
    let body = Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut rsp = Response::new(body);
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    rsp
}

/// The header `POST /shutdown` needs. A web page can send a POST to a local port, but not one
/// with a header of its own without a CORS preflight, which this endpoint never grants.
const SHUTDOWN_CONFIRM: HeaderName = HeaderName::from_static("x-mesh-confirm");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_parameters_are_decoded_and_checked() {
        let (filter, rate) = tap_params(Some(
            "path=/api%2Forders&caller=spiffe%3A//mesh.local/ns/default/sa/web&rate=5",
        ))
        .unwrap();
        assert_eq!(filter.path_prefix.as_deref(), Some("/api/orders"));
        assert_eq!(
            filter.caller.as_deref(),
            Some("spiffe://mesh.local/ns/default/sa/web")
        );
        assert_eq!(rate, 5);
        assert_eq!(tap_params(None).unwrap().1, tap::DEFAULT_RATE);
        for (query, error) in [
            ("path=api", "must start with /"),
            ("rate=0", "must be 1 to 1000"),
            ("rate=5000", "must be 1 to 1000"),
            ("colour=red", "unknown parameter \"colour\""),
            ("path=/%zz", "bad %-escape"),
        ] {
            let err = tap_params(Some(query)).unwrap_err();
            assert!(err.contains(error), "{query}: {err}");
        }
    }

    #[test]
    fn the_stats_window_is_bounded() {
        assert_eq!(window_param(None), Ok(30));
        assert_eq!(window_param(Some("window=2m")), Ok(120));
        assert_eq!(window_param(Some("window=10")), Ok(10));
        assert!(window_param(Some("window=0s")).is_err());
        assert!(
            window_param(Some("window=1h"))
                .unwrap_err()
                .contains("1s to 300s")
        );
        assert!(window_param(Some("window=soon")).is_err());
    }
}
