//! Micro-benchmarks of the per-request hot paths of the outbound side, each on realistic
//! input and without a network:
//! - `routing`: naming the destination from a `Host` header (step 2) and looking it up in the
//!   current table (step 3), with 10 and 1,000 destinations; and finding the request's route
//!   within its destination, with 0, 1, 10 and 100 routes by path, and 1, 10 and 100 routes on
//!   one path told apart by a header, the matching one last each time;
//! - `balance`: picking an endpoint (step 6), p2c-ewma and round-robin over 3 and 100
//!   endpoints, on the first try and on a retry, and under a 90/10 traffic split;
//! - `retry`: the retry budget as the retry layer uses it, and the classification of a try's
//!   outcome into a retry reason (step 5b);
//! - `headers`: trace-context extraction and injection (W3C and B3 single), starting and ending
//!   the sidecar's own span, and hop-by-hop header removal.
//!
//! Run with `cargo bench -p mesh-sidecar --bench hot_paths`; results in
//! `benches/results/micro.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method, Request, StatusCode};
use mesh_api::route::{PathMatch, RouteMatch};
use mesh_api::route_match::{Value, ValueMatch};
use mesh_control_plane::ca::{DEFAULT_LEAF_LIFETIME, DevCa};
use mesh_sidecar::bench_support::{
    self, Attempts, Balancer, RetryBudget, Table, authority, service_name,
};
use mesh_sidecar::classify::Class;
use mesh_sidecar::config::{Destination, DestinationPolicy, LoadBalancer};
use mesh_sidecar::headers::remove_hop_by_hop;
use mesh_sidecar::identity::{Credentials, Identity, SpiffeId};
use mesh_sidecar::metrics::Metrics;
use mesh_sidecar::telemetry::propagation::{self, B3};
use opentelemetry::Context;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceState,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

const TRUST_DOMAIN: &str = "mesh.local";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const B3_SINGLE: &str = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1";

/// The identity of the calling sidecar (`orders`), from a CA made for the run.
fn identity(ca: &DevCa) -> Identity {
    let leaf = ca
        .issue_service("default", "orders", DEFAULT_LEAF_LIFETIME)
        .unwrap();
    let id: SpiffeId = ca.spiffe_id("default", "orders").unwrap().parse().unwrap();
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let roots = CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    Identity::new(Credentials::from_parts(&id, chain, key, roots).unwrap()).unwrap()
}

fn peer(service: &str) -> SpiffeId {
    mesh_api::spiffe::format_service_id(TRUST_DOMAIN, "default", service)
        .parse()
        .unwrap()
}

/// `n` distinct loopback endpoint addresses, as a destination's sidecars would have.
fn endpoints(first: u16, n: u16) -> Vec<SocketAddr> {
    (first..first + n)
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .collect()
}

/// `inventory` and `n - 1` other destinations, three endpoints each, default policy.
fn destinations(n: usize) -> BTreeMap<String, Destination> {
    let others = [
        "payments",
        "shipping",
        "catalog",
        "users",
        "auth",
        "search",
        "reviews",
        "pricing",
        "notifications",
    ];
    let names =
        std::iter::once("inventory".to_owned()).chain((0..n - 1).map(|i| match others.get(i) {
            Some(name) if n <= 10 => (*name).to_owned(),
            _ => format!("svc-{i:04}"),
        }));
    names
        .enumerate()
        .map(|(i, name)| {
            let first = 20_000 + 3 * u16::try_from(i).unwrap();
            let destination = Destination {
                endpoints: endpoints(first, 3),
                identity: peer(&name),
                policy: DestinationPolicy::default(),
                tcp: None,
                virtual_address: None,
            };
            (name, destination)
        })
        .collect()
}

