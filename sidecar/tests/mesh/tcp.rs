//! Opaque TCP between sidecars: a `protocol: tcp` destination's listener, each connection an
//! HTTP/2 CONNECT stream over the peers' mTLS connection, joined to the app's port.
//!
//! Redis (Debian's `redis-server` and `redis-cli`) is the real TCP app. The 1 MiB round trip
//! speaks RESP's SET and GET by hand rather than through a client crate: two commands do not
//! justify a dependency, and the test sees the exact bytes on the wire.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_testkit::process::KillOnDrop;
use mesh_testkit::tcp::{self, Seen};
use mesh_testkit::{Sidecar, TestMesh, eventually, free_port, metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const PATIENCE: Duration = Duration::from_secs(10);

/// A redis-server on a port of its own, without persistence.
pub(crate) struct Redis {
    _process: KillOnDrop,
    pub(crate) addr: SocketAddr,
}

impl Redis {
    /// Starts redis-server and waits until it answers PING; `None` (the test skips) when it is
    /// not installed outside CI.
    pub(crate) async fn start() -> Option<Self> {
        let addr = free_port();
        let spawned = Command::new("redis-server")
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &addr.port().to_string()])
            .stdout(Stdio::null())
            .spawn();
        let process = match spawned {
            Ok(child) => KillOnDrop::new(child),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipping: redis-server not found ({e}); .ci/run installs it");
                return None;
            }
            Err(e) => panic!("redis-server is required in CI: {e}"),
        };
        eventually("redis-server to answer PING", PATIENCE, || async move {
            let mut conn = TcpStream::connect(addr).await.ok()?;
            conn.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 7];
            conn.read_exact(&mut buf).await.ok()?;
            (&buf == b"+PONG\r\n").then_some(())
        })
        .await;
        Some(Self {
            _process: process,
            addr,
        })
    }
}

/// Policy lines of a `tcp` destination listening at `listen` for an app on `port`.
fn tcp_destination(listen: SocketAddr, port: u16) -> String {
    format!("protocol: tcp\nlisten: \"{listen}\"\nport: {port}")
}

/// A `redis` sidecar in front of `app`, and a caller `service` whose `redis` destination
/// listens at the returned address.
async fn tcp_pair(
    mesh: &TestMesh,
    service: &str,
    app: SocketAddr,
    server_yaml: &str,
) -> (Sidecar, Sidecar, SocketAddr) {
    service_pair(mesh, "redis", service, app, server_yaml).await
}

/// A `destination` sidecar in front of `app`, and a caller `service` whose `destination`
/// (declared `tcp`) listens at the returned address, once that listener accepts.
pub(crate) async fn service_pair(
    mesh: &TestMesh,
    destination: &str,
    service: &str,
    app: SocketAddr,
    server_yaml: &str,
) -> (Sidecar, Sidecar, SocketAddr) {
    let server = mesh
        .sidecar(destination)
        .app(app)
        .extra_yaml(server_yaml)
        .start()
        .await;
    let listen = free_port();
    let caller = mesh
        .sidecar(service)
        .destination_with_policy(
            destination,
            &[server.inbound],
            &tcp_destination(listen, app.port()),
        )
        .start()
        .await;
    wait_for_listener(listen).await;
    (caller, server, listen)
}

