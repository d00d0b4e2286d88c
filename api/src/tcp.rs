//! `protocol: tcp` destinations: the local address where a calling app connects, and the port
//! the destination's app serves on. Validated here so the bootstrap file and the control plane's
//! service files follow one set of rules.

use std::net::SocketAddr;

use serde::Serialize;

use crate::validate::Errors;

/// How a calling app reaches a `protocol: tcp` destination.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct TcpDestination {
    /// Where the caller's sidecar listens for its app's connections to the destination.
    pub listen: SocketAddr,
    /// The port the destination's app serves on, named in each tunnel's `:authority`.
    pub port: u16,
}

/// The fields of a destination (or service file) that decide whether it is TCP.
#[derive(Debug, Default)]
pub struct TcpFields<'a> {
    /// `protocol`: `http` (the default) or `tcp`.
    pub protocol: Option<&'a str>,
    /// `listen`.
    pub listen: Option<&'a str>,
    /// `port`.
    pub port: Option<u16>,
    /// Whether `routes` is set.
    pub routes: bool,
    /// Whether `retries` is set.
    pub retries: bool,
    /// Whether `timeout` is set.
    pub timeout: bool,
}

/// The TCP side of a destination at `path` (empty for a service file's top level): `None` for
/// an HTTP one. `protocol: tcp` needs `listen` and `port`, and takes neither routes, retries nor
/// a timeout: a stream's bytes are not matched by path, cannot be replayed, and last as long as
/// the app wants.
pub fn validate(fields: &TcpFields<'_>, path: &str, errors: &mut Errors) -> Option<TcpDestination> {
    let at = |field: &str| {
        if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    };
    match fields.protocol {
        None | Some("http") => {
            for (field, set) in [
                ("listen", fields.listen.is_some()),
                ("port", fields.port.is_some()),
            ] {
                if set {
                    errors.push(at(field), "only a protocol: tcp destination takes it");
                }
            }
            return None;
        }
        Some("tcp") => {}
        Some(other) => {
            errors.push(
                at("protocol"),
                format!("unknown protocol {other:?}: use http or tcp"),
            );
            return None;
        }
    }
    let refused = [
        (
            "routes",
            fields.routes,
            "a TCP stream has no method or path to match",
        ),
        (
            "retries",
            fields.retries,
            "a TCP stream cannot be retried: its bytes cannot be replayed",
        ),
        (
            "timeout",
            fields.timeout,
            "a TCP stream has no request to time out; connect_timeout limits its connect",
        ),
    ];
    for (field, set, why) in refused {
        if set {
            errors.push(
                at(field),
                format!("not allowed on a protocol: tcp destination: {why}"),
            );
        }
    }
    let listen = match fields.listen {
        Some(value) => match value.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                errors.push(
                    at("listen"),
                    "needs a port of its own: the app connects to it",
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                errors.push(at("listen"), format!("invalid socket address {value:?}"));
                None
            }
        },
        None => {
            errors.push(
                at("listen"),
                "a protocol: tcp destination needs the address its callers' apps connect to, \
                 e.g. 127.0.0.1:6380",
            );
            None
        }
    };
    let port = match fields.port {
        Some(0) => {
            errors.push(at("port"), "must be a port number between 1 and 65535");
            None
        }
        Some(port) => Some(port),
        None => {
            errors.push(
                at("port"),
                "a protocol: tcp destination needs the port its app serves on, e.g. 6379",
            );
            None
        }
    };
    Some(TcpDestination {
        listen: listen?,
        port: port?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn check(fields: &TcpFields<'_>) -> (Option<TcpDestination>, Vec<(String, String)>) {
        let mut errors = Errors::default();
        let tcp = validate(fields, "destinations.redis", &mut errors);
        let errors = errors
            .into_vec()
            .into_iter()
            .map(|e| (e.path, e.message))
            .collect();
        (tcp, errors)
    }

    #[test]
    fn a_tcp_destination_has_a_listen_address_and_a_port() {
        let (tcp, errors) = check(&TcpFields {
            protocol: Some("tcp"),
            listen: Some("127.0.0.1:6380"),
            port: Some(6379),
            ..TcpFields::default()
        });
        assert!(errors.is_empty(), "{errors:?}");
        let tcp = tcp.unwrap();
        assert_eq!(tcp.listen.to_string(), "127.0.0.1:6380");
        assert_eq!(tcp.port, 6379);
    }

    #[test]
    fn routes_retries_and_timeout_are_refused_by_name() {
        let (_, errors) = check(&TcpFields {
            protocol: Some("tcp"),
            listen: Some("127.0.0.1:6380"),
            port: Some(6379),
            routes: true,
            retries: true,
            timeout: true,
        });
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "destinations.redis.routes",
                "destinations.redis.retries",
                "destinations.redis.timeout"
            ]
        );
        assert!(errors[1].1.contains("cannot be replayed"), "{errors:?}");
    }

    #[test]
    fn missing_or_bad_fields_are_named() {
        let (tcp, errors) = check(&TcpFields {
            protocol: Some("tcp"),
            listen: Some("localhost"),
            ..TcpFields::default()
        });
        assert!(tcp.is_none());
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["destinations.redis.listen", "destinations.redis.port"]
        );
        let (_, errors) = check(&TcpFields {
            protocol: Some("udp"),
            ..TcpFields::default()
        });
        assert_eq!(errors[0].0, "destinations.redis.protocol");
        let (_, errors) = check(&TcpFields {
            listen: Some("127.0.0.1:6380"),
            ..TcpFields::default()
        });
        assert_eq!(errors[0].0, "destinations.redis.listen");
        assert!(errors[0].1.contains("only a protocol: tcp"), "{errors:?}");
        let (_, errors) = check(&TcpFields {
            protocol: Some("tcp"),
            listen: Some("127.0.0.1:0"),
            port: Some(6379),
            ..TcpFields::default()
        });
        assert_eq!(errors[0].0, "destinations.redis.listen");
    }
}
