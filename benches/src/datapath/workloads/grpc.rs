//! gRPC through the mesh: unary calls and server-streaming calls on long-lived HTTP/2
//! connections, the traffic of most service-to-service APIs. Every call must end with
//! `grpc-status: 0` in its trailers (a proxy that drops or rewrites trailers fails it), and
//! every stream must deliver all its messages in order.

use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use mesh_testkit::grpc::pb::echo_client::EchoClient;
use mesh_testkit::grpc::pb::{EchoRequest, StreamRequest};
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use super::super::dial::Dial;
use super::super::{AppKind, Error};
use super::Exchange;

/// A call that takes longer than this counts as an error (and its connection is replaced).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The unary request's message, echoed back: a few dozen bytes each way.
const UNARY_MESSAGE: &str = "a small unary request from the load client";
/// Messages per stream.
pub(crate) const STREAM_MESSAGES: u32 = 100;
/// Bytes of each streamed message's payload.
pub(crate) const STREAM_MESSAGE_BYTES: usize = 1024;

/// One unary `Echo/Unary` call per unit.
pub(crate) struct Unary;

/// One server-streaming `Echo/Stream` call per unit, read to its end.
pub(crate) struct Stream {
    payload: String,
}

impl Stream {
    pub(crate) fn new() -> Self {
        Self {
            payload: "x".repeat(STREAM_MESSAGE_BYTES),
        }
    }
}

/// One HTTP/2 connection to the entry, used by one task at a time.
pub(crate) type Conn = EchoClient<Channel>;

/// Opens an h2c connection to the entry whose requests carry `:authority` [`Dial::authority`],
/// which our outbound sidecar routes on. Its socket comes from [`Dial::connect`], so a
/// configuration's namespace applies as for the HTTP/1.1 client.
pub(crate) async fn connect(dial: &Dial) -> Result<Conn, Error> {
    if dial.tls.is_some() {
        return Err(Error::Grpc(
            "gRPC over TLS to the entry is not supported".to_owned(),
        ));
    }
    let endpoint = Endpoint::from_shared(format!("http://{}", dial.authority))
        .map_err(|e| Error::Grpc(e.to_string()))?;
    let dial = dial.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let dial = dial.clone();
        async move {
            let tcp = dial.connect().await?;
            tcp.set_nodelay(true)?;
            Ok::<_, std::io::Error>(TokioIo::new(tcp))
        }
    });
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| Error::Grpc(format!("connect: {e}")))?;
    Ok(EchoClient::new(channel))
}

/// Fails unless `metadata` (a response's trailers) says `grpc-status: 0`. tonic already turns
/// a non-zero status into an error; this also catches a call whose trailers went missing.
fn check_ok(metadata: Option<&MetadataMap>) -> Result<(), Error> {
    let status = metadata
        .and_then(|m| m.get("grpc-status"))
        .and_then(|v| v.to_str().ok());
    match status {
        Some("0") => Ok(()),
        other => Err(Error::Grpc(format!("grpc-status {other:?}, not 0"))),
    }
}

/// One unary call; `Ok(bytes)` of the message both ways.
pub(crate) async fn unary(client: &mut Conn) -> Result<u64, Error> {
    let call = async {
        let rsp = client
            .unary(EchoRequest {
                message: UNARY_MESSAGE.to_owned(),
            })
            .await
            .map_err(|s| Error::Grpc(format!("unary: {s}")))?;
        // tonic merges the trailers into the response's metadata.
        check_ok(Some(rsp.metadata()))?;
        let reply = rsp.into_inner();
        if reply.message != UNARY_MESSAGE {
            return Err(Error::Grpc("unary: the reply is not the echo".to_owned()));
        }
        Ok((UNARY_MESSAGE.len() + reply.message.len()) as u64)
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| Error::Timeout)?
}

impl Exchange for Unary {
    type Conn = Conn;
    const APP: AppKind = AppKind::Grpc;

    async fn connect(&self, dial: &Dial) -> Result<Conn, Error> {
        connect(dial).await
    }

