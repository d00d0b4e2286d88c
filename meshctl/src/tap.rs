//! `meshctl tap`: the live stream of a sidecar's requests (`GET /tap` on its admin listener),
//! read line by line, and each line as the terminal shows it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// Limit on connecting to a sidecar and getting its answer's head.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a tap could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// No connection.
    #[error("its sidecar at {addr}: {source}")]
    Connect {
        /// The admin address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("its sidecar at {0} did not answer within 2s")]
    Timeout(SocketAddr),
    /// The HTTP exchange failed.
    #[error("its sidecar at {addr}: {source}")]
    Http {
        /// The admin address.
        addr: SocketAddr,
        /// The cause.
        source: hyper::Error,
    },
    /// The sidecar refused the tap.
    #[error("its sidecar at {addr} refused the tap: {message}")]
    Refused {
        /// The admin address.
        addr: SocketAddr,
        /// Its answer.
        message: String,
    },
}

/// What to tap.
#[derive(Debug, Clone, Default)]
pub struct TapQuery {
    /// Only paths starting with this.
    pub path: Option<String>,
    /// Only this caller (service name or SPIFFE ID).
    pub caller: Option<String>,
    /// Events per second per sidecar at most.
    pub rate: Option<u64>,
}

impl TapQuery {
    /// The query string of `/tap`.
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(path) = &self.path {
            parts.push(format!("path={}", encode(path)));
        }
        if let Some(caller) = &self.caller {
            parts.push(format!("caller={}", encode(caller)));
        }
        if let Some(rate) = self.rate {
            parts.push(format!("rate={rate}"));
        }
        parts.join("&")
    }
}

/// Percent-encodes all but unreserved characters and `/`.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One open tap on one sidecar.
#[derive(Debug)]
pub struct TapStream {
    addr: SocketAddr,
    body: Incoming,
    buf: BytesMut,
}

/// Opens a tap on the sidecar whose admin listener is `addr`.
pub async fn open(addr: SocketAddr, query: &TapQuery) -> Result<TapStream, TapError> {
    let http = |source| TapError::Http { addr, source };
    let head = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| TapError::Connect { addr, source })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(http)?;
        tokio::spawn(conn);
        let request = http::Request::get(format!("/tap?{}", query.to_query()))
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| TapError::Refused {
                addr,
                message: e.to_string(),
            })?;
        sender.send_request(request).await.map_err(http)
    };
    let response = tokio::time::timeout(OPEN_TIMEOUT, head)
        .await
        .map_err(|_| TapError::Timeout(addr))??;
    if !response.status().is_success() {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        return Err(TapError::Refused {
            addr,
            message: format!("{status}: {body}"),
        });
    }
    Ok(TapStream {
        addr,
        body: response.into_body(),
        buf: BytesMut::new(),
    })
}

impl TapStream {
    /// The next line; `None` when the sidecar ended the stream.
    pub async fn next_line(&mut self) -> Option<Result<TapLine, TapError>> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(end + 1);
                let text = &line[..end];
                if text.is_empty() {
                    continue;
                }
                return Some(Ok(
                    serde_json::from_slice(text).unwrap_or(TapLine::Other(serde::de::IgnoredAny))
                ));
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Err(source) => {
                    return Some(Err(TapError::Http {
                        addr: self.addr,
                        source,
                    }));
                }
            }
        }
    }
}

/// A line of a tap.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TapLine {
    /// A request.
    Request(TapEvent),
    /// What the tap missed since the last such line.
    Missed {
        /// Over the rate limit.
        skipped: u64,
        /// The reader was too slow.
        dropped: u64,
    },
    /// The first line, or anything newer than this meshctl.
    Other(serde::de::IgnoredAny),
}

/// A request, as the sidecar reports it.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct TapEvent {
    /// Milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// The caller's SPIFFE ID.
    pub caller: String,
    /// The caller's service.
    pub source: String,
    /// The called service.
    pub destination: String,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Status.
    pub status: u16,
    /// Latency.
    pub latency_ms: f64,
    /// Tries made (outbound).
    pub attempts: u32,
    /// Trace ID, empty without one.
    pub trace_id: String,
}

/// One request as a line: time (UTC), the instance, direction, caller and callee, method and
/// path, status, latency, tries and trace ID.
pub fn render(instance: &str, e: &TapEvent) -> String {
    let time = i128::from(e.time_unix_ms) * 1_000_000;
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(time)
        .map(|t| {
            format!(
                "{:02}:{:02}:{:02}.{:03}",
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            )
        })
        .unwrap_or_else(|_| "?".to_owned());
    let tries = if e.attempts > 1 {
        format!("  {} tries", e.attempts)
    } else {
        String::new()
    };
    let trace = if e.trace_id.is_empty() {
        String::new()
    } else {
        format!("  trace {}", e.trace_id)
    };
    format!(
        "{time}  {instance}  {dir:<8} {caller} -> {callee}  {method} {path}  {status}  {latency:.1}ms{tries}{trace}",
        dir = e.direction,
        caller = e.caller,
        callee = e.destination,
        method = e.method,
        path = e.path,
        status = e.status,
        latency = e.latency_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_escaped() {
        let q = TapQuery {
            path: Some("/api/a b&c".into()),
            caller: Some("spiffe://mesh.local/ns/default/sa/orders".into()),
            rate: Some(5),
        };
        assert_eq!(
            q.to_query(),
            "path=/api/a%20b%26c&caller=spiffe%3A//mesh.local/ns/default/sa/orders&rate=5"
        );
    }

    #[test]
    fn lines_parse_and_render() {
        let line: TapLine = serde_json::from_str(
            r#"{"time_unix_ms":1796195622826,"direction":"inbound","caller":"spiffe://mesh.local/ns/default/sa/storefront","source":"storefront","destination":"orders","method":"POST","path":"/orders","status":201,"latency_ms":13.25,"attempts":0,"trace_id":"4bf9"}"#,
        )
        .unwrap();
        let TapLine::Request(e) = line else {
            panic!("{line:?}")
        };
        assert_eq!(
            render("orders-1", &e),
            "07:13:42.826  orders-1  inbound  spiffe://mesh.local/ns/default/sa/storefront -> orders  POST /orders  201  13.2ms  trace 4bf9"
        );
        let missed: TapLine = serde_json::from_str(r#"{"skipped":3,"dropped":0}"#).unwrap();
        assert_eq!(
            missed,
            TapLine::Missed {
                skipped: 3,
                dropped: 0
            }
        );
        let open: TapLine = serde_json::from_str(r#"{"tap":"open"}"#).unwrap();
        assert_eq!(open, TapLine::Other(serde::de::IgnoredAny));
    }
}
