//! The `sidecar` binary in gateway mode: outside HTTP routed by host and path to mesh
//! services, which it calls over mTLS with its own identity, its certificate and destinations
//! from the control plane.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use mesh_testkit::process::KillOnDrop;
use mesh_testkit::{Sidecar, TestMesh, app, client, eventually, free_port};

use crate::{LocalControlPlane, until_ready};

const SIDECAR: &str = env!("CARGO_BIN_EXE_sidecar");
const PATIENCE: Duration = Duration::from_secs(15);
const GATEWAY_ID: &str = "spiffe://mesh.local/ns/default/sa/gateway";

/// A control plane on port 0 in this process for a `gateway` calling `orders` and
/// `storefront`, those two services' sidecars and echo apps, and the gateway process.
struct Edge {
    cluster: LocalControlPlane,
    _mesh: TestMesh,
    /// `orders` (which calls `gateway`) and `storefront`.
    services: Vec<Sidecar>,
    gateway: KillOnDrop,
    /// The gateway's `web` listener.
    web: SocketAddr,
    /// The gateway's `websecure` listener.
    websecure: SocketAddr,
    /// The gateway's admin endpoint.
    admin: SocketAddr,
    /// `other.pem` (`*.example.org`, listed first) and `shop.pem` (`shop.example.com`) with
    /// their keys.
    certs: tempfile::TempDir,
}

impl Edge {
    /// `clients` is YAML under `gateway.clients`, or empty.
    async fn start(clients: &str) -> Self {
        let cluster = LocalControlPlane::start(&[
            ("gateway", "name: gateway\ncalls: [orders, storefront]\n"),
            ("orders", "name: orders\ncalls: [gateway]\n"),
            ("storefront", "name: storefront\n"),
        ])
        .await;
        let mesh = TestMesh::new();
        let mut sidecars = Vec::new();
        for service in ["orders", "storefront"] {
            let echo = app::echo(if service == "orders" {
                "orders"
            } else {
                "storefront"
            })
            .await;
            sidecars.push(
                mesh.sidecar(service)
                    .app(echo)
                    .control_plane(cluster.for_service(service))
                    .start()
                    .await,
            );
        }
        let certs = tempfile::tempdir().unwrap();
        self_signed(certs.path(), "other", "*.example.org").await;
        self_signed(certs.path(), "shop", "shop.example.com").await;
        let (web, websecure) = (free_port(), free_port());
        let (outbound, admin) = (free_port(), free_port());
        let bootstrap = format!(
            "service: gateway\ntrust_domain: mesh.local\n\
             listen: {{ outbound: \"{outbound}\", admin: \"{admin}\" }}\n\
             drain_timeout: 1s\n\
             control_plane: {{ address: \"{cp}\", trust_anchor: ca.pem, token_file: tokens/gateway }}\n\
             gateway:\n\
             \x20 listeners:\n\
             \x20   - {{ name: web, address: \"{web}\", protocol: HTTP }}\n\
             \x20   - name: websecure\n\
             \x20     address: \"{websecure}\"\n\
             \x20     protocol: HTTPS\n\
             \x20     tls:\n\
             \x20       certificates:\n\
             \x20         - {{ cert: {dir}/other.pem, key: {dir}/other-key.pem }}\n\
             \x20         - {{ cert: {dir}/shop.pem, key: {dir}/shop-key.pem }}\n\
             \x20 routes:\n\
             \x20   - name: shop\n\
             \x20     parentRefs: [{{ name: websecure }}, {{ name: web }}]\n\
             \x20     hostnames: [shop.example.com]\n\
             \x20     rules:\n\
             \x20       - matches: [{{ path: {{ type: PathPrefix, value: /api/orders }} }}]\n\
             \x20         backendRefs: [{{ name: orders }}]\n\
             \x20       - backendRefs: [{{ name: storefront }}]\n\
             \x20   - name: admin-site\n\
             \x20     parentRefs: [{{ name: web }}, {{ name: websecure }}]\n\
             \x20     hostnames: [admin.example.org]\n\
             \x20     rules: [{{ backendRefs: [{{ name: orders }}] }}]\n\
             {clients}",
            cp = cluster.control_plane.api_addr(),
            dir = certs.path().display(),
            clients = if clients.is_empty() {
                String::new()
            } else {
                format!("  clients: {clients}\n")
            },
        );
        let file = cluster.state().join("gateway.yaml");
        std::fs::write(&file, bootstrap).unwrap();
        let gateway = spawn_gateway(&file, cluster.state());
        let mut edge = Self {
            cluster,
            _mesh: mesh,
            services: sidecars,
            gateway,
            web,
            websecure,
            admin,
            certs,
        };
        edge.wait_ready(admin).await;
        edge
    }

