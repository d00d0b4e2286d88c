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

/// A fresh balancer (as after every table rebuild) spreads requests over all its endpoints
/// from the start: an endpoint without samples must not lose to ones that answered fast.
#[test]
fn p2c_from_fresh_uses_every_endpoint_at_once() {
    let b = balance(3, LoadBalancer::P2cEwma, breaker());
    let ms = 1_000_000;
    let mut picked = [0u32; 3];
    for step in 1..=300u64 {
        let now = step * ms;
        let i = b.shared.pick(now, None).unwrap();
        picked[i] += 1;
        b.shared.slots[i].load.start();
        b.shared.slots[i]
            .load
            .finish(now + ms / 2, Duration::from_micros(500), false);
    }
    assert!(
        picked.iter().all(|n| *n >= 50),
        "every endpoint gets a fair share of 300: {picked:?}"
    );
}

/// With none ejected, p2c draws two candidates directly: over 100 endpoints the loaded one is
/// never chosen, every other one is, and a retry never returns to a tried endpoint.
#[test]
fn p2c_over_many_healthy_endpoints_draws_two_and_skips_the_loaded_and_the_tried() {
    let b = balance(100, LoadBalancer::P2cEwma, breaker());
    b.shared.slots[7].load.start();
    b.shared.slots[7]
        .load
        .finish(1, Duration::from_millis(300), false);
    assert!(b.shared.outlier.none_ejected());
    let mut picked = [0u32; 100];
    for _ in 0..20_000 {
        picked[b.shared.pick(2, None).unwrap()] += 1;
    }
    assert_eq!(picked[7], 0, "the slow endpoint loses every draw it is in");
    assert!(
        picked.iter().enumerate().all(|(i, n)| i == 7 || *n > 0),
        "every other endpoint is drawn: {picked:?}"
    );
    // A request's tries (at most 10) never go back to an endpoint they already used.
    let attempts = Attempts::default();
    for i in [3, 12, 40, 41, 63] {
        attempts.record(i);
    }
    for _ in 0..2_000 {
        let i = b.shared.pick(2, Some(&attempts)).unwrap();
        assert!(![3, 12, 40, 41, 63, 7].contains(&i), "picked {i}");
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

/// Two backends, `v1` with endpoints 0..2 and `v2` with endpoint 2, weighted 90/10.
fn split_90_10() -> Balance {
    let single = balance(3, LoadBalancer::RoundRobin, breaker());
    let endpoints: Vec<_> = single.endpoints().cloned().collect();
    let metrics = Metrics::new();
    let backend = |weight, range: std::ops::Range<usize>| Backend {
        version: String::new(),
        weight,
        endpoints: endpoints[range]
            .iter()
            .map(|e| (e.clone(), metrics.endpoint("x", e.addr())))
            .collect(),
    };
    Balance::split(
        "x".into(),
        vec![backend(90, 0..2), backend(10, 2..3), backend(50, 3..3)],
        LoadBalancer::RoundRobin,
        Outlier::new(breaker(), 3, Default::default()),
        None,
    )
}

#[test]
fn a_split_sends_requests_by_weight_and_keeps_each_request_in_its_backend() {
    let b = split_90_10();
    let n = 20_000;
    let mut v2 = 0;
    for _ in 0..n {
        let attempts = Attempts::default();
        let first = b.shared.pick(1, Some(&attempts)).unwrap();
        attempts.record(first);
        // A retry stays in the backend of the first try, even when it has to repeat an
        // endpoint (v2 has only one).
        let second = b.shared.pick(1, Some(&attempts)).unwrap();
        assert_eq!(first == 2, second == 2, "first {first}, retry {second}");
        if first == 2 {
            v2 += 1;
        }
    }
    // 10% ± 1.5 points: about 6 standard deviations at n = 20000.
    let share = f64::from(v2) / f64::from(n);
    assert!((0.085..=0.115).contains(&share), "v2 got {share}");
}

#[test]
fn a_backend_without_endpoints_gets_nothing_and_no_endpoints_at_all_is_none() {
    let b = split_90_10();
    // The empty third backend (weight 50) is dropped, so every pick lands somewhere.
    for _ in 0..1000 {
        assert!(b.shared.pick(1, Some(&Attempts::default())).is_some());
    }
    let empty = Balance::split(
        "x".into(),
        Vec::new(),
        LoadBalancer::P2cEwma,
        Outlier::new(breaker(), 0, Default::default()),
        None,
    );
    assert_eq!(empty.shared.pick(1, None), None);
}

/// Weights whose sum does not fit a u32 (nothing bounds a snapshot's) build a balancer that
/// still gives every request an endpoint, instead of overflowing.
#[test]
fn weights_summing_past_u32_still_split() {
    let single = balance(2, LoadBalancer::RoundRobin, breaker());
    let endpoints: Vec<_> = single.endpoints().cloned().collect();
    let metrics = Metrics::new();
    let backends = endpoints
        .iter()
        .map(|e| Backend {
            version: String::new(),
            weight: u32::MAX,
            endpoints: vec![(e.clone(), metrics.endpoint("x", e.addr()))],
        })
        .collect();
    let b = Balance::split(
        "x".into(),
        backends,
        LoadBalancer::RoundRobin,
        Outlier::new(breaker(), 2, Default::default()),
        None,
    );
    for _ in 0..1000 {
        assert!(b.shared.pick(1, Some(&Attempts::default())).is_some());
    }
}

/// A balancer replacing `previous`, as when the destination's endpoint list changes: it keeps
/// `previous`'s endpoints at `keep` and adds new ones at `ports`.
fn rebuilt(previous: &Balance, keep: &[usize], ports: &[u16], policy: BreakerPolicy) -> Balance {
    let metrics = Metrics::new();
    let fresh = balance(ports.len() as u16, LoadBalancer::P2cEwma, policy);
    let mut endpoints: Vec<_> = keep
        .iter()
        .map(|&i| previous.shared.slots[i].endpoint.clone())
        .collect();
    endpoints.extend(fresh.shared.slots.iter().map(|s| s.endpoint.clone()));
    let endpoints: Vec<_> = endpoints
        .into_iter()
        .map(|e| {
            let m = metrics.endpoint("x", e.addr());
            (e, m)
        })
        .collect();
    let outlier = Outlier::new(policy, endpoints.len(), Default::default());
    Balance::split(
        "x".into(),
        vec![Backend {
            version: String::new(),
            weight: 1,
            endpoints,
        }],
        LoadBalancer::P2cEwma,
        outlier,
        Some(previous),
    )
}

/// An instance joining or leaving rebuilds the balancer; the endpoints that stay keep their
/// ejection and latency estimate, and the newcomer gets a share without drawing everything.
#[test]
fn a_rebuilt_balancer_keeps_what_it_knew_of_the_endpoints_it_keeps() {
    let policy = BreakerPolicy {
        max_ejection_percent: 100,
        ..breaker()
    };
    let old = balance(3, LoadBalancer::P2cEwma, policy);
    let s = &old.shared;
    // Endpoint 0 is ejected for 10 s; endpoint 1 answered slowly.
    s.outlier.record(&s.slots[0].health, true, s.now());
    s.slots[1].load.start();
    s.slots[1]
        .load
        .finish(s.now(), Duration::from_millis(300), false);
    let ejected = s.slots[0].endpoint.addr();

    // Endpoint 2 leaves, a new one joins: [0 (ejected), 1 (slow), new].
    let new = rebuilt(&old, &[0, 1], &[9], policy);
    assert_eq!(new.ejected(), [ejected]);
    assert!(!new.shared.outlier.none_ejected());
    let mut picked = [0u32; 3];
    for _ in 0..300 {
        picked[new.pick(None).unwrap()] += 1;
    }
    // With 0 out, every draw is 1 against the newcomer, and 1 is still known to be slow.
    assert_eq!(picked, [0, 0, 300]);
    // The newcomer's estimate starts now, at the default: decayed to nothing from the old
    // clock's start, it would draw every request until its first response.
    let now = new.shared.now();
    let default = PeakEwma::new(now).load(now);
    assert!((new.shared.slots[2].load.load(now) - default).abs() < default / 100.0);
}

/// Carried ejections never exceed the new destination's share; the count and its gauge follow.
#[test]
fn carried_ejections_are_capped_at_the_new_share() {
    let policy = breaker(); // 50 %
    let old = balance(4, LoadBalancer::P2cEwma, policy);
    let s = &old.shared;
    s.outlier.record(&s.slots[0].health, true, s.now());
    s.outlier.record(&s.slots[1].health, true, s.now());
    assert_eq!(old.ejected().len(), 2);
    // Three endpoints now: 50 % of three lets one stay out.
    let new = rebuilt(&old, &[0, 1], &[9], policy);
    assert_eq!(new.ejected().len(), 1, "{:?}", new.ejected());
    assert_eq!(new.shared.outlier.ejected_count(), 1);
    // The old balancer's copy is untouched: its requests in flight finish against it.
    assert_eq!(old.ejected().len(), 2);
}
