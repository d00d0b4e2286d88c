//! A TCP connection opened inside an instance's namespace as the sidecar's user.
//!
//! The redirect rules send every connection of the instance to its sidecar except the sidecar's
//! own (matched by the owner of the socket). An operator's call to the app itself, such as a
//! demo fault knob, must take the sidecar's path to it: from inside the namespace, past the
//! redirect, as the sidecar's user. From the host it would come in as an unauthenticated
//! caller, which the app's sidecar refuses.
//!
//! netfilter takes a socket's owner from the file system UID of the thread that made it, so the
//! socket is made on a thread of its own that joins the namespace and takes that UID; the
//! process's other threads keep theirs. A connected socket keeps its namespace and owner when
//! handed to the async runtime.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use nix::unistd::{Uid, setfsuid};

/// Why the connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The namespace is gone or cannot be joined.
    #[error("cannot enter the network namespace {namespace}: {message}")]
    Namespace {
        /// The namespace.
        namespace: String,
        /// What failed.
        message: String,
    },
    /// Connecting failed.
    #[error("{addr} in the network namespace {namespace}: {source}")]
    Connect {
        /// The namespace.
        namespace: String,
        /// The address dialled.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// Connects to `addr` inside the namespace `namespace` (as `ip netns` names it) as the user
/// `uid`, within `timeout`.
pub async fn connect_as(
    namespace: &str,
    uid: u32,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, DialError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = namespace.to_owned();
    // A thread of its own, never one of the runtime's pools: it leaves this thread in the
    // namespace and with the other UID when it ends, so no later task may run on it.
    std::thread::spawn(move || {
        let _ = tx.send(connect_blocking(&name, uid, addr, timeout));
    });
    let stream = rx.await.map_err(|_| DialError::Namespace {
        namespace: namespace.to_owned(),
        message: "the connecting thread ended without an answer".into(),
    })??;
    let connect = |source| DialError::Connect {
        namespace: namespace.to_owned(),
        addr,
        source,
    };
    stream.set_nonblocking(true).map_err(connect)?;
    tokio::net::TcpStream::from_std(stream).map_err(connect)
}

fn connect_blocking(
    namespace: &str,
    uid: u32,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, DialError> {
    let entered = |message: String| DialError::Namespace {
        namespace: namespace.to_owned(),
        message,
    };
    let path = format!("/run/netns/{namespace}");
    let file = File::open(&path).map_err(|e| entered(format!("{path}: {e}")))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| entered(e.to_string()))?;
    // setfsuid answers the previous value and cannot fail visibly; asking again tells.
    setfsuid(Uid::from_raw(uid));
    if setfsuid(Uid::from_raw(uid)) != Uid::from_raw(uid) {
        return Err(entered(format!("cannot act as user {uid} (needs root)")));
    }
    TcpStream::connect_timeout(&addr, timeout).map_err(|source| DialError::Connect {
        namespace: namespace.to_owned(),
        addr,
        source,
    })
}
