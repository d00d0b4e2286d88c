//! Where the load client's sockets are made: in the harness's own network namespace, or in a
//! namespace of a configuration that runs its client side in one (see `namespaced.rs`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_testkit::netns;
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

/// Where a configuration takes its requests: the address the load client dials, the network
/// namespace its sockets are made in, and the `Host` its requests carry.
#[derive(Debug, Clone)]
pub(crate) struct Dial {
    pub(crate) addr: SocketAddr,
    /// `None`: the harness's own namespace.
    pub(crate) namespace: Option<Arc<str>>,
    pub(crate) authority: &'static str,
    /// TLS to the entry (a gateway's HTTPS listener), or `None` for plain TCP.
    pub(crate) tls: Option<EdgeTls>,
}

/// A load client's TLS: the connector (trusting the edge certificate's CA) and the name it
/// asks for by SNI and verifies.
#[derive(Clone)]
pub(crate) struct EdgeTls {
    pub(crate) connector: TlsConnector,
    pub(crate) name: ServerName<'static>,
}

impl std::fmt::Debug for EdgeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeTls").field("name", &self.name).finish()
    }
}

impl Dial {
    /// Connects to [`Dial::addr`] from the configuration's namespace.
    pub(crate) async fn connect(&self) -> io::Result<TcpStream> {
        connect_in(self.namespace.as_deref(), self.addr).await
    }
}

/// Connects to `addr` with a socket made inside `namespace` (`None`: this process's own). A
/// socket keeps the namespace it was made in, so only its creation happens on a thread that
/// entered the namespace; the connection is then driven from the runtime like any other.
pub(crate) async fn connect_in(namespace: Option<&str>, addr: SocketAddr) -> io::Result<TcpStream> {
    let new_socket = || {
        if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
    };
    let socket = match namespace {
        None => new_socket()?,
        Some(name) => netns::enter(name, new_socket)?,
    };
    socket.connect(addr).await
}