async fn wait_for_listener(listen: SocketAddr) {
    eventually("the tcp destination's listener", PATIENCE, || async move {
        TcpStream::connect(listen).await
    })
    .await;
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One RESP command as an array of bulk strings.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn series(text: &str, name: &str, direction: &str, source: &str) -> f64 {
    let series =
        format!(r#"{name}{{direction="{direction}",source="{source}",destination="redis"}}"#);
    metrics::value(text, &series).unwrap_or(0.0)
}

#[tokio::test]
async fn redis_answers_through_the_pair() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let mesh = TestMesh::new();
    let (orders, server, listen) = tcp_pair(&mesh, "orders", redis.addr, "").await;

    let port = listen.port();
    let port_ = port;
    let set = tokio::task::spawn_blocking(move || redis_cli(port_, &["SET", "greeting", "hello"]));
    assert_eq!(set.await.unwrap(), "OK");
    let get = tokio::task::spawn_blocking(move || redis_cli(port, &["GET", "greeting"]));
    assert_eq!(get.await.unwrap(), "hello");

    // 1 MiB of bytes that are not all alike, there and back, byte for byte.
    let value: Vec<u8> = (0..1 << 20).map(|_| fastrand::u8(..)).collect();
    let mut conn = TcpStream::connect(listen).await.unwrap();
    conn.write_all(&resp(&[b"SET", b"big", &value]))
        .await
        .unwrap();
    let mut ok = [0u8; 5];
    conn.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    conn.write_all(&resp(&[b"GET", b"big"])).await.unwrap();
    let header = format!("${}\r\n", value.len()).into_bytes();
    let mut got = vec![0u8; header.len() + value.len() + 2];
    conn.read_exact(&mut got).await.unwrap();
    assert_eq!(&got[..header.len()], &header[..]);
    assert!(
        got[header.len()..header.len() + value.len()] == value[..],
        "the value came back different"
    );
    assert_eq!(&got[header.len() + value.len()..], b"\r\n");
    drop(conn);

    // Both sidecars count four streams (the wait for the listener, two redis-cli runs and
    // ours), the megabyte each way, and their close.
    let megabyte = value.len() as f64;
    for (sidecar, direction) in [(&orders, "outbound"), (&server, "inbound")] {
        let text = eventually("four streams closed", PATIENCE, || async {
            let text = sidecar.metrics().await;
            (series(
                &text,
                "mesh_tcp_connections_closed_total",
                direction,
                "orders",
            ) == 4.0)
                .then_some(text)
        })
        .await;
        let s = |name| series(&text, name, direction, "orders");
        assert_eq!(s("mesh_tcp_connections_opened_total"), 4.0, "{text}");
        assert!(s("mesh_tcp_sent_bytes_total") > megabyte, "{text}");
        assert!(s("mesh_tcp_received_bytes_total") > megabyte, "{text}");
        assert_eq!(
            s("mesh_tcp_connection_duration_seconds_count"),
            4.0,
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_caller_the_policy_refuses_is_disconnected_and_counted() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let mesh = TestMesh::new();
    let policy = "authorization: { default: deny, allow: [orders] }\n";
    let (payments, server, listen) = tcp_pair(&mesh, "payments", redis.addr, policy).await;

    let mut conn = TcpStream::connect(listen).await.unwrap();
    let _ = conn.write_all(b"PING\r\n").await;
    let mut buf = Vec::new();
    // Closed or reset, and nothing from Redis either way.
    let read = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut buf))
        .await
        .expect("the refused connection closes");
    assert!(
        buf.is_empty(),
        "{read:?}: {:?}",
        String::from_utf8_lossy(&buf)
    );

    // Refused twice: the wait for the listener connected once too.
    let text = eventually("both refusals counted", PATIENCE, || async {
        let text = server.metrics().await;
        let denied = r#"mesh_authorization_denied_total{source="payments"}"#;
        (metrics::value(&text, denied) == Some(2.0)).then_some(text)
    })
    .await;
    assert_eq!(
        series(
            &text,
            "mesh_tcp_connections_opened_total",
            "inbound",
            "payments"
        ),
        0.0
    );
    // The caller's side counts both by the peer's reason.
    let text = payments.metrics().await;
    let failures = r#"mesh_tcp_connect_failures_total{destination="redis",reason="unauthorized"}"#;
    assert_eq!(metrics::value(&text, failures), Some(2.0), "{text}");
}

/// The next event the app reports, within the patience.
async fn next(seen: &mut Reports) -> Seen {
    tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .expect("the app reports within the patience")
        .expect("the app is running")
}

/// An `orders` → `redis` pair in front of the reporting [`tcp::reply_at_eof`] app, with the
/// listener check's connection already seen: the app's reports, then, are the test's.
async fn reporting_pair(mesh: &TestMesh) -> (Sidecar, Sidecar, SocketAddr, Reports) {
    let (app, mut seen) = tcp::reply_at_eof().await;
    let (orders, server, listen) = tcp_pair(mesh, "orders", app, "").await;
    assert_eq!(next(&mut seen).await, Seen::Eof);
    (orders, server, listen, seen)
}

type Reports = mpsc::UnboundedReceiver<Seen>;

/// A connection through `listen` that has sent `bytes`, once the app has them.
async fn open_stream(listen: SocketAddr, seen: &mut Reports, bytes: &[u8]) -> TcpStream {
    let mut conn = TcpStream::connect(listen).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    assert!(matches!(next(seen).await, Seen::Read(_)));
    conn
}

#[tokio::test]
async fn half_close_reaches_the_app_and_the_reply_comes_back() {
    let mesh = TestMesh::new();
    let (_orders, _server, listen, _seen) = reporting_pair(&mesh).await;

    let reply = tcp::round_trip(listen, b"request, then my side closes", PATIENCE).await;
    assert_eq!(reply.unwrap(), b"request, then my side closes");
}

#[tokio::test]
async fn a_client_abort_ends_the_app_connection() {
    let mesh = TestMesh::new();
    let (_orders, _server, listen, mut seen) = reporting_pair(&mesh).await;
    let conn = open_stream(listen, &mut seen, b"half a request").await;
    // Abort: RST, not FIN.
    conn.set_zero_linger().unwrap();
    drop(conn);
    let mut ended = next(&mut seen).await;
    while let Seen::Read(_) = ended {
        ended = next(&mut seen).await;
    }
    // The abort crosses as RST_STREAM and reaches the app as a reset, not as the end of its
    // client's bytes (which would let it act on half a request).
    match ended {
        Seen::Failed(kind) => assert_eq!(kind, std::io::ErrorKind::ConnectionReset),
        other => panic!("the app saw {other:?}, not a reset"),
    }
}

#[tokio::test]
async fn an_app_abort_ends_the_client_connection() {
    // The app accepts, then aborts each connection with a reset.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let mut buf = [0u8; 64];
            let mut conn = conn;
            let _ = conn.read(&mut buf).await;
            let _ = conn.set_zero_linger();
        }
    });
    let mesh = TestMesh::new();
    let (_orders, _server, listen) = tcp_pair(&mesh, "orders", app, "").await;

    let mut conn = TcpStream::connect(listen).await.unwrap();
    conn.write_all(b"hello").await.unwrap();
    // Reset, as the app's connection was, and nothing came from the app.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut buf))
        .await
        .expect("the client's connection ends");
    assert!(buf.is_empty(), "{read:?}");
    let error = read.expect_err("a reset, not a clean end");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn a_stream_quiet_for_the_idle_timeout_is_reset_at_both_ends_and_counted() {
    let mesh = TestMesh::new();
    let (app, mut seen) = tcp::reply_at_eof().await;
    let (_orders, server, listen) = tcp_pair(&mesh, "orders", app, "idle_timeout: 400ms\n").await;
    assert_eq!(next(&mut seen).await, Seen::Eof);
    let mut conn = open_stream(listen, &mut seen, b"first").await;

    // A byte every 100 ms keeps the stream open for three times the limit.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.write_all(b".").await.unwrap();
        assert_eq!(
            next(&mut seen).await,
            Seen::Read(1),
            "the stream is still open"
        );
    }

    // Then quiet: the app's connection is reset, and so is the client's.
    let started = tokio::time::Instant::now();
    assert_eq!(
        next(&mut seen).await,
        Seen::Failed(std::io::ErrorKind::ConnectionReset)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "reset after {waited:?}"
    );
    let mut buf = Vec::new();
    let read = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut buf))
        .await
        .expect("the client's connection ends");
    assert_eq!(
        read.expect_err("a reset").kind(),
        std::io::ErrorKind::ConnectionReset
    );
    let series =
        r#"mesh_tcp_idle_timeouts_total{direction="inbound",source="orders",destination="redis"}"#;
    assert_eq!(metrics::value(&server.metrics().await, series), Some(1.0));
}

