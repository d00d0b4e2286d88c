//! Target: a tap on a service under load raises its sidecar's CPU per request by at most 5 %.
//!
//! Run: `cargo build -p mesh-sidecar -p mesh-testkit -p mesh-benches && target/debug/tap-cost`
//! (or the release profile, the same way). Writes `benches/results/tap-cost.md`.
//!
//! An `orders` sidecar calls an echo app behind an `inventory` sidecar at full speed (closed
//! loop, 16 connections). In interleaved rounds it measures the inventory sidecar's CPU time
//! (user + system, from /proc) per request with no tap, with a tap at the default rate (100
//! requests a second) and with one at the highest (1000 a second), each tap read by a client
//! that keeps up.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh_benches::pair::Pair;
use meshctl::tap::TapQuery;

const CONNECTIONS: usize = 16;
const ROUND: Duration = Duration::from_secs(6);
const ROUNDS: usize = 3;
/// The target: CPU per request with a tap open, against none.
const LIMIT: f64 = 0.05;

/// CPU seconds (user + system) `pid` has used, from /proc/PID/stat (in clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the ')'.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Requests answered in `ROUND` at full speed.
async fn load(outbound: SocketAddr) -> anyhow::Result<u64> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, done, stop) = (client.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(req) = Request::get(format!("http://{outbound}/"))
                        .header("host", "inventory")
                        .body(Empty::new())
                    else {
                        return;
                    };
                    if let Ok(rsp) = client.request(req).await
                        && rsp.status().is_success()
                        && rsp.into_body().collect().await.is_ok()
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(ROUND).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    Ok(done.load(Ordering::Relaxed))
}

/// One round: CPU per request of the inventory sidecar, and requests per second.
async fn round(pair: &Pair, tap_rate: Option<u64>) -> anyhow::Result<(f64, f64, u64)> {
    let reader = match tap_rate {
        Some(rate) => {
            let query = TapQuery {
                rate: Some(rate),
                ..TapQuery::default()
            };
            let mut stream = meshctl::tap::open(pair.admins[1], &query).await?;
            let seen = Arc::new(AtomicU64::new(0));
            let counted = seen.clone();
            let task = tokio::spawn(async move {
                while let Some(Ok(_)) = stream.next_line().await {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            });
            Some((task, seen))
        }
        None => None,
    };
    let pid = pair.sidecar_pids[1];
    let before = cpu_seconds(pid)?;
    let requests = load(pair.outbound).await?;
    let cpu = cpu_seconds(pid)? - before;
    let events = match reader {
        Some((task, seen)) => {
            task.abort();
            seen.load(Ordering::Relaxed)
        }
        None => 0,
    };
    Ok((
        cpu * 1e6 / requests.max(1) as f64,
        requests as f64 / ROUND.as_secs_f64(),
        events,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pair = Pair::start().await?;
    // Warm up: connections and TLS sessions exist before anything is measured.
    load(pair.outbound).await?;
    let modes: [(&str, Option<u64>); 3] = [
        ("no tap", None),
        ("tap, 100/s", Some(100)),
        ("tap, 1000/s", Some(1000)),
    ];
    let mut sums = [(0.0, 0.0, 0u64); 3];
    for r in 0..ROUNDS {
        for (i, (name, rate)) in modes.iter().enumerate() {
            let (us, rps, events) = round(&pair, *rate).await?;
            eprintln!(
                "round {r}: {name}: {us:.1} µs CPU per request, {rps:.0} requests/s, {events} tap lines"
            );
            sums[i].0 += us;
            sums[i].1 += rps;
            sums[i].2 += events;
        }
    }
    let n = ROUNDS as f64;
    let base = sums[0].0 / n;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut out = format!(
        "# A tap's cost to the tapped sidecar\n\n\
         `target/{profile}/tap-cost`: an orders sidecar calls an echo app behind an inventory \
         sidecar at full speed ({CONNECTIONS} connections, closed loop); {ROUNDS} interleaved \
         rounds of {}s per mode; the inventory sidecar's CPU time (user + system) per request. \
         Built {profile}; the machine ({} cores) is shared, so the numbers move by a few per cent \
         from run to run.\n\n\
         | mode | requests/s | CPU per request | change | tap lines read |\n|---|---|---|---|---|\n",
        ROUND.as_secs(),
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    // The target is for a tap as `meshctl tap` opens it (the default rate); the highest rate
    // is shown beside it.
    let mut default_change = 0.0;
    for (i, (name, _)) in modes.iter().enumerate() {
        let us = sums[i].0 / n;
        let change = us / base - 1.0;
        if i == 1 {
            default_change = change;
        }
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {us:.1} µs | {} | {} |",
            sums[i].1 / n,
            if i == 0 {
                "-".to_owned()
            } else {
                format!("{:+.1} %", change * 100.0)
            },
            sums[i].2,
        );
    }
    let verdict = if default_change <= LIMIT {
        "met"
    } else {
        "NOT met"
    };
    let _ = writeln!(
        out,
        "\nTarget (a tap at the default rate adds at most {:.0} % CPU per request): {verdict} \
         ({:+.1} %).",
        LIMIT * 100.0,
        default_change * 100.0
    );
    print!("{out}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results/tap-cost.md");
    std::fs::write(&path, &out).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
