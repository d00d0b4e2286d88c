//! Large bodies: a 1 MiB request body and a 1 MiB response body per request, on keep-alive
//! HTTP/1.1 connections, so what is measured is the proxies' cost of moving bytes (reads,
//! writes, TLS, HTTP/2 flow control) rather than of handling requests.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::header::{CONTENT_TYPE, HOST, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::super::Error;
use super::super::app::{LARGE_BODY, LARGE_BODY_BYTES, LARGE_PATH};
use super::super::dial::Dial;
use super::Exchange;

/// 2 MiB cross both proxies per request; at the plan's few connections one takes milliseconds,
/// but a proxy that stalls a body must be told apart from one that is merely slow, so the limit
/// is well above `load`'s 5 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `POST /large` with [`LARGE_BODY`]; the answer must be exactly [`LARGE_BODY_BYTES`] long.
pub(crate) struct LargeBodies;

impl Exchange for LargeBodies {
    type Conn = SendRequest<Full<Bytes>>;

    async fn connect(&self, dial: &Dial) -> Result<Self::Conn, Error> {
        let tcp = dial
            .connect()
            .await
            .map_err(|e| Error::io(format!("connect to {}", dial.addr), e))?;
        tcp.set_nodelay(true)
            .map_err(|e| Error::io("set TCP_NODELAY", e))?;
        if dial.tls.is_some() {
            return Err(Error::Load(
                "large bodies are sent over plain HTTP/1.1 only".to_owned(),
            ));
        }
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    async fn once(&self, dial: &Dial, send: &mut Self::Conn) -> Result<u64, Error> {
        let once = async {
            send.ready().await?;
            let req = Request::post(LARGE_PATH)
                .header(HOST, dial.authority)
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )
                .body(Full::new(Bytes::from_static(&LARGE_BODY)))?;
            let rsp = send.send_request(req).await?;
            if !rsp.status().is_success() {
                return Err(Error::Status);
            }
            // Counted frame by frame, not collected: the client allocates no payload either.
            let mut body = rsp.into_body();
            let mut received = 0usize;
            while let Some(frame) = body.frame().await {
                received += frame?.data_ref().map_or(0, Bytes::len);
            }
            if received != LARGE_BODY_BYTES {
                return Err(Error::BodyLength {
                    expected: LARGE_BODY_BYTES,
                    received,
                });
            }
            Ok(2 * LARGE_BODY_BYTES as u64)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, once)
            .await
            .map_err(|_| Error::Timeout)?
    }
}