#[tokio::test]
async fn with_authorization_rules_a_tcp_stream_takes_a_connect_rule() {
    let mesh = TestMesh::new();
    // orders may only read products over HTTP; payments may open streams (CONNECT).
    let rules = "authorization:\n\
         \x20 default: deny\n\
         \x20 rules:\n\
         \x20   - name: reads\n\
         \x20     matches: [{ method: GET, path: { type: PathPrefix, value: / } }]\n\
         \x20     allow: [orders]\n\
         \x20   - name: streams\n\
         \x20     matches: [{ method: CONNECT }]\n\
         \x20     allow: [payments]\n";
    let (app, _seen) = tcp::reply_at_eof().await;
    let server = mesh
        .sidecar("redis")
        .app(app)
        .extra_yaml(rules)
        .start()
        .await;
    let caller = |service: &'static str| {
        let server = &server;
        let mesh = &mesh;
        async move {
            let listen = free_port();
            let sidecar = mesh
                .sidecar(service)
                .destination_with_policy(
                    "redis",
                    &[server.inbound],
                    &tcp_destination(listen, app.port()),
                )
                .start()
                .await;
            wait_for_listener(listen).await;
            (sidecar, listen)
        }
    };
    let (_payments, payments_listen) = caller("payments").await;
    let reply = tcp::round_trip(payments_listen, b"allowed", PATIENCE).await;
    assert_eq!(reply.unwrap(), b"allowed");

    // A GET rule does not open a stream: the stream is a CONNECT to the rules.
    let (_orders, orders_listen) = caller("orders").await;
    let refused = tcp::round_trip(orders_listen, b"refused", PATIENCE).await;
    assert!(
        refused.as_ref().map_or(true, |r| r.is_empty()),
        "{refused:?}"
    );
    let denied = r#"mesh_authorization_denied_total{source="orders"}"#;
    eventually("the refusal counted", PATIENCE, || async {
        (metrics::value(&server.metrics().await, denied)? >= 1.0).then_some(())
    })
    .await;
}

