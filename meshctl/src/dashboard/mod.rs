//! `meshctl dashboard`: the mesh in a browser. A small HTTP server serves one page (HTML, CSS
//! and JavaScript embedded in the binary) and the JSON it polls:
//!
//! - `GET /api/overview?window=10`: every service's and edge's traffic (as `meshctl stat`),
//!   every instance (as `meshctl status`) and every declared `calls` edge (the control plane's
//!   `/config`), stamped with when they were read;
//! - `GET /api/service/NAME`: who may call the service and its routes (from the sidecars'
//!   snapshots), and the requests of the last second with their trace IDs (from a tap).
//!
//! The page draws the service graph, with each edge coloured by its success rate (a declared
//! edge without traffic dashed grey, so the graph has its shape before any load), and a page
//! per service; it says when its data is stale rather than showing old numbers as live.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_control_plane::admin_client;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::stat::{self, Report};
use crate::tap::{TapLine, TapQuery};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// How long `/api/service/NAME` taps the service for its recent requests.
const TAP_FOR: Duration = Duration::from_secs(1);

/// What the dashboard reads and links to.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// The control plane's admin address.
    pub admin: SocketAddr,
    /// The user's Jaeger (its UI), for links to traces.
    pub jaeger_url: Option<String>,
}

/// `/api/overview`.
#[derive(Debug, Serialize)]
struct Overview {
    /// When it was read, ms since the Unix epoch.
    read_unix_ms: u64,
    /// Why the mesh could not be read (then everything else is empty).
    error: Option<String>,
    jaeger_url: Option<String>,
    stat: Option<Report>,
    status: Option<serde_json::Value>,
    /// Each declared service's `calls`, by caller (`None`: the configuration was unreadable).
    calls: Option<BTreeMap<String, Vec<String>>>,
}

/// `/api/service/NAME`.
#[derive(Debug, Serialize)]
struct ServiceDetail {
    read_unix_ms: u64,
    error: Option<String>,
    jaeger_url: Option<String>,
    /// The service's authorization as its sidecars enforce it.
    authorization: Option<serde_json::Value>,
    /// The service as its callers' sidecars see it: policy and routes.
    policy: Option<serde_json::Value>,
    /// The requests of the last second, by instance.
    requests: Vec<serde_json::Value>,
}

/// Serves the dashboard on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, options: DashboardOptions) -> std::io::Result<()> {
    let options = Arc::new(options);
    loop {
        let (tcp, _) = listener.accept().await?;
        let options = options.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(options.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn handle(
    options: Arc<DashboardOptions>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n",
        ));
    }
    let path = req.uri().path();
    Ok(match path {
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", INDEX),
        "/app.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
        "/style.css" => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        "/api/overview" => {
            let window = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("window=")))
                .and_then(|w| w.parse::<u64>().ok())
                .unwrap_or(10)
                .clamp(1, 300);
            json(&overview(&options, Duration::from_secs(window)).await)
        }
        _ => match path.strip_prefix("/api/service/") {
            Some(name) if !name.is_empty() && !name.contains('/') => {
                json(&service_detail(&options, name).await)
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        },
    })
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    rsp.headers_mut()
        .insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    rsp
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => reply(StatusCode::OK, "application/json", body),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn overview(options: &DashboardOptions, window: Duration) -> Overview {
    let mut overview = Overview {
        read_unix_ms: now_unix_ms(),
        error: None,
        jaeger_url: options.jaeger_url.clone(),
        stat: None,
        status: None,
        calls: None,
    };
    let status = match admin_client::request(options.admin, Method::GET, "/status").await {
        Ok((code, body)) if code.is_success() => serde_json::from_slice(&body).ok(),
        Ok((code, _)) => {
            overview.error = Some(format!("the control plane answered {code}"));
            return overview;
        }
        Err(e) => {
            overview.error = Some(
                stat::ViewError::ControlPlaneDown {
                    addr: options.admin,
                    reason: stat::short_reason(&e),
                }
                .to_string(),
            );
            return overview;
        }
    };
    match stat::collect(options.admin, None, window).await {
        Ok(report) => overview.stat = Some(report),
        Err(e) => overview.error = Some(e.to_string()),
    }
    overview.status = status;
    overview.calls = declared_calls(options.admin).await;
    overview.read_unix_ms = now_unix_ms();
    overview
}

/// Each declared service's `calls`, from the control plane's `/config`.
async fn declared_calls(admin: SocketAddr) -> Option<BTreeMap<String, Vec<String>>> {
    let (code, body) = admin_client::request(admin, Method::GET, "/config")
        .await
        .ok()?;
    if !code.is_success() {
        return None;
    }
    let config: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let services = config.get("services")?.as_object()?;
    Some(
        services
            .iter()
            .map(|(name, service)| {
                let calls = service
                    .get("calls")
                    .and_then(|c| c.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect();
                (name.clone(), calls)
            })
            .collect(),
    )
}

async fn snapshot(admin: SocketAddr) -> Option<serde_json::Value> {
    let (code, body) = admin_client::request(admin, Method::GET, "/snapshot")
        .await
        .ok()?;
    if !code.is_success() {
        return None;
    }
    serde_json::from_slice(&body).ok()
}

async fn service_detail(options: &DashboardOptions, name: &str) -> ServiceDetail {
    let mut detail = ServiceDetail {
        read_unix_ms: now_unix_ms(),
        error: None,
        jaeger_url: options.jaeger_url.clone(),
        authorization: None,
        policy: None,
        requests: Vec::new(),
    };
    let status = match stat::status(options.admin).await {
        Ok(status) => status,
        Err(e) => {
            detail.error = Some(e.to_string());
            return detail;
        }
    };
    let targets = match stat::targets(&status, Some(name)) {
        Ok(targets) => targets,
        Err(e) => {
            detail.error = Some(e.to_string());
            return detail;
        }
    };
    // Who may call it: its own sidecars' snapshot. Its policy and routes: a caller's.
    if let Some(addr) = targets.iter().find_map(|t| t.admin)
        && let Some(own) = snapshot(addr).await
    {
        detail.authorization = own.get("authorization").cloned();
    }
    let callers = stat::targets(&status, None).unwrap_or_default();
    for caller in callers.iter().filter(|t| t.service != name) {
        let Some(addr) = caller.admin else { continue };
        if let Some(snap) = snapshot(addr).await
            && let Some(policy) = snap.get("destinations").and_then(|d| d.get(name)).cloned()
        {
            detail.policy = Some(policy);
            break;
        }
    }
    // The requests of the last second: a short tap on each instance.
    let query = TapQuery {
        path: None,
        caller: None,
        rate: Some(20),
    };
    let mut taps = Vec::new();
    for target in targets {
        let Some(addr) = target.admin else { continue };
        let query = query.clone();
        taps.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let Ok(mut stream) = crate::tap::open(addr, &query).await else {
                return seen;
            };
            let deadline = tokio::time::Instant::now() + TAP_FOR;
            while let Ok(Some(Ok(line))) =
                tokio::time::timeout_at(deadline, stream.next_line()).await
            {
                if let TapLine::Request(event) = line
                    && let Ok(mut value) = serde_json::to_value(&event)
                {
                    if let Some(map) = value.as_object_mut() {
                        map.insert("instance".into(), target.instance.clone().into());
                    }
                    seen.push(value);
                }
            }
            seen
        }));
    }
    for tap in taps {
        if let Ok(seen) = tap.await {
            detail.requests.extend(seen);
        }
    }
    detail.requests.sort_by_key(|r| r["time_unix_ms"].as_u64());
    detail.read_unix_ms = now_unix_ms();
    detail
}
