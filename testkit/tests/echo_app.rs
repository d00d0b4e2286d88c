//! The `echo-app` binary as the examples, the benchmarks and the two-host test run it: it
//! answers HTTP/1.1 and HTTP/2 with a description of the request, and drains on SIGTERM.
//! (Being an integration test of this crate also makes `cargo nextest run --workspace` build
//! the binary, which other crates' tests start by path.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_testkit::process::{KillOnDrop, Signal};
use mesh_testkit::{client, eventually, free_port};

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn echo_app_describes_requests_and_stops_on_sigterm() {
    let addr = free_port();
    let mut app = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_echo-app"))
            .args(["--name", "inventory", "--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{addr}/stock/42");
    eventually("echo-app to listen", PATIENCE, || async {
        tokio::net::TcpStream::connect(addr).await
    })
    .await;

    let described = client::json(client::get(&url, "inventory").await).await;
    assert_eq!(described["service"], "inventory", "{described}");
    assert_eq!(described["path"], "/stock/42", "{described}");
    assert_eq!(described["version"], "HTTP/1.1", "{described}");

    let h2 = client::http2()
        .request(http::Request::get(&url).body(Default::default()).unwrap())
        .await
        .unwrap();
    let described = client::json(h2).await;
    assert_eq!(described["version"], "HTTP/2.0", "{described}");

    app.signal(Signal::SIGTERM);
    let status = app.exit_within(PATIENCE).await;
    assert!(status.success(), "{status}");
}