/// Open file descriptors of this process (the sidecars run in it).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test]
async fn a_thousand_short_connections_leave_no_descriptor_or_task_behind() {
    let (app, seen) = tcp::reply_at_eof().await;
    drop(seen);
    let mesh = TestMesh::new();
    let (orders, _server, listen) = tcp_pair(&mesh, "orders", app, "").await;

    let round_trip = || async move {
        let reply = tcp::round_trip(listen, b"ping", PATIENCE).await;
        assert_eq!(reply.unwrap(), b"ping");
    };
    // The peer connection exists before counting, and every stream so far has closed.
    round_trip().await;
    let all_closed = || async {
        let text = orders.metrics().await;
        let s = |name| series(&text, name, "outbound", "orders");
        let (opened, closed) = (
            s("mesh_tcp_connections_opened_total"),
            s("mesh_tcp_connections_closed_total"),
        );
        (opened == closed).then_some(closed)
    };
    let closed_before = eventually("streams to close", PATIENCE, all_closed).await;
    let before = open_fds();
    // The sidecars, the app and the test share this runtime: every task a connection started
    // (accept, tunnel, splice, the app's handler) must have ended.
    let alive_tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let tasks_before = alive_tasks();
    for _ in 0..1000 {
        tokio::time::timeout(PATIENCE, round_trip())
            .await
            .expect("a round trip within the patience");
    }
    eventually("every descriptor to be closed", PATIENCE, || async {
        let now = open_fds();
        if now <= before {
            Ok(())
        } else {
            Err(format!("{now} open, {before} before"))
        }
    })
    .await;
    eventually("every task to end", PATIENCE, || async {
        let now = alive_tasks();
        if now <= tasks_before {
            Ok(())
        } else {
            Err(format!("{now} tasks alive, {tasks_before} before"))
        }
    })
    .await;
    let closed = eventually("streams to close", PATIENCE, all_closed).await;
    assert_eq!(closed, closed_before + 1000.0);
}

