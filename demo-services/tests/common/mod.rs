//! Test support: the demo services in-process on 127.0.0.1 port 0, and a tiny router that
//! stands in for the sidecar's outbound port by forwarding on the `Host` header. The router
//! is not the mesh: no retries, no policy, just delivery, and a log of what was delivered.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use demo_services::server::{Body, serve};
use demo_services::shop::{self, App, Calls, Config, Service};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// Bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// One request the router delivered.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub host: String,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
}

/// The services of one test, sharing a temporary data directory and a router.
pub struct Shop {
    pub router: SocketAddr,
    pub apps: HashMap<Service, (SocketAddr, App)>,
    pub delivered: Arc<Mutex<Vec<Delivered>>>,
    /// Requests (method, path prefix) the router answers 503 to instead of delivering.
    pub blocked: Arc<Mutex<Vec<(Method, String)>>>,
    pub data_dir: tempfile::TempDir,
}

impl Shop {
    /// Starts `services` with the router as their outbound port.
    pub async fn start(services: &[Service]) -> Shop {
        Self::start_with(services, |_| {}).await
    }

    /// Like [`Shop::start`], with each service's config adjusted by `adjust`.
    pub async fn start_with(services: &[Service], adjust: impl Fn(&mut Config)) -> Shop {
        let data_dir = tempfile::tempdir().unwrap();
        let router_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = router_listener.local_addr().unwrap();
        let mut apps = HashMap::new();
        let mut routes = HashMap::new();
        for &service in services {
            let outbound = router.to_string();
            let mut config = Config::new(service, Calls::Sidecar { outbound }, data_dir.path());
            config.upstream_timeout = Duration::from_secs(5);
            adjust(&mut config);
            let app = App::open(config).await.unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(shop::serve(listener, app.clone()));
            routes.insert(service.name().to_owned(), addr);
            apps.insert(service, (addr, app));
        }
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let blocked = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(route(
            router_listener,
            routes,
            delivered.clone(),
            blocked.clone(),
        ));
        Shop {
            router,
            apps,
            delivered,
            blocked,
            data_dir,
        }
    }

    /// `http://<app address><path>` of `service`.
    pub fn url(&self, service: Service, path: &str) -> String {
        format!("http://{}{path}", self.apps[&service].0)
    }

    pub fn app(&self, service: Service) -> &App {
        &self.apps[&service].1
    }

    /// What the router delivered to `host` so far.
    pub async fn delivered_to(&self, host: &str) -> Vec<Delivered> {
        self.delivered
            .lock()
            .await
            .iter()
            .filter(|d| d.host == host)
            .cloned()
            .collect()
    }

    /// Sets `service`'s faults through its admin API.
    pub async fn set_faults(&self, service: Service, faults: Value) {
        let rsp = call(
            Method::PUT,
            &self.url(service, "/admin/faults"),
            Some(faults),
        )
        .await;
        assert_eq!(rsp.status, StatusCode::OK, "{:?}", rsp.json);
    }

    /// `available` of `sku` in inventory.
    pub async fn available(&self, sku: &str) -> i64 {
        let rsp = call(
            Method::GET,
            &self.url(Service::Inventory, &format!("/products/{sku}")),
            None,
        )
        .await;
        assert_eq!(rsp.status, StatusCode::OK);
        rsp.json["available"].as_i64().unwrap()
    }
}

/// Forwards each request to the app named by its `Host` header.
async fn route(
    listener: TcpListener,
    routes: HashMap<String, SocketAddr>,
    delivered: Arc<Mutex<Vec<Delivered>>>,
    blocked: Arc<Mutex<Vec<(Method, String)>>>,
) {
    let routes = Arc::new(routes);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    serve(listener, move |req: Request<Incoming>| {
        let (routes, client) = (routes.clone(), client.clone());
        let (delivered, blocked) = (delivered.clone(), blocked.clone());
        async move {
            let refused = blocked.lock().await.iter().any(|(method, prefix)| {
                req.method() == method && req.uri().path().starts_with(prefix.as_str())
            });
            if refused {
                return text(StatusCode::SERVICE_UNAVAILABLE, "blocked by the test");
            }
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let Some(addr) = routes.get(&host) else {
                return text(StatusCode::SERVICE_UNAVAILABLE, "no such service");
            };
            delivered.lock().await.push(Delivered {
                host: host.clone(),
                method: req.method().clone(),
                path: req.uri().path().to_owned(),
                headers: req.headers().clone(),
            });
            let (mut parts, body) = req.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            parts.uri = format!("http://{addr}{path}").parse().unwrap();
            match client.request(Request::from_parts(parts, body)).await {
                Ok(rsp) => rsp.map(|b| b.boxed_unsync()),
                Err(_) => text(StatusCode::BAD_GATEWAY, "upstream failed"),
            }
        }
    })
    .await;
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut rsp = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *rsp.status_mut() = status;
    rsp
}

/// A fully read response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body as JSON, or `Null` when it is not JSON.
    pub json: Value,
}

/// Sends one request (with an optional JSON body) and reads the answer, within [`WAIT`].
pub async fn call(method: Method, url: &str, body: Option<Value>) -> Reply {
    call_with(method, url, body, &[]).await
}

/// Like [`call`], with extra headers.
pub async fn call_with(
    method: Method,
    url: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(serde_json::to_vec(&b).unwrap()));
    send(
        req.header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap(),
    )
    .await
}

/// Sends raw bytes as the body.
pub async fn call_raw(method: Method, url: &str, body: &'static [u8]) -> Reply {
    send(
        Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::from_static(body)))
            .unwrap(),
    )
    .await
}

async fn send(req: Request<Full<Bytes>>) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    tokio::time::timeout(WAIT, async {
        let rsp = client.request(req).await.unwrap();
        let (parts, body) = rsp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
            body,
        }
    })
    .await
    .expect("an answer within the wait")
}
