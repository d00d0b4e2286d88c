//! The load client: HTTP/1.1 keep-alive connections written with hyper's connection API, so
//! no pool or extra task sits between the timer and the socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http::header::HOST;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Error;
use super::dial::Dial;

/// The `Host` requests carry, unless a configuration's client dials an address as an
/// unmodified app would: our outbound sidecar routes on it; the others ignore it.
pub(crate) const AUTHORITY: &str = "inventory";
/// A request that takes longer than this counts as an error (and its connection is replaced).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Highest latency the histograms hold, in microseconds (larger values are clamped).
const MAX_LATENCY_US: u64 = 60_000_000;

pub(crate) type Sender = SendRequest<Empty<Bytes>>;

/// Opens one keep-alive connection.
pub(crate) async fn connect(dial: &Dial) -> Result<Sender, Error> {
    let tcp = dial
        .connect()
        .await
        .map_err(|e| Error::io(format!("connect to {}", dial.addr), e))?;
    tcp.set_nodelay(true)
        .map_err(|e| Error::io("set TCP_NODELAY", e))?;
    match &dial.tls {
        None => handshake(tcp).await,
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.name.clone(), tcp)
                .await
                .map_err(|e| Error::io(format!("TLS handshake with {}", dial.addr), e))?;
            handshake(stream).await
        }
    }
}

/// HTTP/1.1 on `io`, its connection driven by a task of its own.
async fn handshake<T>(io: T) -> Result<Sender, Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// One `GET /` with `Host: authority`; `Ok(true)` when it answered 200 with the whole body read.
pub(crate) async fn request(send: &mut Sender, authority: &'static str) -> Result<bool, Error> {
    let once = async {
        send.ready().await?;
        let req = Request::get("/")
            .header(HOST, authority)
            .body(Empty::new())?;
        let rsp = send.send_request(req).await?;
        let ok = rsp.status().is_success();
        rsp.into_body().collect().await?;
        Ok::<_, Error>(ok)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, once)
        .await
        .map_err(|_| Error::Timeout)?
}

/// Sends requests until one succeeds, for at most `limit`: proves a path works end to end.
pub(crate) async fn probe(dial: &Dial, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    let mut last = Error::Timeout;
    while Instant::now() < deadline {
        match connect(dial).await {
            Ok(mut send) => match request(&mut send, dial.authority).await {
                Ok(true) => return Ok(()),
                Ok(false) => last = Error::Status,
                Err(e) => last = e,
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

/// After a failure, a connection is replaced; a refused connect waits a little so a dead
/// target does not make the client spin.
async fn replace(dial: &Dial, send: &mut Sender) {
    match connect(dial).await {
        Ok(fresh) => *send = fresh,
        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
    }
}

/// Result of a closed-loop run.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Closed {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
}

/// Opened connections, ready for a measured run; opening them is not measured.
pub(crate) struct Connections {
    dial: Dial,
    senders: Vec<Sender>,
}

impl Connections {
    pub(crate) async fn open(dial: &Dial, count: usize) -> Result<Self, Error> {
        let mut senders = Vec::with_capacity(count);
        for _ in 0..count {
            senders.push(connect(dial).await?);
        }
        Ok(Self {
            dial: dial.clone(),
            senders,
        })
    }

    /// Max throughput: each connection sends its next request as soon as the last answered,
    /// for `duration`.
    pub(crate) async fn closed_loop(self, duration: Duration) -> Closed {
        let started = Instant::now();
        let deadline = started + duration;
        let dial = self.dial;
        let tasks: Vec<_> = self
            .senders
            .into_iter()
            .map(|mut send| {
                let dial = dial.clone();
                tokio::spawn(async move {
                    let mut out = Closed::default();
                    while Instant::now() < deadline {
                        match request(&mut send, dial.authority).await {
                            Ok(true) => out.ok += 1,
                            Ok(false) => out.errors += 1,
                            Err(_) => {
                                out.errors += 1;
                                replace(&dial, &mut send).await;
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        let mut total = Closed::default();
        for task in tasks {
            match task.await {
                Ok(part) => {
                    total.ok += part.ok;
                    total.errors += part.errors;
                }
                Err(_) => total.errors += 1,
            }
        }
        total.seconds = started.elapsed().as_secs_f64();
        total
    }

    /// Latency at a fixed rate, free of coordinated omission: a separate thread releases
    /// request `i` at `start + i / rate` whatever happened before, and latency runs from that
    /// intended time, so time a request spends waiting for a free connection counts too.
    pub(crate) async fn open_loop(self, rate: u32, duration: Duration) -> Result<Open, Error> {
        let count = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let dial = self.dial;
        let started = Instant::now();
        let tasks: Vec<_> = self
            .senders
            .into_iter()
            .map(|mut send| {
                let rx = rx.clone();
                let dial = dial.clone();
                tokio::spawn(async move {
                    let mut hist = new_histogram()?;
                    let mut errors = 0;
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some(intended) = next else { break };
                        match request(&mut send, dial.authority).await {
                            Ok(true) => {
                                let us = intended.elapsed().as_micros();
                                hist.saturating_record(u64::try_from(us).unwrap_or(u64::MAX));
                            }
                            Ok(false) => errors += 1,
                            Err(_) => {
                                errors += 1;
                                replace(&dial, &mut send).await;
                            }
                        }
                    }
                    Ok::<_, Error>((hist, errors))
                })
            })
            .collect();
        let schedule = release_on_schedule(count, period, tx);
        let mut out = Open {
            sent: count,
            hist: new_histogram()?,
            errors: 0,
            seconds: 0.0,
        };
        for task in tasks {
            match task.await {
                Ok(Ok((hist, errors))) => {
                    out.hist
                        .add(&hist)
                        .map_err(|e| Error::Histogram(e.to_string()))?;
                    out.errors += errors;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => out.errors += 1,
            }
        }
        let _ = tokio::task::spawn_blocking(move || schedule.join()).await;
        out.seconds = started.elapsed().as_secs_f64();
        Ok(out)
    }
}

/// Sends `count` intended send times, `period` apart, each at its time, from a thread of its
/// own. A thread, not a tokio timer: tokio's timer wheel has millisecond granularity, which
/// would add up to a millisecond of schedule lag to every sample; nanosleep is within tens of
/// microseconds, and whatever lag remains is the same in every configuration.
pub(crate) fn release_on_schedule(
    count: u64,
    period: Duration,
    tx: mpsc::UnboundedSender<Instant>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(5);
        for i in 0..count {
            let intended = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if tx.send(intended).is_err() {
                break;
            }
        }
    })
}

/// Result of an open-loop run.
#[derive(Debug, Clone)]
pub(crate) struct Open {
    pub(crate) sent: u64,
    /// Latencies of successful requests, in microseconds from their intended send time.
    pub(crate) hist: Histogram<u64>,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
}

pub(crate) fn new_histogram() -> Result<Histogram<u64>, Error> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| Error::Histogram(e.to_string()))
}
