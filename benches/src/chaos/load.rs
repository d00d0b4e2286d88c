//! Open-loop load: request `i` is due at `start + i / rate` whatever happened before, and its
//! latency runs from that time, so a stall shows as latency of every request it held up.
//! Every request is kept with its outcome, for the failure table and the timeline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::header::HOST;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use super::mesh::DESTINATION;

/// Keep-alive connections to the caller's sidecar; a request waits for a free one.
const CONNECTIONS: usize = 64;
/// A request unanswered this long counts as a client-side timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

type Sender = SendRequest<Empty<Bytes>>;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// 2xx with its whole body.
    Ok,
    /// Any other status, with the mesh's `x-mesh-error` when it made the answer.
    Status {
        code: u16,
        mesh_error: Option<String>,
    },
    /// No answer: the client's own view of what went wrong.
    Client(String),
}

impl Outcome {
    /// The cause of a failure, as the report groups it; `None` for success.
    pub fn cause(&self) -> Option<String> {
        match self {
            Self::Ok => None,
            Self::Status {
                code,
                mesh_error: Some(error),
            } => Some(format!("{code} x-mesh-error: {error}")),
            Self::Status {
                code,
                mesh_error: None,
            } => Some(format!("{code} (no x-mesh-error)")),
            Self::Client(why) => Some(format!("client: {why}")),
        }
    }
}

/// One request: when it was due (since the load started), how long it took from then, how
/// it ended, and which instance answered it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub due: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
    /// `n` of the `inventory-n` app that answered (the echo app names itself in its body).
    pub instance: Option<u8>,
}

/// Sends `rate` GETs a second for `duration` from `start` to `addr` (with `Host` naming the
/// destination) and returns every request's sample, in the order they were due.
pub(crate) async fn run(
    addr: SocketAddr,
    rate: u32,
    duration: Duration,
    start: Instant,
) -> Vec<Sample> {
    let count = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let rate = u64::from(rate.max(1));
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut connection: Option<Sender> = None;
                let mut samples = Vec::new();
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(due) = next else { break };
                    let (outcome, instance) = request(addr, &mut connection).await;
                    samples.push(Sample {
                        due: due.saturating_duration_since(start),
                        latency: due.elapsed(),
                        outcome,
                        instance,
                    });
                }
                samples
            })
        })
        .collect();
    // A thread, not a tokio timer: its sleeps are precise to tens of microseconds, and a busy
    // runtime cannot delay the schedule.
    let schedule = std::thread::spawn(move || {
        for i in 0..count {
            // In whole nanoseconds from the start, so no rounding of the period adds up.
            let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                break;
            }
        }
    });
    let mut samples = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for worker in workers {
        if let Ok(part) = worker.await {
            samples.extend(part);
        }
    }
    let _ = tokio::task::spawn_blocking(move || schedule.join()).await;
    samples.sort_by_key(|s| s.due);
    samples
}

/// Sends requests until one succeeds, for at most `limit`: the path works end to end.
pub(crate) async fn probe(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut connection = None;
    loop {
        let (outcome, _) = request(addr, &mut connection).await;
        let Some(cause) = outcome.cause() else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(cause);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `GET /` on `connection` (opened first when there is none): how it ended, and which
/// instance answered. A connection that failed is dropped, so the next request opens a new
/// one.
async fn request(addr: SocketAddr, connection: &mut Option<Sender>) -> (Outcome, Option<u8>) {
    let once = async {
        let send = match connection {
            Some(send) => send,
            None => connection.insert(connect(addr).await?),
        };
        send.ready().await.map_err(|e| hyper_failure(&e))?;
        let req = Request::get("/")
            .header(HOST, DESTINATION)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let rsp = send
            .send_request(req)
            .await
            .map_err(|e| hyper_failure(&e))?;
        let status = rsp.status();
        let mesh_error = rsp
            .headers()
            .get("x-mesh-error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("response body broke off: {e}"))?
            .to_bytes();
        Ok::<_, String>(if status.is_success() {
            (Outcome::Ok, instance(&body))
        } else {
            let code = status.as_u16();
            (Outcome::Status { code, mesh_error }, None)
        })
    };
    match tokio::time::timeout(CLIENT_TIMEOUT, once).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(why)) => {
            *connection = None;
            (Outcome::Client(why), None)
        }
        Err(_) => {
            *connection = None;
            let why = format!("no answer within {CLIENT_TIMEOUT:?}");
            (Outcome::Client(why), None)
        }
    }
}

/// `n` of `"service": "inventory-n"` in the echo app's description of the request.
fn instance(body: &[u8]) -> Option<u8> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["service"]
        .as_str()?
        .strip_prefix(DESTINATION)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| hyper_failure(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// A hyper error as a short cause, the same text for the same kind of failure.
fn hyper_failure(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        "connection closed before the response".to_owned()
    } else if e.is_canceled() {
        "request not sent: the connection closed".to_owned()
    } else if e.is_closed() {
        "connection closed".to_owned()
    } else {
        e.to_string()
    }
}
