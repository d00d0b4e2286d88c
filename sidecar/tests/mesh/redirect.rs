//! `sidecar redirect`: the nftables rules it installs in a network namespace, checked with real
//! connections. Plain listeners stand in for the sidecar's; clients run as other users (an app
//! as `nobody`, the sidecar as its own UID) through `setpriv`, and read back nothing but the
//! connection: where it landed, and the original destination read there.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mesh_sidecar::original_dst::original_dst;
use mesh_testkit::netns::{self, Namespace, TwoHosts};
use mesh_testkit::process::KillOnDrop;
use mesh_testkit::{TestMesh, app, metrics};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::ORDERS_ID;

pub(crate) const SIDECAR: &str = env!("CARGO_BIN_EXE_sidecar");
/// The app's user: `nobody`.
pub(crate) const APP_UID: u32 = 65534;
/// The sidecar's user in these tests.
pub(crate) const PROXY_UID: u32 = 65532;
/// Each namespace has its own ports, so the defaults serve.
const OUTBOUND: u16 = 15001;
const INBOUND: u16 = 15006;
const ADMIN: u16 = 15000;
/// How long a connection may take to land.
const PATIENCE: Duration = Duration::from_secs(10);

/// `sidecar redirect ARGS`, run inside `namespace`.
pub(crate) fn redirect(namespace: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", namespace, SIDECAR, "redirect"])
        .args(args)
        .output()
        .expect("run sidecar redirect")
}