#[tokio::test]
async fn an_endpoint_that_refuses_connections_is_ejected() {
    let (app, seen) = tcp::reply_at_eof().await;
    drop(seen);
    let mesh = TestMesh::new();
    let live = mesh.sidecar("redis").app(app).start().await;
    let dead = free_port();
    let listen = free_port();
    let policy = format!(
        "{}\ncircuit_breaker: {{ consecutive_failures: 1, base_ejection_time: 1m }}",
        tcp_destination(listen, app.port())
    );
    let orders = mesh
        .sidecar("orders")
        .destination_with_policy("redis", &[dead, live.inbound], &policy)
        .start()
        .await;
    wait_for_listener(listen).await;

    // No retries: a connection that drew the dead endpoint fails. Once it is ejected, every
    // connection goes to the live one.
    let round_trip = || async move {
        let reply = tcp::round_trip(listen, b"ping", PATIENCE).await.ok()?;
        (reply == b"ping").then_some(())
    };
    eventually("the dead endpoint to be ejected", PATIENCE, || async {
        let _ = round_trip().await;
        let text = orders.metrics().await;
        let series = format!(r#"mesh_ejections_total{{destination="redis",endpoint="{dead}"}}"#);
        (metrics::value(&text, &series) == Some(1.0)).then_some(())
    })
    .await;
    for i in 0..20 {
        assert!(round_trip().await.is_some(), "connection {i} failed");
    }
    let text = orders.metrics().await;
    let failures =
        r#"mesh_tcp_connect_failures_total{destination="redis",reason="connect-refused"}"#;
    assert!(
        metrics::value(&text, failures).is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[tokio::test]
async fn long_lived_streams_do_not_starve_a_peer_connection() {
    // More streams than HTTP/2's usual 100 to 200 at once, all open, on the one peer connection.
    const HELD: usize = 300;
    let (app, seen) = tcp::reply_at_eof().await;
    drop(seen);
    let mesh = TestMesh::new();
    let (orders, _server, listen) = tcp_pair(&mesh, "orders", app, "").await;
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let mut conn = TcpStream::connect(listen).await.unwrap();
        conn.write_all(b"still here").await.unwrap();
        held.push(conn);
    }
    eventually("every held stream to be open", PATIENCE, || async {
        let text = orders.metrics().await;
        let s = |name| series(&text, name, "outbound", "orders");
        let open = s("mesh_tcp_connections_opened_total") - s("mesh_tcp_connections_closed_total");
        (open >= HELD as f64).then_some(())
    })
    .await;
    // One more stream still gets through, and so does every held one.
    let reply = tcp::round_trip(listen, b"one more", PATIENCE)
        .await
        .unwrap();
    assert_eq!(reply, b"one more");
    for mut conn in held {
        conn.shutdown().await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(PATIENCE, conn.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply, b"still here");
    }
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_waits_for_open_streams() {
    let mesh = TestMesh::new();
    let (orders, _server, listen, mut seen) = reporting_pair(&mesh).await;
    let mut held = open_stream(listen, &mut seen, b"sent before shutdown").await;

    let stopping = tokio::spawn(orders.shutdown());
    eventually("the listener to close", PATIENCE, || async {
        TcpStream::connect(listen).await.is_err().then_some(())
    })
    .await;
    // Well within the 5 s drain time: the stream is still open, so the sidecar still runs.
    assert!(
        !stopping.is_finished(),
        "the sidecar waits for the open stream"
    );
    held.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(PATIENCE, held.read_to_end(&mut reply))
        .await
        .expect("the reply arrives during the drain")
        .unwrap();
    assert_eq!(reply, b"sent before shutdown");
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("the sidecar stops once its streams are done")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_peer_that_never_answers_the_handshake_is_given_up_after_the_connect_timeout() {
    // A black hole: accepts TCP, never answers the TLS handshake.
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = hole.accept().await {
            held.push(tcp);
        }
    });
    let mesh = TestMesh::new();
    let listen = free_port();
    let orders = mesh
        .sidecar("orders")
        .extra_yaml("connect_timeout: 300ms\n")
        .destination_with_policy("redis", &[addr], &tcp_destination(listen, 6379))
        .start()
        .await;
    wait_for_listener(listen).await;

    // The app's connection is closed with nothing read once the handshake has taken the
    // connect timeout (the wait above was the first such connection), and each is counted.
    let reply = tcp::round_trip(listen, b"PING\r\n", PATIENCE).await;
    assert!(reply.as_deref().map_or(true, <[u8]>::is_empty), "{reply:?}");
    let series = r#"mesh_tcp_connect_failures_total{destination="redis",reason="connect-timeout"}"#;
    eventually("two connect timeouts counted", PATIENCE, || async {
        let text = orders.metrics().await;
        match metrics::value(&text, series) {
            Some(n) if n >= 2.0 => Ok(()),
            other => Err(format!("{series} is {other:?}")),
        }
    })
    .await;
}
