//! Stopping a demo app: the listener closes at once, a request in flight still gets its
//! whole response, and the server returns once the last connection is done.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use demo_services::server::{Body, serve_until};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn stop_closes_the_listener_and_lets_the_request_in_flight_finish() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Semaphore::new(0));
    let gate = release.clone();
    let handler = move |_req: Request<hyper::body::Incoming>| {
        let arrived = arrived_tx.clone();
        let gate = gate.clone();
        async move {
            let _ = arrived.send(());
            let _permit = gate.acquire().await.unwrap();
            let body: Body = Full::new(Bytes::from_static(b"finished"))
                .map_err(|never| match never {})
                .boxed_unsync();
            Response::new(body)
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(listener, handler, async {
        let _ = stop_rx.await;
    }));

    // A keep-alive HTTP/1.1 connection with one request parked in the handler.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let in_flight = tokio::spawn(async move {
        let req = Request::get("/slow").body(Empty::<Bytes>::new()).unwrap();
        let rsp = sender.send_request(req).await.unwrap();
        let (parts, body) = rsp.into_parts();
        (parts, body.collect().await.unwrap().to_bytes())
    });
    tokio::time::timeout(WAIT, arrived.recv())
        .await
        .expect("the request reaches the handler in time")
        .unwrap();

    stop_tx.send(()).unwrap();
    // New connections are refused once the listener is gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after the stop"
        );
        tokio::task::yield_now().await;
    }
    assert!(!server.is_finished(), "returned with a request in flight");

    release.add_permits(1);
    let (parts, body) = tokio::time::timeout(WAIT, in_flight)
        .await
        .expect("the response arrives in time")
        .unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], b"finished");
    assert_eq!(
        parts.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "the connection is told it ends with this response"
    );
    let drained = tokio::time::timeout(WAIT, server)
        .await
        .expect("the server returns once the connection is done")
        .unwrap();
    assert!(drained, "every connection finished within the limit");
}
