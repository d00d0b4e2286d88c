//! CSR signing: Identity.Certify over gRPC+TLS with many calls in flight, and the CA's
//! `sign_csr_der` alone, without the network.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mesh_api::proto::v1;
use mesh_control_plane::ca::Authority;
use mesh_control_plane::client;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::BenchError;
use super::mesh::{Mesh, NAMESPACE, TRUST_DOMAIN, frontend};
use super::report::{CaAlone, Latencies, Signing};

/// Calls in flight share this many TLS connections.
const SIGN_CHANNELS: usize = 4;
/// Upper bound of the CSR pool: beyond it CSRs are reused in turn (the CA signs each anew).
const MAX_POOL: usize = 50_000;

/// The SPIFFE ID that `frontend-0`'s CSRs ask for.
fn frontend_id() -> String {
    mesh_api::spiffe::format_service_id(TRUST_DOMAIN, NAMESPACE, &frontend(0))
}

/// `count` CSRs for `frontend-0`, each with its own new key, made on every core beforehand so
/// key generation is not part of the measurement.
pub(crate) async fn csr_pool(count: usize) -> Result<Vec<Vec<u8>>, BenchError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let id = frontend_id();
    let mut jobs = JoinSet::new();
    for t in 0..threads {
        let share = count / threads + usize::from(t < count % threads);
        let id = id.clone();
        jobs.spawn_blocking(move || {
            (0..share)
                .map(|_| client::csr(&[&id]).map(|(_, der)| der))
                .collect::<Result<Vec<_>, _>>()
        });
    }
    let mut pool = Vec::with_capacity(count);
    while let Some(part) = jobs.join_next().await {
        pool.extend(part??);
    }
    Ok(pool)
}

/// Certify calls for `duration`, `concurrency` in flight over a few anonymous channels.
pub(crate) async fn certify_rate(
    mesh: &Mesh,
    duration: Duration,
    concurrency: usize,
) -> Result<Signing, BenchError> {
    let pool_size = (duration.as_secs_f64() * 8_000.0).ceil() as usize;
    let pool_size = pool_size.clamp(256, MAX_POOL);
    let made = Instant::now();
    let pool = Arc::new(csr_pool(pool_size).await?);
    let pool_secs = made.elapsed().as_secs_f64();
    let token = mesh.token(&frontend(0))?;
    let mut channels = Vec::with_capacity(SIGN_CHANNELS);
    for _ in 0..SIGN_CHANNELS {
        channels.push(mesh.anonymous().await?);
    }
    let request = |csr_der: Vec<u8>| v1::CertifyRequest {
        service: frontend(0),
        token: token.clone(),
        csr_der,
    };
    // Warm-up: connections are up and each handler has run once.
    for channel in &channels {
        v1::identity_client::IdentityClient::new(channel.clone())
            .certify(request(pool[0].clone()))
            .await?;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut calls = JoinSet::new();
    for i in 0..concurrency {
        let mut identity =
            v1::identity_client::IdentityClient::new(channels[i % channels.len()].clone());
        let (pool, next) = (pool.clone(), next.clone());
        let service = frontend(0);
        let token = token.clone();
        calls.spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0usize;
            let mut first_error = None;
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let csr_der = pool[n % pool.len()].clone();
                let t0 = Instant::now();
                let result = identity
                    .certify(v1::CertifyRequest {
                        service: service.clone(),
                        token: token.clone(),
                        csr_der,
                    })
                    .await;
                match result {
                    Ok(_) => latencies.push(t0.elapsed()),
                    Err(status) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| status.to_string());
                    }
                }
            }
            (latencies, failed, first_error)
        });
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    while let Some(done) = calls.join_next().await {
        let (l, f, e) = done?;
        latencies.extend(l);
        failed += f;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let issued = latencies.len();
    Ok(Signing {
        client: "mesh_control_plane::client::connect (TCP_NODELAY)".into(),
        concurrency,
        channels: SIGN_CHANNELS,
        seconds: secs,
        issued,
        failed,
        first_error,
        per_second: issued as f64 / secs,
        latency_ms: Latencies::of(&mut latencies),
        csr_pool: pool.len(),
        csr_pool_secs: pool_secs,
        csrs_reused: next.load(Ordering::Relaxed) > pool.len(),
    })
}

/// `Authority::sign_csr_der` in a loop for `duration`: on one thread, then on every core.
pub(crate) async fn ca_alone(duration: Duration) -> Result<CaAlone, BenchError> {
    let dir = tempfile::tempdir().map_err(|source| BenchError::Io {
        what: "create a temporary directory",
        source,
    })?;
    let path = dir.path().to_owned();
    let ca = tokio::task::spawn_blocking(move || Authority::open(&path, TRUST_DOMAIN)).await??;
    let ca = Arc::new(ca);
    let pool = Arc::new(csr_pool(512).await?);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let one = sign_loop(ca.clone(), pool.clone(), 1, duration).await?;
    let all = sign_loop(ca, pool, threads, duration).await?;
    drop(dir);
    Ok(CaAlone {
        one_thread_per_second: one,
        threads,
        all_threads_per_second: all,
    })
}

/// Signs on `threads` blocking threads until `duration` has passed; signatures per second.
async fn sign_loop(
    ca: Arc<Authority>,
    pool: Arc<Vec<Vec<u8>>>,
    threads: usize,
    duration: Duration,
) -> Result<f64, BenchError> {
    let id = frontend_id();
    let started = Instant::now();
    let deadline = started + duration;
    let mut jobs = JoinSet::new();
    for t in 0..threads {
        let (ca, pool, id) = (ca.clone(), pool.clone(), id.clone());
        jobs.spawn_blocking(move || {
            let mut signed = 0usize;
            let mut i = t;
            while Instant::now() < deadline {
                ca.sign_csr_der(&pool[i % pool.len()], &id, Duration::from_secs(3600))?;
                signed += 1;
                i += threads;
            }
            Ok::<_, BenchError>(signed)
        });
    }
    let mut signed = 0;
    while let Some(done) = jobs.join_next().await {
        signed += done??;
    }
    Ok(signed as f64 / started.elapsed().as_secs_f64())
}
