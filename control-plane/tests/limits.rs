//! The API's and the admin listener's limits, against a real control plane over real TLS:
//! per-caller rates, connection and handshake caps, the idle timeout, HTTP/2 rapid reset,
//! registration bound to the source address, the instance cap, and the admin rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Dirs, Sidecar, TD, client_tls, limited, tcp_from, tls_from};
use http::{Method, StatusCode};
use mesh_api::proto::v1;
use mesh_control_plane::{Listeners, admin_client, client};
use mesh_testkit::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const PATIENCE: Duration = Duration::from_secs(10);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn shop(mesh_extra: &str) -> Dirs {
    Dirs::new(
        &format!("trust_domain: {TD}\ncertificate_lifetime: 1h\n{mesh_extra}"),
        &[
            ("orders", "name: orders\ncalls: [inventory]\n"),
            ("inventory", "name: inventory\n"),
            ("payments", "name: payments\n"),
        ],
    )
}

async fn certify_from(
    from: IpAddr,
    cp: &mesh_control_plane::ControlPlane,
    dirs: &Dirs,
    service: &str,
    token: &str,
) -> Result<(), tonic::Status> {
    let channel = common::try_channel_from(from, cp, client_tls(dirs, None))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (_key, csr_der) =
        client::csr(&[&format!("spiffe://{TD}/ns/default/sa/{service}")]).unwrap();
    v1::identity_client::IdentityClient::new(channel)
        .certify(v1::CertifyRequest {
            service: service.into(),
            token: token.into(),
            csr_der,
        })
        .await
        .map(drop)
}

