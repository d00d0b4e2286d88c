//! Where to dial: an `ip:port`, or a `host:port` whose name is resolved at each connect, such
//! as a Kubernetes Service (`mesh-control-plane.mesh-system.svc:15010`), so an address that
//! moves is followed. The name is only where to dial; who answers is checked by TLS.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use tokio::net::TcpStream;

/// An `ip:port`, or a DNS name and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPort {
    /// An address dialled as it is, with no lookup.
    Ip(SocketAddr),
    /// A name looked up at each connect.
    Name {
        /// A DNS name (letters, digits, hyphens, dots).
        host: String,
        /// The port, never 0.
        port: u16,
    },
}

/// Text that is neither `ip:port` nor `host:port`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid address {text:?}: {why}; write host:port or ip:port, e.g. \
     mesh-control-plane.mesh-system.svc:15010 or 127.0.0.1:15010"
)]
pub struct InvalidHostPort {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

// === impl HostPort ===

impl HostPort {
    /// A TCP connection to this address: an `Ip` at once; a `Name` looked up now, each of its
    /// addresses tried in turn. Errors name the name.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        let (host, port) = match self {
            HostPort::Ip(address) => return TcpStream::connect(address).await,
            HostPort::Name { host, port } => (host.as_str(), *port),
        };
        let addresses = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))?;
        let mut last = None;
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some((address, e)),
            }
        }
        Err(match last {
            Some((address, e)) => io::Error::new(e.kind(), format!("{host} ({address}): {e}")),
            None => io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot resolve {host}: no addresses"),
            ),
        })
    }
}

impl From<SocketAddr> for HostPort {
    fn from(address: SocketAddr) -> Self {
        HostPort::Ip(address)
    }
}

impl FromStr for HostPort {
    type Err = InvalidHostPort;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |why| InvalidHostPort {
            text: text.to_owned(),
            why,
        };
        if let Ok(address) = text.parse::<SocketAddr>() {
            if address.port() == 0 {
                return Err(invalid("port 0 cannot be dialled"));
            }
            return Ok(HostPort::Ip(address));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(invalid("no port"));
        };
        let port = match port.parse::<u16>() {
            Ok(0) => return Err(invalid("port 0 cannot be dialled")),
            Ok(port) => port,
            Err(_) => return Err(invalid("the port is not a number from 1 to 65535")),
        };
        check_name(host).map_err(invalid)?;
        Ok(HostPort::Name {
            host: host.to_owned(),
            port,
        })
    }
}

/// A DNS name as RFC 1123 writes host names: dot-separated labels of letters, digits and
/// inner hyphens, 63 characters each, 253 in all (a final dot allowed), the last label not
/// all digits (that would be a mistyped IP address).
fn check_name(host: &str) -> Result<(), &'static str> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err("no host");
    }
    if name.len() > 253 {
        return Err("the host name is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated part of a host name has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(
                "a host name has letters, digits, dots and hyphens only, no part starting or \
                 ending with a hyphen",
            );
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("not an IP address, nor a host name");
    }
    Ok(())
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPort::Ip(address) => address.fmt(f),
            HostPort::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_parse_and_print_as_written() {
        for text in [
            "127.0.0.1:15010",
            "[::1]:15010",
            "localhost:15010",
            "mesh-control-plane.mesh-system.svc:15010",
            "mesh-control-plane.mesh-system.svc.cluster.local.:15010",
        ] {
            let parsed: HostPort = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(
            "127.0.0.1:15010".parse::<HostPort>().unwrap(),
            HostPort::Ip("127.0.0.1:15010".parse().unwrap())
        );
        assert_eq!(
            "localhost:1".parse::<HostPort>().unwrap(),
            HostPort::Name {
                host: "localhost".into(),
                port: 1
            }
        );
    }

    #[test]
    fn bad_addresses_say_why() {
        for (text, why) in [
            ("localhost", "no port"),
            ("localhost:0", "port 0"),
            ("127.0.0.1:0", "port 0"),
            ("localhost:http", "not a number"),
            (":15010", "no host"),
            ("mesh_cp:15010", "letters, digits"),
            ("-cp:15010", "hyphen"),
            ("a..b:15010", "1 to 63"),
            ("10.0.0:15010", "not an IP address"),
            ("::1:15010", "letters, digits"),
        ] {
            let err = text.parse::<HostPort>().unwrap_err();
            assert!(err.why.contains(why), "{text}: {err}");
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
    }

    #[tokio::test]
    async fn a_name_is_resolved_at_connect_and_one_that_does_not_resolve_is_named() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let by_name: HostPort = format!("localhost:{port}").parse().unwrap();
        // localhost may resolve to ::1 first, where nothing listens: the next address is tried.
        let stream = by_name.connect().await.unwrap();
        assert_eq!(stream.peer_addr().unwrap().port(), port);

        let nowhere: HostPort = "no-such-host.invalid:15010".parse().unwrap();
        let err = nowhere.connect().await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot resolve no-such-host.invalid: "),
            "{err}"
        );
    }
}
