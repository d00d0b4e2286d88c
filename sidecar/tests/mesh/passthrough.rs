//! `outbound.unknown` with `sidecar redirect`'s rules installed: an app in namespace A dials
//! servers in namespace B whose address is no destination of its sidecar. The sidecar runs as a
//! process of its own inside A, as its own user, as it would beside the app, so that what it
//! passes through leaves from A and is not redirected back to it. The app's clients are
//! unmodified programs (curl, bash's `/dev/tcp`) run as the app's user.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_testkit::netns::{self, TwoHosts};
use mesh_testkit::process::KillOnDrop;
use mesh_testkit::{SidecarBuilder, TestMesh, app};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::ORDERS_ID;
use crate::redirect::{PROXY_UID, SIDECAR, as_app, assert_success, listen, redirect};

/// How long a step may take.
const PATIENCE: Duration = Duration::from_secs(20);
/// Where the servers outside the mesh listen, in namespace B.
const OUTSIDE_HTTP: &str = "198.18.0.2:8080";
const OUTSIDE_TCP: &str = "198.18.0.2:7000";
const OUTSIDE_WEBSOCKET: &str = "198.18.0.2:9000";
/// In B, where nothing listens.
const OUTSIDE_CLOSED: &str = "198.18.0.2:8081";
/// Inventory's virtual address: a destination of the sidecar in A.
const INVENTORY_VIP: &str = "127.240.0.9";
/// The greeting of the TCP server in B, sent as soon as a connection opens.
const GREETING: &str = "220 outside";

/// The sidecar in namespace A, with its rules installed and its admin endpoint answering.
struct SidecarInA {
    process: KillOnDrop,
    namespace: String,
}

impl SidecarInA {
    /// Writes `builder`'s bootstrap file (the default listen addresses: A has its own ports),
    /// installs the redirect rules in A, and runs the sidecar there as `PROXY_UID`.
    async fn start(mesh: &TestMesh, builder: SidecarBuilder<'_>, namespace: &str) -> Self {
        let config = builder.write_config(
            "127.0.0.1:15001".parse().unwrap(),
            "127.0.0.1:15006".parse().unwrap(),
            "127.0.0.1:15000".parse().unwrap(),
        );
        // The sidecar's user reads its certificate and key, as it would its own.
        assert_success(
            &Command::new("chown")
                .args(["-R", &format!("{PROXY_UID}:{PROXY_UID}")])
                .arg(mesh.dir())
                .output()
                .unwrap(),
        );
        assert_success(&redirect(
            namespace,
            &["--proxy-uid", &PROXY_UID.to_string()],
        ));
        let log = std::fs::File::create(mesh.dir().join("sidecar-in-a.log")).unwrap();
        let process = Command::new("ip")
            .args(["netns", "exec", namespace, "setpriv"])
            .arg(format!("--reuid={PROXY_UID}"))
            .arg(format!("--regid={PROXY_UID}"))
            .args(["--clear-groups", SIDECAR, "--config"])
            .arg(&config)
            .env("MESH_LOG", "mesh_sidecar=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run the sidecar in namespace A");
        let mut sidecar = Self {
            process: KillOnDrop::new(process),
            namespace: namespace.to_owned(),
        };
        sidecar.ready(mesh.dir()).await;
        sidecar
    }

    /// Waits for `/ready`; a sidecar that exits fails the test with its log.
    async fn ready(&mut self, dir: &Path) {
        let log = dir.join("sidecar-in-a.log");
        mesh_testkit::eventually("the sidecar in namespace A to be ready", PATIENCE, || {
            if let Ok(Some(status)) = self.process.try_wait() {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("the sidecar exited ({status}): {said}");
            }
            let ready = self.admin("/ready");
            async move {
                let out = ready.await;
                out.status.success().then_some(())
            }
        })
        .await;
    }