/// Reads until the peer closes the connection; `Err` if it is still open after `within`.
async fn closed_within(
    stream: &mut (impl AsyncReadExt + Unpin),
    within: Duration,
) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {within:?}")),
            Ok(Ok(0) | Err(_)) => return Ok(()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certify_flood_from_one_address_is_refused_while_another_address_is_served() {
    let dirs = shop(
        "api:\n  rate_limits:\n    certify_per_source_ip: { requests_per_second: 0.001, burst: 4 }\n",
    );
    let cp = dirs.start().await;
    let flooder = ip("127.0.0.1");
    for _ in 0..4 {
        let refused = certify_from(flooder, &cp, &dirs, "orders", "guess")
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    let refused = certify_from(flooder, &cp, &dirs, "orders", &dirs.token("orders"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("api.rate_limits.certify_per_source_ip"),
        "{}",
        refused.message()
    );
    // Another caller still gets its certificate.
    certify_from(
        ip("127.0.0.2"),
        &cp,
        &dirs,
        "inventory",
        &dirs.token("inventory"),
    )
    .await
    .unwrap();
    assert_eq!(
        limited(&cp, "api.rate_limits.certify_per_source_ip").await,
        1.0
    );
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guesses_for_one_service_are_refused_while_other_services_are_served() {
    let dirs = shop(
        "api:\n  rate_limits:\n    certify_per_service: { requests_per_second: 0.001, burst: 3 }\n",
    );
    let cp = dirs.start().await;
    // Guesses spread over addresses, all at one service.
    for from in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let refused = certify_from(ip(from), &cp, &dirs, "payments", "guess")
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    let refused = certify_from(ip("127.0.0.4"), &cp, &dirs, "payments", "guess")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("service payments: api.rate_limits.certify_per_service"),
        "{}",
        refused.message()
    );
    certify_from(ip("127.0.0.1"), &cp, &dirs, "orders", &dirs.token("orders"))
        .await
        .unwrap();
    assert_eq!(
        limited(&cp, "api.rate_limits.certify_per_service").await,
        1.0
    );
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_past_a_callers_rate_are_refused_and_other_callers_are_served() {
    let dirs = shop(
        "api:\n  rate_limits:\n    register_per_caller: { requests_per_second: 0.001, burst: 3 }\n",
    );
    let cp = dirs.start().await;
    let orders = Sidecar::new(&cp, &dirs, "orders").await;
    for _ in 0..3 {
        orders.try_register("o-1", "127.0.0.1:7001").await.unwrap();
    }
    let refused = orders
        .try_register("o-1", "127.0.0.1:7001")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("service orders: api.rate_limits.register_per_caller"),
        "{}",
        refused.message()
    );
    let inventory = Sidecar::new(&cp, &dirs, "inventory").await;
    inventory
        .try_register("i-1", "127.0.0.1:7101")
        .await
        .unwrap();
    assert_eq!(
        limited(&cp, "api.rate_limits.register_per_caller").await,
        1.0
    );
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registers_the_address_it_connects_from_or_an_allowed_one() {
    let dirs = shop("registration:\n  allowed_addresses: [127.0.0.3/32]\n");
    let cp = dirs.start().await;
    let from_one = Sidecar::from(&cp, &dirs, "inventory", ip("127.0.0.1")).await;
    let refused = from_one
        .try_register("i-1", "127.0.0.2:7101")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        refused.message(),
        "address 127.0.0.2:7101 is not where this connection comes from (127.0.0.1): an \
         instance registers its own address, unless registration.allowed_addresses holds it"
    );
    // Its own address, and an address in an allowed range, are taken.
    from_one
        .try_register("i-1", "127.0.0.1:7101")
        .await
        .unwrap();
    from_one
        .try_register("i-3", "127.0.0.3:7103")
        .await
        .unwrap();
    let from_two = Sidecar::from(&cp, &dirs, "inventory", ip("127.0.0.2")).await;
    from_two
        .try_register("i-2", "127.0.0.2:7102")
        .await
        .unwrap();

    let status = cp.status();
    let mut addresses: Vec<String> = status.services["inventory"]
        .instances
        .iter()
        .map(|i| i.address.clone())
        .collect();
    addresses.sort();
    assert_eq!(
        addresses,
        ["127.0.0.1:7101", "127.0.0.2:7102", "127.0.0.3:7103"]
    );
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_registers_at_most_its_cap_of_instances() {
    let dirs = shop("registration:\n  max_instances_per_service: 2\n");
    let cp = dirs.start().await;
    let inventory = Sidecar::new(&cp, &dirs, "inventory").await;
    inventory
        .try_register("i-1", "127.0.0.1:7101")
        .await
        .unwrap();
    inventory
        .try_register("i-2", "127.0.0.1:7102")
        .await
        .unwrap();
    let refused = inventory
        .try_register("i-3", "127.0.0.1:7103")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        refused.message(),
        "service inventory has 2 instances registered, registration.max_instances_per_service; \
         deregister one or raise the limit"
    );
    // An instance already registered registers again; another service has its own cap.
    inventory
        .try_register("i-2", "127.0.0.1:7102")
        .await
        .unwrap();
    let orders = Sidecar::new(&cp, &dirs, "orders").await;
    orders.try_register("o-1", "127.0.0.1:7001").await.unwrap();
    // A place freed is taken.
    let removed = inventory
        .registry()
        .deregister(v1::DeregisterRequest {
            instance_id: "i-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .removed;
    assert!(removed);
    inventory
        .try_register("i-3", "127.0.0.1:7103")
        .await
        .unwrap();
    assert_eq!(
        limited(&cp, "registration.max_instances_per_service").await,
        1.0
    );
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_registrations_all_reach_the_callers_snapshot() {
    let dirs = shop("");
    let cp = dirs.start().await;
    let orders = Sidecar::new(&cp, &dirs, "orders").await;
    let mut watch = orders.watch("o-1").await;
    let inventory = Sidecar::new(&cp, &dirs, "inventory").await;
    let registrations = (0..40).map(|i| {
        let registry = inventory.registry();
        async move {
            let mut registry = registry;
            registry
                .register(v1::RegisterRequest {
                    instance: Some(v1::Instance {
                        instance_id: format!("i-{i}"),
                        service: "inventory".into(),
                        address: format!("127.0.0.1:{}", 8000 + i),
                        ..Default::default()
                    }),
                })
                .await
        }
    });
    for result in futures_join(registrations).await {
        result.unwrap();
    }
    let snapshot = watch
        .until(PATIENCE, |s| common::endpoints(s, "inventory").len() == 40)
        .await;
    assert_eq!(snapshot.version, cp.version());
    cp.stop().await.unwrap();
}

async fn futures_join<F: Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_and_those_open_are_served() {
    let dirs = shop("api:\n  max_connections: 2\n  max_handshakes: 2\n  handshake_timeout: 1m\n");
    let cp = dirs.start().await;
    let from = ip("127.0.0.1");
    // Two connections that never finish their handshakes take both places.
    let mut first = tcp_from(from, cp.api_addr()).await;
    let _second = tcp_from(from, cp.api_addr()).await;
    eventually("both places taken", PATIENCE, || async {
        let mut third = tcp_from(from, cp.api_addr()).await;
        closed_within(&mut third, Duration::from_secs(2)).await
    })
    .await;
    assert!(limited(&cp, "api.max_connections").await >= 1.0);
    // Once one leaves, a client is served again.
    first.shutdown().await.unwrap();
    drop(first);
    let token = dirs.token("orders");
    eventually("a place to be free again", PATIENCE, || {
        certify_from(from, &cp, &dirs, "orders", &token)
    })
    .await;
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_completes_its_handshake_is_dropped_after_the_timeout() {
    let dirs = shop("api:\n  handshake_timeout: 300ms\n");
    let cp = dirs.start().await;
    let mut silent = tcp_from(ip("127.0.0.1"), cp.api_addr()).await;
    // Well under the 10s default, well over the configured timeout.
    closed_within(&mut silent, Duration::from_secs(5))
        .await
        .unwrap();
    // Counted just after the connection is dropped.
    eventually("the timeout to be counted", PATIENCE, || async {
        (limited(&cp, "api.handshake_timeout").await == 1.0).then_some(())
    })
    .await;
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_one_with_a_watch_stream_is_kept() {
    let dirs = shop("api:\n  idle_timeout: 1s\n");
    let cp = dirs.start().await;
    let orders = Sidecar::new(&cp, &dirs, "orders").await;
    let mut watch = orders.watch("o-1").await;
    watch.next(PATIENCE).await.unwrap();
    // An HTTP/2 connection that makes no call.
    let tls = tls_from(ip("127.0.0.1"), &cp, client_tls(&dirs, None)).await;
    let (_client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("the idle connection is closed")
        .ok();
    assert!(limited(&cp, "api.idle_timeout").await >= 1.0);
    // The watch stream, older than the idle one, still gets snapshots.
    dirs.write_service("inventory", "name: inventory\ntimeout: 3s\n");
    watch
        .until(PATIENCE, |s| {
            common::policy_timeout(s, "inventory") == Some(3000)
        })
        .await;
    cp.stop().await.unwrap();
}

/// HTTP/2 frames written by hand, so a whole attack goes out in one write: a client library
/// writes as it goes, and would be writing into the closed connection when the GOAWAY comes.
mod frames {
    pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub(crate) const ENHANCE_YOUR_CALM: u32 = 0xb;
    const CANCEL: u32 = 0x8;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    pub(crate) fn settings() -> Vec<u8> {
        frame(0x4, 0, 0, &[])
    }

    /// HEADERS of `POST /` (HPACK static table), with `content-length` when given; the stream
    /// stays open for a body.
    pub(crate) fn post(stream: u32, content_length: Option<u8>) -> Vec<u8> {
        let mut block = vec![0x83, 0x86, 0x84];
        if let Some(length) = content_length {
            // Literal without indexing, name `content-length` (static index 28).
            block.extend_from_slice(&[0x0f, 0x0d, 0x01, b'0' + length]);
        }
        frame(0x1, 0x4, stream, &block)
    }

    pub(crate) fn data(stream: u32, body: &[u8]) -> Vec<u8> {
        frame(0x0, 0x1, stream, body)
    }

    pub(crate) fn cancel(stream: u32) -> Vec<u8> {
        frame(0x3, 0, stream, &CANCEL.to_be_bytes())
    }

    /// The error code of the first GOAWAY in `bytes`, the server's side of a connection.
    pub(crate) fn goaway(bytes: &[u8]) -> Option<u32> {
        let mut at = 0;
        while at + 9 <= bytes.len() {
            let len = usize::from(bytes[at]) << 16
                | usize::from(bytes[at + 1]) << 8
                | usize::from(bytes[at + 2]);
            let payload = bytes.get(at + 9..at + 9 + len)?;
            if bytes[at + 3] == 0x7 {
                return Some(u32::from_be_bytes(payload.get(4..8)?.try_into().ok()?));
            }
            at += 9 + len;
        }
        None
    }
}

/// Writes `attack` on a new TLS connection in one go and reads what the server sends until it
/// closes the connection.
async fn h2_burst(cp: &mesh_control_plane::ControlPlane, dirs: &Dirs, attack: Vec<u8>) -> Vec<u8> {
    let mut tls = tls_from(ip("127.0.0.1"), cp, client_tls(dirs, None)).await;
    let mut out = frames::PREFACE.to_vec();
    out.extend(frames::settings());
    out.extend(attack);
    tls.write_all(&out).await.unwrap();
    tls.flush().await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server ends the connection");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_gets_a_goaway_and_the_api_keeps_serving() {
    let dirs = shop("api:\n  max_pending_accept_reset_streams: 5\n");
    let cp = dirs.start().await;
    // Streams opened and reset at once, many times the cap.
    let attack = (0..50u32)
        .flat_map(|i| [frames::post(2 * i + 1, None), frames::cancel(2 * i + 1)])
        .flatten()
        .collect();
    let received = h2_burst(&cp, &dirs, attack).await;
    assert_eq!(frames::goaway(&received), Some(frames::ENHANCE_YOUR_CALM));
    // Everyone else is served as before.
    certify_from(ip("127.0.0.1"), &cp, &dirs, "orders", &dirs.token("orders"))
        .await
        .unwrap();
    cp.stop().await.unwrap();
}

/// Without a cap (tonic's default lifts hyper's), a client can make the server reset streams
/// for its errors without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_the_server_resets_for_errors_are_capped_with_a_goaway() {
    let dirs = shop("api:\n  max_local_error_reset_streams: 5\n");
    let cp = dirs.start().await;
    // Each request sends more body than its content-length says: a stream error the server
    // answers with RST_STREAM. The client resets nothing itself.
    let attack = (0..50u32)
        .flat_map(|i| {
            [
                frames::post(2 * i + 1, Some(1)),
                frames::data(2 * i + 1, b"xx"),
            ]
        })
        .flatten()
        .collect();
    let received = h2_burst(&cp, &dirs, attack).await;
    assert_eq!(frames::goaway(&received), Some(frames::ENHANCE_YOUR_CALM));
    certify_from(ip("127.0.0.1"), &cp, &dirs, "orders", &dirs.token("orders"))
        .await
        .unwrap();
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listener_beyond_loopback_needs_the_token_to_show_the_mesh() {
    let dirs = shop("");
    // Every interface: not a loopback address (requests still go to 127.0.0.1).
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), "0.0.0.0:0".parse().unwrap())
        .await
        .unwrap();
    let cp = mesh_control_plane::start(dirs.options(), listeners)
        .await
        .unwrap();
    let admin = format!("127.0.0.1:{}", cp.admin_addr().port())
        .parse()
        .unwrap();
    let token = std::fs::read_to_string(cp.admin_token_path()).unwrap();
    for path in ["/status", "/config", "/ca/roots"] {
        let (status, body) = admin_client::request(admin, Method::GET, path)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("not a loopback address needs the admin token"),
            "{path}: {body}"
        );
        let (status, _) = admin_client::request_with_token(admin, Method::GET, path, Some(&token))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    for path in ["/live", "/ready", "/metrics"] {
        let (status, _) = admin_client::request(admin, Method::GET, path)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    cp.stop().await.unwrap();

    // On loopback, reads stay open.
    let cp = dirs.start().await;
    let (status, _) = admin_client::request(cp.admin_addr(), Method::GET, "/status")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_closes_a_request_whose_headers_never_end() {
    let dirs = shop("admin:\n  header_timeout: 300ms\n");
    let cp = dirs.start().await;
    let mut slow = tcp_from(ip("127.0.0.1"), cp.admin_addr()).await;
    slow.write_all(b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // Well under hyper's own 30s, well over the configured timeout.
    closed_within(&mut slow, Duration::from_secs(5))
        .await
        .unwrap();
    cp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_closes_connections_over_its_cap() {
    let dirs = shop("admin:\n  max_connections: 2\n  header_timeout: 1m\n");
    let cp = dirs.start().await;
    let admin = cp.admin_addr();
    // Two open connections take both places; a third is closed at once.
    let _first = tcp_from(ip("127.0.0.1"), admin).await;
    let _second = tcp_from(ip("127.0.0.1"), admin).await;
    let mut third = tcp_from(ip("127.0.0.1"), admin).await;
    closed_within(&mut third, Duration::from_secs(2))
        .await
        .unwrap();
    drop((_first, _second));
    let value = eventually("a place on the admin listener", PATIENCE, || async {
        admin_client::request(admin, Method::GET, "/metrics")
            .await
            .map(|(_, body)| String::from_utf8_lossy(&body).into_owned())
    })
    .await;
    let series = "mesh_control_plane_limited_total{limit=\"admin.max_connections\"}";
    assert!(mesh_testkit::metrics::value(&value, series).unwrap() >= 1.0);
    cp.stop().await.unwrap();
}
