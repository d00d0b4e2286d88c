//! Target: a 100 MiB body streamed through a sidecar pair grows neither sidecar's memory by
//! more than a few MiB (bodies are streamed, never buffered whole).
//!
//! Run: `cargo build --release -p mesh-sidecar -p mesh-testkit -p mesh-benches &&
//!       target/release/body-memory`
//!
//! POSTs 100 MiB (chunked) to the echo app's `/echo` through both sidecars and reads the
//! 100 MiB echo back, then reports each sidecar's resident memory before and its peak after.

use std::convert::Infallible;

use bytes::Bytes;
use http::Request;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_benches::pair::{Pair, memory_kib};

const CHUNK: usize = 64 * 1024;
const TOTAL: usize = 100 * 1024 * 1024;
/// The target: peak growth of each sidecar while streaming.
const LIMIT_KIB: u64 = 8 * 1024;

type Body = UnsyncBoxBody<Bytes, Infallible>;

async fn stream_once(
    client: &Client<HttpConnector, Body>,
    pair: &Pair,
    total: usize,
) -> anyhow::Result<usize> {
    let chunk = Bytes::from(vec![0x5a; CHUNK]);
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..total / CHUNK)
        .map(|_| Ok(Frame::data(chunk.clone())))
        .collect();
    let req = Request::post(format!("http://{}/echo", pair.outbound))
        .header("host", "inventory")
        .body(StreamBody::new(tokio_stream::iter(frames)).boxed_unsync())?;
    let rsp = client.request(req).await?;
    anyhow::ensure!(rsp.status().is_success(), "status {}", rsp.status());
    let mut body = rsp.into_body();
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            received += data.len();
        }
    }
    Ok(received)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pair = Pair::start().await?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    // Warm up: connections, TLS sessions and buffers exist before the baseline is taken.
    stream_once(&client, &pair, 4 * 1024 * 1024).await?;
    let before: Vec<_> = pair
        .sidecar_pids
        .iter()
        .map(|pid| memory_kib(*pid))
        .collect::<Result<_, _>>()?;
    let started = tokio::time::Instant::now();
    let received = stream_once(&client, &pair, TOTAL).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(received == TOTAL, "echoed {received} of {TOTAL} bytes");
    println!(
        "streamed {} MiB up and {} MiB back through two sidecars in {:.2?} ({:.0} MiB/s each way)",
        TOTAL >> 20,
        received >> 20,
        elapsed,
        (TOTAL >> 20) as f64 / elapsed.as_secs_f64()
    );
    let mut ok = true;
    for ((name, pid), (rss_before, _)) in ["orders", "inventory"]
        .iter()
        .zip(pair.sidecar_pids)
        .zip(before)
    {
        let (rss_after, peak) = memory_kib(pid)?;
        let growth = peak.saturating_sub(rss_before);
        ok &= growth <= LIMIT_KIB;
        println!(
            "{name:<9} sidecar: RSS before {:>6} KiB, peak {:>6} KiB, after {:>6} KiB, growth {:>5} KiB (limit {LIMIT_KIB})",
            rss_before, peak, rss_after, growth
        );
    }
    anyhow::ensure!(ok, "a sidecar grew by more than {LIMIT_KIB} KiB");
    Ok(())
}