    /// GET `path` on its admin listener, from inside A (its port is never redirected).
    fn admin(&self, path: &str) -> impl Future<Output = Output> + use<> {
        let mut command = tokio::process::Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .args(["curl", "-sf", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:15000{path}"))
            .kill_on_drop(true);
        async move { command.output().await.expect("run curl") }
    }

    /// The Prometheus text of its `/metrics`.
    async fn metrics(&self) -> String {
        let out = self.admin("/metrics").await;
        assert_success(&out);
        String::from_utf8(out.stdout).unwrap()
    }
}

/// curl with `args`, as the app: the response with its headers (`-i`).
async fn curl(namespace: &str, args: &[&str]) -> String {
    let mut program = vec!["curl", "-sS", "-i", "--max-time", "10"];
    program.extend_from_slice(args);
    let out = as_app(namespace, &program).await;
    assert_success(&out);
    String::from_utf8(out.stdout).unwrap()
}

/// The JSON bodies the echo app answered, in order, from curl's `-i` output.
fn echoed(output: &str) -> Vec<serde_json::Value> {
    output
        .split("\r\n\r\n")
        .filter(|part| part.trim_start().starts_with('{'))
        // A body is followed by the next response's head, if any.
        .map(|part| {
            serde_json::Deserializer::from_str(part)
                .into_iter::<serde_json::Value>()
                .next()
                .and_then(Result::ok)
                .unwrap_or_else(|| panic!("no JSON in {part}"))
        })
        .collect()
}

/// bash talking over `/dev/tcp` to `to`, as the app; `script` has the connection on fd 3.
async fn bash(namespace: &str, to: &str, script: &str) -> Output {
    let to: SocketAddr = to.parse().unwrap();
    let script = format!(r#"exec 3<>"/dev/tcp/$0/$1" || exit 1; {script}"#);
    as_app(
        namespace,
        &[
            "bash",
            "-c",
            &script,
            &to.ip().to_string(),
            &to.port().to_string(),
        ],
    )
    .await
}

/// The echo app in `namespace`, counting the connections it accepts.
fn echo_server(namespace: &str, addr: &str) -> Arc<AtomicUsize> {
    let listener = listen(namespace, addr);
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    // Ends with the test's runtime.
    tokio::spawn(async move {
        let http = auto::Builder::new(TokioExecutor::new());
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let service = service_fn(|req| async {
                Ok::<_, Infallible>(mesh_testkit::echo::handle("outside", req).await)
            });
            let conn = http
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .into_owned();
            tokio::spawn(conn);
        }
    });
    connections
}

/// A TCP server in `namespace` that greets each connection first, then echoes its lines.
fn greet_and_echo(namespace: &str, addr: &str) {
    let listener = listen(namespace, addr);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                write.write_all(format!("{GREETING}\n").as_bytes()).await?;
                let mut lines = BufReader::new(read).lines();
                while let Some(line) = lines.next_line().await? {
                    write.write_all(format!("{line}\n").as_bytes()).await?;
                }
                std::io::Result::Ok(())
            });
        }
    });
}