/// Steps 2 and 3, as the outbound handler routes an HTTP/1.1 request.
fn routing(c: &mut Criterion) {
    let ca = DevCa::generate(TRUST_DOMAIN).unwrap();
    let identity = identity(&ca);
    let metrics = Metrics::new();
    let req = Request::get("/api/stock/sku-1234")
        .header("host", "Inventory:8080")
        .header("user-agent", "orders/1.4.2")
        .header("accept", "application/json")
        .body(())
        .unwrap();

    let mut group = c.benchmark_group("routing");
    group.bench_function("name_from_host", |b| {
        b.iter(|| {
            let authority = authority(black_box(&req)).unwrap();
            service_name(&authority)
        });
    });
    for n in [10, 1_000] {
        let table = Table::build(&identity, &metrics, &destinations(n)).unwrap();
        // The table is published through a watch channel; a request borrows the current one.
        let (_tx, rx) = watch::channel(Arc::new(table));
        group.bench_with_input(BenchmarkId::new("name_and_lookup", n), &rx, |b, rx| {
            b.iter(|| {
                let authority = authority(black_box(&req)).unwrap();
                let name = service_name(&authority);
                let stack = rx.borrow().get(&name);
                (stack.unwrap(), authority)
            });
        });
    }
    // Finding the route: the whole lookup, destination and route, with `routes` routes on the
    // destination and the request matching the last (the most a request can cost); 0 is a
    // destination without routes.
    let route =
        |i: usize, matches, retries: &mesh_api::policy::RetryPolicy| mesh_api::route::RoutePolicy {
            name: format!("route-{i}"),
            matches,
            filters: Vec::new(),
            backend_refs: Vec::new(),
            timeout: None,
            retries: retries.clone(),
            fault: Default::default(),
        };
    let get = |path: PathMatch| RouteMatch {
        path,
        method: Some("GET".into()),
        ..RouteMatch::any()
    };
    for routes in [0, 1, 10, 100] {
        let mut destinations = destinations(10);
        let inventory = destinations.get_mut("inventory").unwrap();
        let retries = inventory.policy.retries.clone();
        inventory.policy.routes = (0..routes)
            .map(|i| {
                let prefix = || PathMatch::PathPrefix(format!("/api/v{i}"));
                let head = RouteMatch {
                    method: Some("HEAD".into()),
                    ..get(prefix())
                };
                route(i, vec![get(prefix()), head], &retries)
            })
            .collect();
        let uri: http::Uri = format!("/api/v{}/stock/sku-1234", routes.max(1) - 1)
            .parse()
            .unwrap();
        let table = Table::build(&identity, &metrics, &destinations).unwrap();
        let headers = req.headers().clone();
        assert_eq!(
            table
                .route("inventory", &Method::GET, &uri, &headers)
                .is_some(),
            routes > 0
        );
        group.bench_with_input(BenchmarkId::new("route", routes), &table, |b, table| {
            b.iter(|| table.route("inventory", &Method::GET, black_box(&uri), &headers));
        });
    }
    // Routes on one path told apart by a header (a tenant, a tester), as a header-based
    // canary or A/B split writes them; the request carries a browser's headers and matches
    // the last route.
    for routes in [1, 10, 100] {
        let mut destinations = destinations(10);
        let inventory = destinations.get_mut("inventory").unwrap();
        let retries = inventory.policy.retries.clone();
        inventory.policy.routes = (0..routes)
            .map(|i| {
                let by_tenant = RouteMatch {
                    headers: vec![ValueMatch {
                        name: "x-tenant".into(),
                        value: Value::Exact(format!("tenant-{i}")),
                    }],
                    ..get(PathMatch::PathPrefix("/api".into()))
                };
                route(i, vec![by_tenant], &retries)
            })
            .collect();
        let uri: http::Uri = "/api/stock/sku-1234?page=2".parse().unwrap();
        let mut headers = req.headers().clone();
        for (name, value) in [
            ("accept-language", "en-GB,en;q=0.9"),
            ("accept-encoding", "gzip, deflate, br"),
            ("cookie", "session=0123456789abcdef"),
            ("traceparent", TRACEPARENT),
            ("x-request-id", "7d3f2a1e-5c4b-4e8a-9f10-2b6c8d4e0a11"),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        headers.insert(
            "x-tenant",
            format!("tenant-{}", routes - 1).parse().unwrap(),
        );
        let table = Table::build(&identity, &metrics, &destinations).unwrap();
        assert_eq!(
            table
                .route("inventory", &Method::GET, &uri, &headers)
                .map(|r| r.to_string()),
            Some(format!("route-{}", routes - 1))
        );
        group.bench_with_input(
            BenchmarkId::new("route_by_header", routes),
            &table,
            |b, table| {
                b.iter(|| table.route("inventory", &Method::GET, black_box(&uri), &headers));
            },
        );
    }
    group.finish();
}

/// Step 6, with the `Attempts` record every outbound request carries.
fn balance(c: &mut Criterion) {
    let ca = DevCa::generate(TRUST_DOMAIN).unwrap();
    let identity = identity(&ca);
    let inventory = peer("inventory");
    let tls = identity.client_config(&inventory).unwrap();
    let metrics = Metrics::new();

    let mut group = c.benchmark_group("balance");
    for (algorithm, label) in [
        (LoadBalancer::P2cEwma, "p2c-ewma"),
        (LoadBalancer::RoundRobin, "round-robin"),
    ] {
        for n in [3, 100] {
            let balancer = Balancer::new(
                "inventory",
                algorithm,
                &[(1, endpoints(20_000, n))],
                &inventory,
                &tls,
                &metrics,
            );
            let first = Attempts::default();
            group.bench_with_input(BenchmarkId::new(format!("{label}/first"), n), &n, |b, _| {
                b.iter(|| balancer.pick(black_box(&first)).unwrap());
            });
            let retry = Attempts::default();
            retry.record(balancer.pick(&retry).unwrap());
            group.bench_with_input(BenchmarkId::new(format!("{label}/retry"), n), &n, |b, _| {
                b.iter(|| balancer.pick(black_box(&retry)).unwrap());
            });
        }
    }

    // v1 (three endpoints) takes 90% of requests, v2 (three endpoints) 10%.
    let split = Balancer::new(
        "inventory",
        LoadBalancer::P2cEwma,
        &[(90, endpoints(20_000, 3)), (10, endpoints(20_100, 3))],
        &inventory,
        &tls,
        &metrics,
    );
    // A first try chooses the backend and records it in the request's record: a fresh one
    // per request.
    group.bench_function("split-90-10/first", |b| {
        b.iter_batched_ref(
            Attempts::default,
            |attempts| split.pick(attempts).unwrap(),
            BatchSize::SmallInput,
        );
    });
    let retry = Attempts::default();
    retry.record(split.pick(&retry).unwrap());
    group.bench_function("split-90-10/retry", |b| {
        b.iter(|| split.pick(black_box(&retry)).unwrap());
    });
    group.finish();
}

/// Step 5b: the budget every request deposits into and every retry withdraws from, and the
/// classification of a try's outcome.
fn retry(c: &mut Criterion) {
    let metrics = Metrics::new();
    let policy = DestinationPolicy::default().retries;
    let budget = RetryBudget::new("inventory", policy.clone(), &metrics);

    let mut group = c.benchmark_group("retry");
    group.bench_function("budget/deposit", |b| b.iter(|| budget.deposit()));
    group.bench_function("budget/deposit_withdraw", |b| {
        b.iter(|| {
            budget.deposit();
            budget.withdraw()
        });
    });
    for (label, class) in [
        ("200", Class::Success(StatusCode::OK)),
        ("503", Class::ServerError(StatusCode::SERVICE_UNAVAILABLE)),
        ("connect-failure", Class::ConnectFailure),
    ] {
        group.bench_with_input(BenchmarkId::new("reason", label), &class, |b, class| {
            b.iter(|| bench_support::retry_reason(&policy, black_box(*class)));
        });
    }
    group.finish();
}

/// The headers of a typical HTTP/1.1 request from an app, plus `extra`.
fn request_headers(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri("/api/stock/sku-1234")
        .header("host", "inventory:8080")
        .header("user-agent", "orders/1.4.2")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, deflate")
        .header("x-request-id", "6f1c2a9e-51b4-4d5e-9a7c-2b8e3f0d4a11");
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    req.body(()).unwrap().into_parts().0.headers
}

/// The context the next hop is given: this sidecar's CLIENT span, a child of `parent`.
fn outgoing(parent: &Context) -> Context {
    let trace_id = parent.span().span_context().trace_id();
    let sc = SpanContext::new(
        trace_id,
        SpanId::from_hex("b7ad6b7169203331").unwrap(),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    parent.with_remote_span_context(sc)
}

/// Trace context in and out, and hop-by-hop removal, on the outbound path.
fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    for (label, header, value, b3) in [
        ("w3c", "traceparent", TRACEPARENT, None),
        ("b3-single", "b3", B3_SINGLE, Some(B3::Single)),
    ] {
        let incoming = request_headers(&[(header, value)]);
        group.bench_with_input(BenchmarkId::new("extract", label), &incoming, |b, h| {
            b.iter(|| propagation::extract(black_box(h)));
        });
        let extracted = propagation::extract(&incoming);
        assert_eq!(extracted.b3, b3);
        assert!(extracted.parent.span().span_context().is_valid());
        let cx = outgoing(&extracted.parent);
        group.bench_with_input(BenchmarkId::new("inject", label), &incoming, |b, h| {
            b.iter_batched_ref(
                || h.clone(),
                |h| propagation::inject(&cx, b3, h),
                BatchSize::SmallInput,
            );
        });
    }
    let typical = request_headers(&[
        ("connection", "keep-alive"),
        ("content-type", "application/json"),
        ("content-length", "128"),
        ("traceparent", TRACEPARENT),
    ]);
    group.bench_with_input(
        BenchmarkId::new("remove_hop_by_hop", "typical"),
        &typical,
        |b, h| {
            b.iter_batched_ref(|| h.clone(), remove_hop_by_hop, BatchSize::SmallInput);
        },
    );
    // Step 1b: the sidecar's own span, a child of the request's context.
    let parent = propagation::extract(&request_headers(&[("traceparent", TRACEPARENT)])).parent;
    for (label, recording) in [("unexported", false), ("recorded", true)] {
        let spans = bench_support::spans(recording);
        group.bench_function(BenchmarkId::new("span_start_end", label), |b| {
            b.iter(|| {
                let cx = spans.start(black_box(&parent), SpanKind::Client, || {
                    "GET inventory".to_owned()
                });
                cx.span().end();
            });
        });
    }
    // HTTP/1.1 clients rarely send `Connection` (keep-alive is the default), and HTTP/2 has none.
    let mut without = typical.clone();
    without.remove("connection");
    group.bench_with_input(
        BenchmarkId::new("remove_hop_by_hop", "none-present"),
        &without,
        |b, h| {
            b.iter_batched_ref(|| h.clone(), remove_hop_by_hop, BatchSize::SmallInput);
        },
    );
    group.finish();
}

criterion_group!(benches, routing, balance, retry, headers);
criterion_main!(benches);