pub(crate) fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nft list tables` inside `namespace`, one table a line.
fn tables(namespace: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "list", "tables"])
        .output()
        .expect("run nft");
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `program ARGS` in `namespace` as the app's user; what it printed, once it is done.
pub(crate) async fn as_app(namespace: &str, program: &[&str]) -> Output {
    tokio::process::Command::new("ip")
        .args(["netns", "exec", namespace, "setpriv"])
        .arg(format!("--reuid={APP_UID}"))
        .arg(format!("--regid={APP_UID}"))
        .args(["--clear-groups", "timeout", "15"])
        .args(program)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the app's client")
}

/// A listener bound inside `namespace`.
pub(crate) fn listen(namespace: &str, addr: &str) -> TcpListener {
    let listener = netns::enter(namespace, || std::net::TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("bind {addr} in {namespace}: {e}"));
    listener.set_nonblocking(true).unwrap();
    TcpListener::from_std(listener).unwrap()
}

/// A client in `namespace`, as `uid` (or root), that connects to `to`, says `hello` and waits
/// for the server to close. Each program execs the next (`ip`, `setpriv`, `bash`, `cat`), so
/// the child is the one process to kill.
fn dial(namespace: &str, uid: Option<u32>, to: SocketAddr) -> KillOnDrop {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", namespace]);
    if let Some(uid) = uid {
        command.args([
            "setpriv".to_owned(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
        ]);
    }
    command
        .args([
            "bash",
            "-c",
            r#"exec 3<>"/dev/tcp/$0/$1" && printf 'hello\n' >&3 && exec cat <&3 >/dev/null"#,
        ])
        .arg(to.ip().to_string())
        .arg(to.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    KillOnDrop::new(command.spawn().expect("spawn the client"))
}

/// Waits for `client`'s connection on `listener`, checks it is the client's (it says hello),
/// and returns the original destination read there.
async fn lands_on(listener: &TcpListener, mut client: KillOnDrop) -> Option<SocketAddr> {
    let addr = listener.local_addr().unwrap();
    let accepted = tokio::time::timeout(PATIENCE, listener.accept()).await;
    let Ok(accepted) = accepted else {
        let _ = client.kill();
        let _ = client.wait();
        let mut said = String::new();
        if let Some(mut stderr) = client.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
        }
        panic!("no connection on {addr} within {PATIENCE:?}; the client said: {said}");
    };
    let (mut stream, _) = accepted.unwrap();
    let original = original_dst(&stream).expect("read the original destination");
    let mut hello = [0; 6];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut hello))
        .await
        .expect("the client says hello in time")
        .expect("read hello");
    assert_eq!(&hello, b"hello\n", "on {addr}");
    drop(stream);
    let status = client.exit_within(PATIENCE).await;
    assert!(status.success(), "client: {status}");
    original
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn dry_run_prints_the_ruleset_and_bad_flags_are_named() {
    let out = Command::new(SIDECAR)
        .args([
            "redirect",
            "--dry-run",
            "--proxy-uid",
            "1337",
            "--inbound-ports",
            "8080",
            "--exclude-outbound-ports",
            "5432",
            "--exclude-outbound-cidrs",
            "10.0.0.0/8",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let script = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = script.lines().map(str::trim).collect();
    for expected in [
        "table inet mesh_redirect {",
        "meta skuid { 1337 } return",
        "tcp dport { 5432, 15000, 15010, 15014 } return",
        "ip daddr { 10.0.0.0/8 } return",
        "meta l4proto tcp redirect to :15001",
        "tcp dport { 8080 } redirect to :15006",
    ] {
        assert!(lines.contains(&expected), "{expected:?} missing:\n{script}");
    }

    let out = Command::new(SIDECAR)
        .args([
            "redirect",
            "--dry-run",
            "--proxy-uid",
            "1",
            "--inbound-ports",
            "http",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--inbound-ports"), "{stderr}");
}

#[test]
fn without_nft_on_path_the_error_says_to_install_nftables() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(SIDECAR)
        .args(["redirect", "--proxy-uid", "1"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`nft` was not found on PATH"), "{stderr}");
    assert!(stderr.contains("nftables"), "{stderr}");
}

#[test]
fn without_net_admin_the_error_says_what_is_missing_and_nothing_is_installed() {
    if !netns::available("without_net_admin") {
        return;
    }
    let ns = Namespace::create();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "setpriv"])
        .arg(format!("--reuid={APP_UID}"))
        .arg(format!("--regid={APP_UID}"))
        .args(["--clear-groups", SIDECAR, "redirect", "--proxy-uid", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("operation not permitted"), "{stderr}");
    assert!(stderr.contains("NET_ADMIN"), "{stderr}");
    assert!(tables(&ns.name).is_empty(), "{:?}", tables(&ns.name));
}

#[tokio::test]
async fn applying_twice_leaves_one_table_and_remove_restores_direct_connections() {
    if !netns::available("applying_twice") {
        return;
    }
    let ns = Namespace::create();
    let uid = PROXY_UID.to_string();
    let outbound = listen(&ns.name, &format!("127.0.0.1:{OUTBOUND}"));
    let direct = listen(&ns.name, "127.0.0.1:9000");

    for _ in 0..2 {
        assert_success(&redirect(&ns.name, &["--proxy-uid", &uid]));
        assert_eq!(tables(&ns.name), ["table inet mesh_redirect"]);
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(["nft", "list", "table", "inet", "mesh_redirect"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert_eq!(listing.matches("chain output").count(), 1, "{listing}");
        assert_eq!(
            listing.matches("redirect to :15001").count(),
            1,
            "{listing}"
        );
    }
    let client = dial(&ns.name, Some(APP_UID), addr("127.0.0.1:9000"));
    assert_eq!(
        lands_on(&outbound, client).await,
        Some(addr("127.0.0.1:9000"))
    );

    for _ in 0..2 {
        assert_success(&redirect(&ns.name, &["--remove"]));
        assert!(tables(&ns.name).is_empty(), "{:?}", tables(&ns.name));
    }
    let client = dial(&ns.name, Some(APP_UID), addr("127.0.0.1:9000"));
    assert_eq!(lands_on(&direct, client).await, None);
}

#[tokio::test]
async fn outbound_connections_of_other_users_land_on_the_outbound_listener() {
    if !netns::available("outbound_connections") {
        return;
    }
    let hosts = TwoHosts::create();
    let (a, b) = (&hosts.a.name, &hosts.b.name);
    let outbound = listen(a, &format!("127.0.0.1:{OUTBOUND}"));
    let admin = listen(a, &format!("127.0.0.1:{ADMIN}"));
    let local_app = listen(a, "0.0.0.0:9000");
    let peer = listen(b, "0.0.0.0:9000");
    assert_success(&redirect(a, &["--proxy-uid", &PROXY_UID.to_string()]));

    // The app's connections, wherever they go, land on the outbound listener, which reads
    // where they were going.
    for to in ["127.0.0.1:9000", "198.18.0.1:9000", "198.18.0.2:9000"] {
        let client = dial(a, Some(APP_UID), addr(to));
        assert_eq!(lands_on(&outbound, client).await, Some(addr(to)), "{to}");
    }
    // The sidecar's own listener, dialled directly, is reached as it is: no loop.
    let client = dial(a, Some(APP_UID), addr(&format!("127.0.0.1:{OUTBOUND}")));
    assert_eq!(lands_on(&outbound, client).await, None);
    // The admin port is excluded by default.
    let client = dial(a, Some(APP_UID), addr(&format!("127.0.0.1:{ADMIN}")));
    assert_eq!(lands_on(&admin, client).await, None);
    // The sidecar's own connections are not redirected, locally or across the link.
    let client = dial(a, Some(PROXY_UID), addr("127.0.0.1:9000"));
    assert_eq!(lands_on(&local_app, client).await, None);
    let client = dial(a, Some(PROXY_UID), addr("198.18.0.2:9000"));
    assert_eq!(lands_on(&peer, client).await, None);
}

#[tokio::test]
async fn ipv6_is_redirected_to_the_ipv6_loopback_only_with_the_flag() {
    if !netns::available("ipv6_is_redirected") {
        return;
    }
    let ns = Namespace::create();
    let uid = PROXY_UID.to_string();
    let outbound = listen(&ns.name, &format!("[::1]:{OUTBOUND}"));
    let direct = listen(&ns.name, "[::1]:9000");

    assert_success(&redirect(&ns.name, &["--proxy-uid", &uid, "--ipv6"]));
    let client = dial(&ns.name, Some(APP_UID), addr("[::1]:9000"));
    assert_eq!(lands_on(&outbound, client).await, Some(addr("[::1]:9000")));

    assert_success(&redirect(&ns.name, &["--proxy-uid", &uid]));
    let client = dial(&ns.name, Some(APP_UID), addr("[::1]:9000"));
    assert_eq!(lands_on(&direct, client).await, None);
}

#[tokio::test]
async fn connections_from_another_host_to_the_apps_ports_land_on_the_inbound_listener() {
    if !netns::available("connections_from_another_host") {
        return;
    }
    let hosts = TwoHosts::create();
    let (a, b) = (&hosts.a.name, &hosts.b.name);
    let inbound = listen(a, &format!("0.0.0.0:{INBOUND}"));
    let admin = listen(a, &format!("0.0.0.0:{ADMIN}"));
    let other = listen(a, "0.0.0.0:9090");
    let uid = PROXY_UID.to_string();
    assert_success(&redirect(
        a,
        &["--proxy-uid", &uid, "--inbound-ports", "8080"],
    ));

    let client = dial(b, None, addr("198.18.0.1:8080"));
    assert_eq!(
        lands_on(&inbound, client).await,
        Some(addr("198.18.0.1:8080"))
    );
    // A port not named, the admin port, and the inbound listener itself are reached directly.
    let client = dial(b, None, addr("198.18.0.1:9090"));
    assert_eq!(lands_on(&other, client).await, None);
    let client = dial(b, None, addr(&format!("198.18.0.1:{ADMIN}")));
    assert_eq!(lands_on(&admin, client).await, None);
    let client = dial(b, None, addr(&format!("198.18.0.1:{INBOUND}")));
    assert_eq!(lands_on(&inbound, client).await, None);

    // Applied again without --inbound-ports, the ruleset is replaced: every port but the
    // excluded ones is redirected.
    assert_success(&redirect(a, &["--proxy-uid", &uid]));
    let client = dial(b, None, addr("198.18.0.1:9090"));
    assert_eq!(
        lands_on(&inbound, client).await,
        Some(addr("198.18.0.1:9090"))
    );
    let client = dial(b, None, addr(&format!("198.18.0.1:{ADMIN}")));
    assert_eq!(lands_on(&admin, client).await, None);
}

#[tokio::test]
async fn a_real_sidecar_serves_the_apps_redirected_http() {
    if !netns::available("a_real_sidecar_serves") {
        return;
    }
    let ns = Namespace::create();
    let mesh = TestMesh::new();
    let inventory = mesh
        .sidecar("inventory")
        .app(app::echo("inventory").await)
        .start()
        .await;
    // The orders sidecar runs in this process; its outbound listener is inside the namespace,
    // where the app is, and it dials inventory from here.
    let outbound = listen(&ns.name, &format!("127.0.0.1:{OUTBOUND}"));
    let orders = mesh
        .sidecar("orders")
        .destination_with_policy(
            "inventory",
            &[inventory.inbound],
            &format!("virtual_address: {INVENTORY_VIP}"),
        )
        .outbound_listener(outbound)
        .start()
        .await;
    assert_success(&redirect(
        &ns.name,
        &["--proxy-uid", &PROXY_UID.to_string()],
    ));

    // The app calls inventory at an address where nothing listens; only the redirect to the
    // sidecar can answer.
    // Awaited, not blocked on: the sidecar serves on this test's runtime.
    let out = as_app(
        &ns.name,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-H",
            "Host: inventory",
            "http://127.0.0.1:9000/api/stock",
        ],
    )
    .await;
    assert_success(&out);
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["service"], "inventory", "{seen}");
    assert_eq!(seen["path"], "/api/stock", "{seen}");
    assert_eq!(seen["caller"], ORDERS_ID, "{seen}");

    // An app that dials the service's virtual address, with no Host naming it, reaches it too:
    // the sidecar names the service by the original destination.
    let url = format!("http://{INVENTORY_VIP}/api/stock/42");
    let out = as_app(&ns.name, &["curl", "-sS", "--max-time", "10", &url]).await;
    assert_success(&out);
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["service"], "inventory", "{seen}");
    assert_eq!(seen["path"], "/api/stock/42", "{seen}");
    assert_eq!(seen["caller"], ORDERS_ID, "{seen}");
    drop(orders);
}

/// A plain client on another host dials the app's port straight: the redirect brings it to the
/// sidecar's inbound listener, where `authorization.unauthenticated` decides (refused by
/// default, served with no identity when allowed), and a caller identity the client forges
/// never reaches the app.
#[tokio::test]
async fn a_plain_client_dialling_the_apps_port_meets_the_sidecars_unauthenticated_policy() {
    if !netns::available("a_plain_client_dialling_the_apps_port") {
        return;
    }
    let hosts = TwoHosts::create();
    let (a, b) = (&hosts.a.name, &hosts.b.name);
    let mesh = TestMesh::new();
    let app = app::echo("inventory").await;
    // Two sidecars for the same app, one per policy, each with its inbound listener in B; the
    // redirect is pointed at one, then the other.
    let denying = mesh
        .sidecar("inventory")
        .app(app)
        .inbound_listener(listen(b, &format!("0.0.0.0:{INBOUND}")))
        .start()
        .await;
    let allowing = mesh
        .sidecar("inventory")
        .app(app)
        .extra_yaml("authorization: { unauthenticated: allow }\n")
        .inbound_listener(listen(b, "0.0.0.0:15016"))
        .start()
        .await;
    let uid = PROXY_UID.to_string();
    // The client in A: curl with a forged identity, printing the body, then the status.
    let call = || async {
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", a, "curl", "-sS", "--max-time", "10"])
            .args([
                "-H",
                "x-mesh-client-id: spiffe://mesh.local/ns/default/sa/payments",
            ])
            .args(["-w", "\n%{http_code}", "http://198.18.0.2:8080/api/stock"])
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert_success(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.to_owned(), body.to_owned())
    };

    assert_success(&redirect(
        b,
        &["--proxy-uid", &uid, "--inbound-ports", "8080"],
    ));
    let (status, body) = call().await;
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("takes only mesh mTLS"), "{body}");
    let refused = r#"mesh_requests_total{direction="inbound",source="unauthenticated",destination="inventory",status_code="403"}"#;
    assert_eq!(metrics::value(&denying.metrics().await, refused), Some(1.0));

    assert_success(&redirect(
        b,
        &[
            "--proxy-uid",
            &uid,
            "--inbound-ports",
            "8080",
            "--inbound-port",
            "15016",
        ],
    ));
    let (status, body) = call().await;
    assert_eq!(status, "200", "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/api/stock", "{seen}");
    assert_eq!(seen["caller"], serde_json::Value::Null, "{seen}");
    assert!(seen["headers"].get("x-mesh-client-id").is_none(), "{seen}");
    let served = r#"mesh_requests_total{direction="inbound",source="unauthenticated",destination="inventory",status_code="200"}"#;
    assert_eq!(metrics::value(&allowing.metrics().await, served), Some(1.0));
}

/// Inventory's virtual address in the test above: in the default range, where nothing listens.
const INVENTORY_VIP: &str = "127.240.0.9";

/// An unmodified redis-cli, as another user in the namespace, dials redis by its virtual
/// address; the redirect brings the connection to the sidecar, which names the `protocol: tcp`
/// destination by that address and tunnels it over mTLS to redis-server behind its own sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_reaches_redis_by_its_virtual_address_through_both_sidecars() {
    if !netns::available("redis_cli_reaches_redis") {
        return;
    }
    let Some(redis) = crate::tcp::Redis::start().await else {
        return;
    };
    let ns = Namespace::create();
    let mesh = TestMesh::new();
    let server = mesh.sidecar("redis").app(redis.addr).start().await;
    let outbound = listen(&ns.name, &format!("127.0.0.1:{OUTBOUND}"));
    let listen_addr = mesh_testkit::free_port();
    let caller = mesh
        .sidecar("orders")
        .destination_with_policy(
            "redis",
            &[server.inbound],
            &format!(
                "protocol: tcp\nlisten: \"{listen_addr}\"\nport: {}\nvirtual_address: {REDIS_VIP}",
                redis.addr.port()
            ),
        )
        .outbound_listener(outbound)
        .start()
        .await;
    assert_success(&redirect(
        &ns.name,
        &["--proxy-uid", &PROXY_UID.to_string()],
    ));

    let cli = ["redis-cli", "-h", REDIS_VIP, "-p", "6379"];
    let set = as_app(
        &ns.name,
        &[&cli[..], &["SET", "greeting", "through the mesh"]].concat(),
    )
    .await;
    assert_success(&set);
    assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "OK");
    let get = as_app(&ns.name, &[&cli[..], &["GET", "greeting"]].concat()).await;
    assert_success(&get);
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "through the mesh"
    );
    // Both sidecars counted the stream: it crossed the mesh, not a direct path.
    let opened = |direction: &str, source: &str| {
        format!(
            "mesh_tcp_connections_opened_total{{direction=\"{direction}\",source=\"{source}\",destination=\"redis\"}}"
        )
    };
    let caller_metrics = caller.metrics().await;
    assert!(
        mesh_testkit::metrics::value(&caller_metrics, &opened("outbound", "orders")) >= Some(2.0),
        "{caller_metrics}"
    );
    let server_metrics = server.metrics().await;
    assert!(
        mesh_testkit::metrics::value(&server_metrics, &opened("inbound", "orders")) >= Some(2.0),
        "{server_metrics}"
    );
    drop(caller);
}

/// Redis's virtual address in the test above.
const REDIS_VIP: &str = "127.240.0.10";

/// A server that speaks first (an SMTP-like greeting) behind a port listed in
/// `inbound.opaque_ports`: a plain client on another host dials the app's port, the redirect
/// brings it to the inbound listener, and the greeting reaches it though it sends nothing.
/// Detection would wait 30 s here (`detect_timeout` and the plain-connection wait,
/// `tls_handshake_timeout`), three times longer than the client waits, so only the opaque path
/// can pass.
#[tokio::test]
async fn a_server_that_speaks_first_is_reached_through_an_opaque_port_without_detection() {
    if !netns::available("a_server_that_speaks_first") {
        return;
    }
    const GREETING: &[u8] = b"220 mail.example ESMTP ready\r\n";
    let hosts = TwoHosts::create();
    let (a, b) = (&hosts.a.name, &hosts.b.name);
    let mesh = TestMesh::new();
    // The app greets each client first, then holds the connection until the client closes.
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let greeter = tokio::spawn(async move {
        loop {
            let (mut conn, _) = app.accept().await.unwrap();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                conn.write_all(GREETING).await.unwrap();
                let mut rest = Vec::new();
                let _ = conn.read_to_end(&mut rest).await;
            });
        }
    });
    let sidecar = mesh
        .sidecar("mail")
        .app(app_addr)
        .extra_yaml(
            "authorization: { unauthenticated: allow }\n\
             inbound: { opaque_ports: [\"2525-2526\", 3306] }\n\
             detect_timeout: 30s\n\
             limits: { inbound: { tls_handshake_timeout: 30s } }\n",
        )
        .inbound_listener(listen(b, &format!("0.0.0.0:{INBOUND}")))
        .start()
        .await;
    assert_success(&redirect(
        b,
        &[
            "--proxy-uid",
            &PROXY_UID.to_string(),
            "--inbound-ports",
            "2525",
        ],
    ));

    let client = netns::enter(a, || {
        std::net::TcpStream::connect_timeout(&addr("198.18.0.2:2525"), PATIENCE)
    })
    .expect("connect to the app's port");
    client.set_nonblocking(true).unwrap();
    let mut client = tokio::net::TcpStream::from_std(client).unwrap();
    let mut greeting = vec![0; GREETING.len()];
    tokio::time::timeout(PATIENCE, client.read_exact(&mut greeting))
        .await
        .expect("the greeting arrives without the client speaking")
        .expect("read the greeting");
    assert_eq!(greeting, GREETING);
    // It came through the sidecar's plain TCP path, as an unauthenticated caller.
    let opened = r#"mesh_tcp_connections_opened_total{direction="inbound",source="unauthenticated",destination="mail"}"#;
    let metrics = sidecar.metrics().await;
    assert_eq!(metrics::value(&metrics, opened), Some(1.0), "{metrics}");
    drop(client);
    greeter.abort();
}

#[test]
fn a_namespace_is_deleted_when_its_guard_drops() {
    if !netns::available("a_namespace_is_deleted") {
        return;
    }
    let ns = Namespace::create();
    let path = format!("/run/netns/{}", ns.name);
    assert!(Path::new(&path).exists(), "{path}");
    drop(ns);
    assert!(!Path::new(&path).exists(), "{path}");
}
