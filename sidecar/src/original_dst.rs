//! Where a redirected connection was going. A connection that `sidecar redirect`'s rules sent
//! to a listener arrives with the listener's address as its local address; conntrack still
//! holds the address the app dialled, which `SO_ORIGINAL_DST` (IPv4) and
//! `IP6T_SO_ORIGINAL_DST` (IPv6) read back.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use socket2::SockRef;

/// The address a redirected connection was dialled to, kept on each request it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalDst(pub SocketAddr);

/// The address the client dialled, or `None` when the connection was not redirected (it came
/// to the listener's own address, or conntrack does not track it).
pub fn original_dst(stream: &impl AsFd) -> io::Result<Option<SocketAddr>> {
    let socket = SockRef::from(stream);
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
    // An IPv4 client on a dual-stack listener is tracked as IPv4.
    let original = match unmapped(local) {
        SocketAddr::V4(_) => socket.original_dst_v4(),
        SocketAddr::V6(_) => socket.original_dst_v6(),
    };
    let original = match original {
        Ok(original) => original.as_socket(),
        // No conntrack entry, or no conntrack for this family: nothing rewrote the address.
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ENOPROTOOPT)) => {
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    Ok(original
        .map(unmapped)
        .filter(|original| *original != unmapped(local)))
}

/// `::ffff:a.b.c.d` as `a.b.c.d`, so that both sides of a comparison are written alike.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_that_was_not_redirected_has_no_original_destination() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = tokio::net::TcpListener::bind(bind).await else {
                // No IPv6 on this machine.
                continue;
            };
            let addr = listener.local_addr().unwrap();
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            assert_eq!(original_dst(&accepted).unwrap(), None, "{bind}");
        }
    }

    #[test]
    fn mapped_addresses_compare_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert_eq!(unmapped(mapped), "127.0.0.1:80".parse().unwrap());
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
    }
}
