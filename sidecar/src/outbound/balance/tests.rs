use std::time::Duration;

use super::*;
use crate::config::{BreakerPolicy, DestinationPolicy};
use crate::metrics::Metrics;

fn balance(n: u16, algorithm: LoadBalancer, policy: BreakerPolicy) -> Balance {
    let metrics = Metrics::new();
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    );
    let endpoints = (1..=n)
        .map(|port| {
            let addr = ([127, 0, 0, 1], port).into();
            let endpoint = Endpoint::new(
                addr,
                "spiffe://mesh.local/ns/default/sa/x".parse().unwrap(),
                "x",
                tls.clone(),
                Duration::from_secs(1),
            );
            (endpoint, metrics.endpoint("x", addr))
        })
        .collect();
    let outlier = Outlier::new(policy, n as usize, Default::default());
    Balance::new("x".into(), endpoints, algorithm, outlier)
}

fn breaker() -> BreakerPolicy {
    BreakerPolicy {
        consecutive_failures: 1,
        base_ejection_time: Duration::from_secs(10),
        ..DestinationPolicy::default().circuit_breaker
    }
}

#[test]
fn round_robin_takes_turns_and_skips_tried_endpoints() {
    let b = balance(3, LoadBalancer::RoundRobin, breaker());
    let picks: Vec<_> = (0..6).map(|_| b.shared.pick(1, None).unwrap()).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    let attempts = Attempts::default();
    attempts.record(1);
    attempts.record(2);
    for _ in 0..5 {
        assert_eq!(b.shared.pick(1, Some(&attempts)), Some(0));
    }
    attempts.record(0);
    // Every endpoint tried: any will do.
    assert!(b.shared.pick(1, Some(&attempts)).is_some());
}

#[test]
fn p2c_prefers_the_less_loaded_endpoint() {
    let b = balance(2, LoadBalancer::P2cEwma, breaker());
    // Endpoint 0 answered slowly.
    b.shared.slots[0].load.start();
    b.shared.slots[0]
        .load
        .finish(1, Duration::from_millis(300), false);
    for _ in 0..50 {
        assert_eq!(b.shared.pick(2, None), Some(1));
    }
}

#[test]
fn ejected_endpoints_get_no_traffic_then_exactly_one_probe() {
    let b = balance(3, LoadBalancer::RoundRobin, breaker());
    let s = &b.shared;
    // One failure ejects endpoint 0 for 10 s.
    assert!(matches!(
        s.outlier.record(&s.slots[0].health, true, 1),
        Transition::Ejected(_)
    ));
    for _ in 0..20 {
        assert_ne!(s.pick(2, None), Some(0));
    }
    let after = 1 + 10_000_000_000;
    assert_eq!(
        s.pick(after, None),
        Some(0),
        "the probe goes to the returning endpoint"
    );
    for _ in 0..20 {
        assert_ne!(s.pick(after, None), Some(0), "one probe at a time");
    }
    assert_eq!(
        s.outlier.record(&s.slots[0].health, false, after),
        Transition::Returned
    );
    let picks: Vec<_> = (0..3).map(|_| s.pick(after, None).unwrap()).collect();
    assert!(picks.contains(&0));
}

#[test]
fn a_retry_that_tried_the_whole_pool_goes_to_an_ejected_endpoint_before_repeating() {
    let b = balance(2, LoadBalancer::RoundRobin, breaker());
    let s = &b.shared;
    // Endpoint 0 is ejected; endpoint 1 is in the pool but (say) dead.
    s.outlier.record(&s.slots[0].health, true, 1);
    // First tries never go to the ejected endpoint.
    for _ in 0..10 {
        assert_eq!(s.pick(2, Some(&Attempts::default())), Some(1));
    }
    // A retry after endpoint 1 failed tries endpoint 0 rather than 1 again.
    let attempts = Attempts::default();
    attempts.record(1);
    assert_eq!(s.pick(2, Some(&attempts)), Some(0));
    // Both tried: any.
    attempts.record(0);
    assert!(s.pick(2, Some(&attempts)).is_some());
}