    async fn wait_ready(&mut self, admin: SocketAddr) {
        let log = self.state().join("gateway.log");
        until_ready(
            "the gateway to be ready",
            &mut self.gateway,
            admin,
            PATIENCE,
            |_| std::fs::read_to_string(&log).unwrap_or_default(),
        )
        .await;
    }

    /// GET `path` from the gateway with `Host: host`, until the answer is not a 503 (the
    /// destinations' endpoints arrive from the control plane shortly after the first snapshot).
    async fn get(&self, host: &str, path: &str) -> http::Response<hyper::body::Incoming> {
        let url = format!("http://{}{path}", self.web);
        eventually("an answer from the gateway", PATIENCE, || {
            let url = url.clone();
            async move {
                let rsp = client::get(&url, host).await;
                if rsp.status() == StatusCode::SERVICE_UNAVAILABLE {
                    return Err(client::text(rsp).await);
                }
                Ok(rsp)
            }
        })
        .await
    }

    fn state(&self) -> &Path {
        self.cluster.state()
    }

    /// The value of the gateway's metric `series` (name and labels); 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        let rsp = client::get_url(&format!("http://{}/metrics", self.admin)).await;
        mesh_testkit::metrics::value(&client::text(rsp).await, series).unwrap_or(0.0)
    }

    /// The gateway's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.state().join("gateway.log")).unwrap_or_default()
    }

    /// `curl` over TLS to `host` on the `websecure` listener, trusting `ca`: the status, or
    /// curl's error.
    async fn curl(&self, host: &str, path: &str, ca: &Path) -> Result<String, String> {
        let port = self.websecure.port();
        let out = tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "5"])
            .arg("--resolve")
            .arg(format!("{host}:{port}:127.0.0.1"))
            .arg("--cacert")
            .arg(ca)
            .arg(format!("https://{host}:{port}{path}"))
            .output()
            .await
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// A self-signed certificate for `dns` in `dir`: `name.pem` and `name-key.pem`.
pub(crate) async fn self_signed(dir: &Path, name: &str, dns: &str) {
    let out = tokio::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={dns}")])
        .args(["-addext", &format!("subjectAltName=DNS:{dns}")])
        .arg("-keyout")
        .arg(dir.join(format!("{name}-key.pem")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem")))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sidecar --config file`, run in `dir`, its log on a pipe.
pub(crate) fn spawn_gateway(file: &Path, dir: &Path) -> KillOnDrop {
    KillOnDrop::new(
        Command::new(SIDECAR)
            .arg("--config")
            .arg(file)
            .env_remove("MESH_SIDECAR_CONFIG")
            .env_remove("MESH_SIDECAR_BOOTSTRAP")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(dir.join("gateway.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test]
async fn outside_requests_reach_services_by_host_and_path_as_the_gateway() {
    let edge = Edge::start("").await;
    assert!(edge.state().join("gateway.yaml").exists());

    let rsp = edge.get("shop.example.com", "/api/orders/7").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let seen = client::json(rsp).await;
    assert_eq!(seen["service"], "orders", "{seen}");
    assert_eq!(seen["path"], "/api/orders/7", "{seen}");
    assert_eq!(seen["caller"], GATEWAY_ID, "{seen}");
    assert_eq!(
        seen["headers"]["x-forwarded-host"][0], "shop.example.com",
        "{seen}"
    );

    let rsp = edge.get("shop.example.com:80", "/cart").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let seen = client::json(rsp).await;
    assert_eq!(seen["service"], "storefront", "{seen}");
    assert_eq!(seen["caller"], GATEWAY_ID, "{seen}");

    // Another host: no route takes it, and the route for admin.example.org does not match it.
    let rsp = edge.get("www.example.com", "/api/orders/7").await;
    assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
    assert_eq!(rsp.headers()["x-mesh-error"], "no-route");
    assert!(
        client::text(rsp).await.contains("www.example.com"),
        "the answer names the host"
    );
    let rsp = edge.get("admin.example.org", "/").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(client::json(rsp).await["service"], "orders");

    let routed = r#"mesh_gateway_requests_total{listener="web",route="shop"}"#;
    assert!(edge.metric(routed).await >= 2.0);
    let refused = r#"mesh_gateway_refused_total{listener="web",reason="no-route"}"#;
    assert!(edge.metric(refused).await >= 1.0);
}

/// A gateway's bootstrap mistakes stop the binary, naming the field.
#[test]
fn a_gateway_with_an_app_an_inbound_listener_or_an_unknown_listener_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(
        &file,
        "service: gateway\ntrust_domain: mesh.local\napp: 127.0.0.1:8080\n\
         listen: { inbound: \"127.0.0.1:15006\" }\n\
         control_plane: { address: \"127.0.0.1:1\", trust_anchor: ca.pem, token_file: t }\n\
         gateway:\n  listeners: [{ name: web, address: \"127.0.0.1:0\", protocol: HTTP }]\n  \
         routes: [{ name: shop, parentRefs: [{ name: websecure }], rules: [{ backendRefs: [{ name: orders }] }] }]\n",
    )
    .unwrap();
    let out = Command::new(SIDECAR)
        .arg("--config")
        .arg(&file)
        .env_remove("MESH_SIDECAR_CONFIG")
        .env_remove("MESH_SIDECAR_BOOTSTRAP")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("app: not allowed with gateway"), "{stderr}");
    assert!(
        stderr.contains(
            "listen.inbound: not allowed with gateway: a gateway has no inbound listener"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("gateway.routes[0].parentRefs[0].name: no listener named \"websecure\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn https_picks_the_certificate_by_sni_and_reloads_it_without_a_restart() {
    let edge = Edge::start("").await;
    let dir = edge.certs.path().to_owned();
    let (shop_ca, other_ca) = (dir.join("shop.pem"), dir.join("other.pem"));
    // Each host gets its own certificate: each is trusted alone.
    let seen = eventually("orders over HTTPS", PATIENCE, || {
        edge.curl("shop.example.com", "/api/orders/1", &shop_ca)
    })
    .await;
    assert!(seen.contains("\"service\": \"orders\""), "{seen}");
    assert!(seen.contains(GATEWAY_ID), "{seen}");
    let seen = edge
        .curl("admin.example.org", "/", &other_ca)
        .await
        .unwrap();
    assert!(seen.contains("\"service\": \"orders\""), "{seen}");
    let wrong = edge.curl("shop.example.com", "/", &other_ca).await;
    assert!(wrong.is_err(), "{wrong:?}");

    // New files for shop.example.com: served within seconds, and no request fails meanwhile
    // (the client trusts both the old and the new certificate).
    let next = tempfile::tempdir().unwrap();
    self_signed(next.path(), "shop", "shop.example.com").await;
    let both = dir.join("both.pem");
    let mut pems = std::fs::read(&shop_ca).unwrap();
    pems.extend(std::fs::read(next.path().join("shop.pem")).unwrap());
    std::fs::write(&both, pems).unwrap();
    for name in ["shop-key.pem", "shop.pem"] {
        let staged = dir.join(format!("{name}.new"));
        std::fs::copy(next.path().join(name), &staged).unwrap();
        std::fs::rename(&staged, dir.join(name)).unwrap();
    }
    let new_ca = next.path().join("shop.pem");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut swapped = false;
    for _ in 0..200 {
        let during = edge.curl("shop.example.com", "/cart", &both).await;
        assert!(
            during.is_ok(),
            "a request failed during the swap: {during:?}"
        );
        if edge
            .curl("shop.example.com", "/cart", &new_ca)
            .await
            .is_ok()
        {
            swapped = true;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reloaded:\n{}",
            edge.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "not reloaded:\n{}", edge.log());

    // A bad file is refused, named in the log, and the certificate served stays.
    std::fs::write(dir.join("shop.pem"), "not a certificate\n").unwrap();
    let refused = eventually("the bad file to be refused", PATIENCE, || {
        let log = edge.log();
        async move {
            log.lines()
                .find(|l| l.contains("new gateway certificate refused"))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(
        refused.contains(&dir.join("shop.pem").display().to_string()),
        "{refused}"
    );
    let still = edge.curl("shop.example.com", "/cart", &new_ca).await;
    assert!(still.is_ok(), "{still:?}");
}

#[tokio::test]
async fn outside_clients_cannot_forge_their_address_or_exceed_their_limits() {
    let edge = Edge::start(
        "{ max_request_bytes: 1KiB, max_header_bytes: 8KiB, \
         rate_limit: { requests_per_second: 1, burst: 20 } }",
    )
    .await;
    let send = |req: http::Request<http_body_util::Full<bytes::Bytes>>| async move {
        client::http1().request(req).await.unwrap()
    };
    let url = format!("http://{}/api/orders/1", edge.web);
    // Wait for the endpoints, then a forged address: the app sees only the real peer.
    let _ = edge.get("shop.example.com", "/api/orders/1").await;
    let rsp = send(
        http::Request::get(&url)
            .header("host", "shop.example.com")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-real-ip", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let seen = client::json(rsp).await;
    let headers = &seen["headers"];
    assert_eq!(headers["x-forwarded-for"][0], "127.0.0.1", "{seen}");
    assert_eq!(
        headers["forwarded"][0], "for=127.0.0.1;proto=http",
        "{seen}"
    );
    assert_eq!(headers["x-forwarded-proto"][0], "http", "{seen}");
    assert!(headers.get("x-real-ip").is_none(), "{seen}");

    let rsp = send(
        http::Request::post(&url)
            .header("host", "shop.example.com")
            .body(vec![b'x'; 2000].into())
            .unwrap(),
    )
    .await;
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let rsp = send(
        http::Request::get(&url)
            .header("host", "shop.example.com")
            .header("x-big", "a".repeat(9000))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(rsp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Far over the listener's buffer: hyper answers before the gateway sees the request (as it
    // did the one above, whose head is over the 8 KiB buffer too), and both are counted.
    let rsp = send(
        http::Request::get(&url)
            .header("host", "shop.example.com")
            .header("x-big", "a".repeat(50_000))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(rsp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let series = r#"mesh_gateway_refused_total{listener="web",reason="headers-too-large"}"#;
    let counted = eventually("both 431s to be counted", PATIENCE, || async {
        let value = edge.metric(series).await;
        if value >= 2.0 {
            Ok(value)
        } else {
            Err(format!("{series} {value}"))
        }
    })
    .await;
    assert_eq!(counted, 2.0, "{series}");

    // At one a second after a burst of 20, a quick series is cut off.
    let mut limited = None;
    for _ in 0..40 {
        let rsp = client::get(&url, "shop.example.com").await;
        if rsp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(rsp);
            break;
        }
        assert_eq!(rsp.status(), StatusCode::OK);
    }
    let rsp = limited.expect("no 429 within 40 requests");
    assert_eq!(rsp.headers()["x-mesh-error"], "rate-limited");
    assert!(rsp.headers().contains_key("retry-after"));
    for reason in ["body-too-large", "rate-limited"] {
        let series = format!(r#"mesh_gateway_refused_total{{listener="web",reason="{reason}"}}"#);
        assert!(edge.metric(&series).await >= 1.0, "{series}");
    }
}

/// A certificate that cannot be read stops the gateway at start, naming the listener and file.
#[test]
fn a_missing_certificate_stops_the_gateway_naming_the_file() {
    let mesh = TestMesh::new();
    let (cert, key) = mesh
        .leaf("gateway")
        .write_to(mesh.dir(), "gateway")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(
        &file,
        format!(
            "service: gateway\ntrust_domain: mesh.local\n\
             listen: {{ outbound: \"{}\", admin: \"{}\" }}\n\
             tls: {{ cert: {}, key: {}, trust_bundle: {} }}\n\
             gateway:\n  listeners:\n    - name: websecure\n      address: \"127.0.0.1:0\"\n      \
             protocol: HTTPS\n      tls: {{ certificates: [{{ cert: shop.pem, key: shop-key.pem }}] }}\n",
            free_port(),
            free_port(),
            cert.display(),
            key.display(),
            mesh.trust_bundle().display(),
        ),
    )
    .unwrap();
    let out = Command::new(SIDECAR)
        .arg("--config")
        .arg(&file)
        .env_remove("MESH_SIDECAR_CONFIG")
        .env_remove("MESH_SIDECAR_BOOTSTRAP")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let shop = dir.path().join("shop.pem");
    let expected = format!(
        "gateway.listeners[0] (\"websecure\").tls: cannot read {}",
        shop.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

/// A request body of `chunks` bytes each, its length not declared (chunked on HTTP/1.1).
fn streamed(
    chunks: &[usize],
) -> http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let frames: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>> = chunks
        .iter()
        .map(|n| Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![b'x'; *n]))))
        .collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

#[tokio::test]
async fn bodies_of_undeclared_length_are_held_to_the_clients_request_limit() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let edge = Edge::start("{ max_request_bytes: 1KiB }").await;
    let _ = edge.get("shop.example.com", "/api/orders/1").await;
    let url = format!("http://{}/api/orders/1", edge.web);
    let http1 = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let post = |chunks: &[usize]| {
        http::Request::post(&url)
            .header("host", "shop.example.com")
            .body(streamed(chunks))
            .unwrap()
    };

    // Under the limit, chunked: the app gets it whole.
    let req = post(&[300, 300, 300]);
    assert!(!req.headers().contains_key("content-length"));
    let rsp = http1.request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let seen = client::json(rsp).await;
    assert_eq!(seen["body_bytes"], 900, "{seen}");

    // Over it: refused with 413 and the same code as a declared length over it; the app
    // never gets the whole body (it would answer 200 with its length).
    let rsp = http1.request(post(&[512; 8])).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(rsp.headers()["x-mesh-error"], "request-body");
    let text = client::text(rsp).await;
    assert!(text.contains("1024"), "the answer names the limit: {text}");

    // HTTP/2 without content-length: refused too.
    let tcp = tokio::net::TcpStream::connect(edge.web).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("http://shop.example.com/api/orders/1")
        .body(streamed(&[512; 8]))
        .unwrap();
    let rsp = h2.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(rsp.headers()["x-mesh-error"], "request-body");

    let series = r#"mesh_gateway_refused_total{listener="web",reason="body-too-large"}"#;
    assert!(edge.metric(series).await >= 2.0, "{series}");
}

#[tokio::test]
async fn a_gateway_is_no_destination_so_callers_naming_it_get_no_endpoints() {
    let edge = Edge::start("").await;
    let _ = edge.get("shop.example.com", "/api/orders/1").await;
    // No inbound listener.
    let serving = edge.log();
    assert!(serving.contains("inbound=none (gateway)"), "{serving}");
    // Registered all the same, without an address.
    let addresses = eventually("the gateway to register", PATIENCE, || {
        let addresses: Vec<String> = edge
            .cluster
            .control_plane
            .status()
            .services
            .get("gateway")
            .map(|s| s.instances.iter().map(|i| i.address.clone()).collect())
            .unwrap_or_default();
        async move {
            if addresses.is_empty() {
                Err("not registered".to_owned())
            } else {
                Ok(addresses)
            }
        }
    })
    .await;
    assert_eq!(addresses, [""]);
    // Its heartbeats report where its listeners are bound instead.
    let listeners = eventually("the gateway's listeners in the status", PATIENCE, || {
        let listeners: Vec<(String, String)> = edge
            .cluster
            .control_plane
            .status()
            .services
            .get("gateway")
            .into_iter()
            .flat_map(|s| &s.instances)
            .flat_map(|i| &i.gateway_listeners)
            .map(|l| (l.name.clone(), l.address.clone()))
            .collect();
        async move {
            if listeners.is_empty() {
                Err("none reported".to_owned())
            } else {
                Ok(listeners)
            }
        }
    })
    .await;
    assert_eq!(
        listeners,
        [
            ("web".to_owned(), edge.web.to_string()),
            ("websecure".to_owned(), edge.websecure.to_string())
        ]
    );

    // `orders` calls `gateway`: once its snapshot has the destination, the answer is the one
    // for a destination without instances.
    let orders = format!("http://{}/", edge.services[0].outbound);
    let rsp = eventually("orders to know the gateway destination", PATIENCE, || {
        let orders = orders.clone();
        async move {
            let rsp = client::get(&orders, "gateway").await;
            let code = rsp
                .headers()
                .get("x-mesh-error")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            match code.as_deref() {
                Some("no-route") => Err(client::text(rsp).await),
                _ => Ok(rsp),
            }
        }
    })
    .await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.headers()["x-mesh-error"], "no-endpoints");
}