    async fn once(&self, _dial: &Dial, conn: &mut Conn) -> Result<u64, Error> {
        unary(conn).await
    }
}

impl Exchange for Stream {
    type Conn = Conn;
    const APP: AppKind = AppKind::Grpc;

    async fn connect(&self, dial: &Dial) -> Result<Conn, Error> {
        connect(dial).await
    }

    /// One stream of [`STREAM_MESSAGES`] replies of [`STREAM_MESSAGE_BYTES`]; `Ok(bytes)` of
    /// the request's payload and the replies' payloads.
    async fn once(&self, _dial: &Dial, client: &mut Conn) -> Result<u64, Error> {
        let call = async {
            let rsp = client
                .stream(StreamRequest {
                    message: self.payload.clone(),
                    count: STREAM_MESSAGES,
                    final_code: 0,
                })
                .await
                .map_err(|s| Error::Grpc(format!("stream: {s}")))?;
            let mut stream = rsp.into_inner();
            let mut bytes = self.payload.len() as u64;
            let mut seq = 0;
            while let Some(reply) = stream
                .message()
                .await
                .map_err(|s| Error::Grpc(format!("stream after {seq} messages: {s}")))?
            {
                if reply.seq != seq || reply.message.len() != STREAM_MESSAGE_BYTES {
                    return Err(Error::Grpc(format!(
                        "stream: message {seq} came as seq {} with {} bytes",
                        reply.seq,
                        reply.message.len()
                    )));
                }
                bytes += reply.message.len() as u64;
                seq += 1;
            }
            if seq != STREAM_MESSAGES {
                return Err(Error::Grpc(format!(
                    "stream: {seq} of {STREAM_MESSAGES} messages"
                )));
            }
            let trailers = stream
                .trailers()
                .await
                .map_err(|s| Error::Grpc(format!("stream trailers: {s}")))?;
            check_ok(trailers.as_ref())?;
            Ok(bytes)
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| Error::Timeout)?
    }
}

/// Calls `Echo/Unary` through `dial` until one call succeeds, for at most `limit`: proves the
/// gRPC path works end to end (trailers included) before it is measured.
pub(crate) async fn probe(dial: &Dial, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    let mut last = Error::Timeout;
    while Instant::now() < deadline {
        match connect(dial).await {
            Ok(mut client) => match unary(&mut client).await {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn direct(addr: SocketAddr) -> Dial {
        Dial {
            addr,
            namespace: None,
            authority: super::super::super::load::AUTHORITY,
            tls: None,
        }
    }

    /// The gRPC app on one port: a plain `GET` for readiness checks, unary calls, and streams
    /// that deliver every message with `grpc-status: 0`.
    #[tokio::test]
    async fn app_answers_readiness_unary_and_streams() {
        let addr = mesh_testkit::free_port();
        let app = tokio::spawn(super::super::super::app::serve_grpc(addr));
        let dial = direct(addr);
        probe(&dial, Duration::from_secs(10)).await.unwrap();
        assert!(super::super::super::procs::http_get_ok(None, addr, "/").await);

        let mut conn = connect(&dial).await.unwrap();
        assert_eq!(unary(&mut conn).await.unwrap(), 84);
        let stream = Stream::new();
        for _ in 0..3 {
            let bytes = stream.once(&dial, &mut conn).await.unwrap();
            assert_eq!(bytes, 101 * 1024);
        }
        app.abort();
    }

    #[test]
    fn a_call_without_grpc_status_0_fails() {
        let mut ok = MetadataMap::new();
        ok.insert("grpc-status", "0".parse().unwrap());
        assert!(check_ok(Some(&ok)).is_ok());
        let mut unavailable = MetadataMap::new();
        unavailable.insert("grpc-status", "14".parse().unwrap());
        assert!(check_ok(Some(&unavailable)).is_err());
        assert!(check_ok(Some(&MetadataMap::new())).is_err());
        assert!(check_ok(None).is_err());
    }
}