/// A WebSocket server in `namespace` that echoes every message.
fn websocket_echo(namespace: &str, addr: &str) {
    use futures_util::{SinkExt, StreamExt};
    let listener = listen(namespace, addr);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Nothing has connected to `listener`.
fn saw_no_connection(listener: TcpListener) {
    let listener = listener.into_std().unwrap();
    let accepted = listener.accept().map(|(_, peer)| peer);
    assert_eq!(
        accepted.map_err(|e| e.kind()).unwrap_err(),
        std::io::ErrorKind::WouldBlock,
        "{} was reached",
        listener.local_addr().unwrap()
    );
}

fn metric(text: &str, series: &str) -> Option<f64> {
    mesh_testkit::metrics::value(text, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_reaches_servers_outside_the_mesh_by_the_address_the_app_dialled() {
    if !netns::available("passthrough_reaches_servers_outside_the_mesh") {
        return;
    }
    let hosts = TwoHosts::create();
    let (a, b) = (&hosts.a.name, &hosts.b.name);
    let mesh = TestMesh::new();
    // Inventory, a destination of the sidecar in A, serves from B through its own sidecar.
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .inbound_listener(listen(b, "198.18.0.2:15006"))
        .start()
        .await;
    let outside_http = echo_server(b, &format!("0.0.0.0:{}", port(OUTSIDE_HTTP)));
    greet_and_echo(b, &format!("0.0.0.0:{}", port(OUTSIDE_TCP)));
    websocket_echo(b, &format!("0.0.0.0:{}", port(OUTSIDE_WEBSOCKET)));
    // No `outbound:` section: passthrough is the default.
    let orders = mesh
        .sidecar("orders")
        .destination_with_policy(
            "inventory",
            &[inventory.inbound],
            &format!("virtual_address: {INVENTORY_VIP}"),
        )
        .extra_yaml("detect_timeout: 300ms\n");
    let sidecar = SidecarInA::start(&mesh, orders, a).await;

    // curl by IP: the server in B answers, sees the Host curl sent and no identity, and two
    // requests on one of curl's connections share one connection to it (keep-alive).
    let out = curl(
        a,
        &[
            &format!("http://{OUTSIDE_HTTP}/hello"),
            &format!("http://{OUTSIDE_HTTP}/again"),
        ],
    )
    .await;
    let seen = echoed(&out);
    assert_eq!(seen.len(), 2, "{out}");
    for (seen, path) in seen.iter().zip(["/hello", "/again"]) {
        assert_eq!(seen["service"], "outside", "{seen}");
        assert_eq!(seen["path"], path, "{seen}");
        assert_eq!(seen["caller"], serde_json::Value::Null, "{seen}");
        assert_eq!(seen["headers"]["host"][0], OUTSIDE_HTTP, "{seen}");
    }
    assert!(!out.contains("x-mesh-"), "{out}");
    assert_eq!(outside_http.load(Ordering::SeqCst), 1);

    // The Host is kept, whatever it names; the connection still goes to the address dialled.
    let out = curl(
        a,
        &[
            "-H",
            "Host: shop.example",
            &format!("http://{OUTSIDE_HTTP}/host"),
        ],
    )
    .await;
    assert_eq!(
        echoed(&out)[0]["headers"]["host"][0],
        "shop.example",
        "{out}"
    );
    // HTTP/2 with prior knowledge goes on as HTTP/2.
    let out = curl(
        a,
        &[
            "--http2-prior-knowledge",
            &format!("http://{OUTSIDE_HTTP}/h2"),
        ],
    )
    .await;
    assert_eq!(echoed(&out)[0]["version"], "HTTP/2.0", "{out}");
    // An address where nothing listens: 502 from the mesh, which says why.
    let out = curl(a, &[&format!("http://{OUTSIDE_CLOSED}/")]).await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(out.contains("x-mesh-error: passthrough-failed"), "{out}");
    assert!(out.contains(OUTSIDE_CLOSED), "{out}");

    // Opaque TCP: a client that speaks first, and one that waits for the server's greeting
    // (nothing to detect: it is passed through once the detect timeout is over).
    let speaks_first = bash(
        a,
        OUTSIDE_TCP,
        r#"printf 'ping\n' >&3 && read -r one <&3 && read -r two <&3 && printf '%s|%s' "$one" "$two""#,
    )
    .await;
    assert_success(&speaks_first);
    assert_eq!(
        String::from_utf8_lossy(&speaks_first.stdout),
        format!("{GREETING}|ping")
    );
    let listens_first = bash(
        a,
        OUTSIDE_TCP,
        r#"read -r one <&3 && printf 'pong\n' >&3 && read -r two <&3 && printf '%s|%s' "$one" "$two""#,
    )
    .await;
    assert_success(&listens_first);
    assert_eq!(
        String::from_utf8_lossy(&listens_first.stdout),
        format!("{GREETING}|pong")
    );

    // A WebSocket: the upgrade is passed through, then its frames. The client's socket is made
    // in A by this test (root, a user the rules redirect).
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let to: SocketAddr = OUTSIDE_WEBSOCKET.parse().unwrap();
        let tcp = netns::enter(a, || std::net::TcpStream::connect(to)).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
        let url = format!("ws://{OUTSIDE_WEBSOCKET}/chat");
        let (mut ws, rsp) =
            tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(url, tcp))
                .await
                .expect("the WebSocket handshake in time")
                .expect("the WebSocket handshake");
        assert_eq!(rsp.status(), 101);
        ws.send(Message::text("over the passthrough"))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
        assert_eq!(
            echoed.unwrap().unwrap(),
            Message::text("over the passthrough")
        );
        ws.close(None).await.unwrap();
    }

    // A destination of the sidecar is reached through the mesh as before, by its virtual
    // address, with the caller's identity.
    let out = curl(a, &[&format!("http://{INVENTORY_VIP}/api/stock")]).await;
    let seen = &echoed(&out)[0];
    assert_eq!(seen["service"], "inventory", "{seen}");
    assert_eq!(seen["caller"], ORDERS_ID, "{seen}");
    // An app that calls the outbound listener itself, naming no destination, gets the
    // no-route answer: it dialled no address to pass through to.
    let out = curl(a, &["-H", "Host: nowhere", "http://127.0.0.1:15001/"]).await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("x-mesh-error: no-route"), "{out}");

    let metrics = sidecar.metrics().await;
    let passthrough = |protocol: &str| {
        metric(
            &metrics,
            &format!("mesh_outbound_passthrough_total{{protocol=\"{protocol}\"}}"),
        )
    };
    assert_eq!(passthrough("http"), Some(6.0), "{metrics}");
    assert_eq!(passthrough("tcp"), Some(2.0), "{metrics}");
    let requests = |status: u16| {
        metric(
            &metrics,
            &format!(
                "mesh_requests_total{{direction=\"outbound\",source=\"orders\",\
                 destination=\"passthrough\",status_code=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(requests(200), Some(4.0), "{metrics}");
    assert_eq!(requests(502), Some(1.0), "{metrics}");
    assert_eq!(requests(101), Some(1.0), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "mesh_tcp_connections_opened_total{direction=\"outbound\",source=\"orders\",\
             destination=\"passthrough\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
    drop(sidecar);
    drop(inventory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_refuses_http_and_tcp_to_addresses_outside_the_mesh() {
    if !netns::available("deny_refuses_http_and_tcp") {
        return;
    }
    let hosts = TwoHosts::create();
    let (a, b) = (&hosts.a.name, &hosts.b.name);
    let mesh = TestMesh::new();
    // Servers outside the mesh, which must see no connection.
    let outside_http = listen(b, &format!("0.0.0.0:{}", port(OUTSIDE_HTTP)));
    let outside_tcp = listen(b, &format!("0.0.0.0:{}", port(OUTSIDE_TCP)));
    let orders = mesh
        .sidecar("orders")
        .extra_yaml("detect_timeout: 300ms\noutbound: { unknown: deny }\n");
    let sidecar = SidecarInA::start(&mesh, orders, a).await;

    let out = curl(a, &[&format!("http://{OUTSIDE_HTTP}/")]).await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("x-mesh-error: outbound-denied"), "{out}");
    assert!(out.contains(OUTSIDE_HTTP), "{out}");
    assert!(out.contains("outbound.unknown: deny"), "{out}");

    // Raw TCP is reset before a byte comes back, whether the client speaks or waits.
    for script in [
        r#"printf 'ping\n' >&3; n=$(cat <&3 | wc -c); printf 'read %s' "$n""#,
        r#"n=$(cat <&3 | wc -c); printf 'read %s' "$n""#,
    ] {
        let out = bash(a, OUTSIDE_TCP, script).await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "read 0", "{script}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("reset"), "{script}: {said}");
    }

    let metrics = sidecar.metrics().await;
    let denied = |protocol: &str| {
        metric(
            &metrics,
            &format!("mesh_outbound_denied_total{{protocol=\"{protocol}\"}}"),
        )
    };
    assert_eq!(denied("http"), Some(1.0), "{metrics}");
    assert_eq!(denied("tcp"), Some(2.0), "{metrics}");
    assert!(
        !metrics.contains("mesh_outbound_passthrough_total{"),
        "{metrics}"
    );
    saw_no_connection(outside_http);
    saw_no_connection(outside_tcp);
    drop(sidecar);
}

fn port(addr: &str) -> u16 {
    addr.parse::<SocketAddr>().unwrap().port()
}
