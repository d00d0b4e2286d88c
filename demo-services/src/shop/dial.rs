//! Connections to another service by its name, for the transparent mesh: the system resolver
//! (which reads the hosts file) turns `inventory` into the service's virtual address, and the
//! namespace's netfilter rules bring the connection to the sidecar. The app itself knows of no
//! sidecar.
//!
//! hyper's own connector says only "dns error" or "tcp connect error"; this one names the
//! service and every address it tried, so a missing hosts entry or a sidecar that is not
//! listening is plain from the app's error.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Port of a call whose URI names none: plain HTTP's.
const HTTP_PORT: u16 = 80;

/// Why a connection to a service could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("the URI {0} names no host")]
    NoHost(Uri),
    #[error(
        "{host}:{port} does not resolve ({error}): the hosts file (/etc/hosts; under \
         `ip netns exec NS`, /etc/netns/NS/hosts) should map {host} to the service's virtual address"
    )]
    Unresolved {
        host: String,
        port: u16,
        error: io::Error,
    },
    #[error(
        "{host}:{port} resolves to no address: the hosts file should map {host} to the \
         service's virtual address"
    )]
    NoAddress { host: String, port: u16 },
    #[error("cannot connect to {name}: {failures}")]
    Connect { name: String, failures: String },
}

/// A hyper connector that resolves the URI's host with the system resolver and connects to
/// the first address that answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dialer;

impl tower::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| DialError::NoHost(uri.clone()))?;
            // `[::1]` in a URI, `::1` to the resolver.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let stream = dial(host, uri.port_u16().unwrap_or(HTTP_PORT)).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Resolves `host` and connects to its addresses in turn; the error names `host:port` and each
/// address tried.
pub async fn dial(host: &str, port: u16) -> Result<TcpStream, DialError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| DialError::Unresolved {
            host: host.to_owned(),
            port,
            error,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(DialError::NoAddress {
            host: host.to_owned(),
            port,
        });
    }
    let mut failures = Vec::new();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Small JSON calls: send each at once.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => failures.push(format!("{addr}: {error}")),
        }
    }
    Err(DialError::Connect {
        name: format!("{host}:{port}"),
        failures: failures.join("; "),
    })
}
