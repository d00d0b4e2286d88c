//! A destination's local listener: the address where a calling app connects on its own sidecar,
//! and the port the destination's app serves on. A `protocol: tcp` destination tunnels every
//! connection there as it is; an `http` destination with `listen` detects each connection's
//! protocol first. Validated here so the bootstrap file and the control plane's service files
//! follow one set of rules.

use std::net::SocketAddr;

use serde::Serialize;

use crate::validate::Errors;

/// How a calling app reaches a destination through a listener of its own.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct TcpDestination {
    /// Where the caller's sidecar listens for its app's connections to the destination.
    pub listen: SocketAddr,
    /// The port the destination's app serves on, named in each tunnel's `:authority`; `None`
    /// (an `http` destination without `port`): the port of the app behind each peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Whether each connection's protocol is detected first: HTTP is served as requests to
    /// the destination, anything else tunnelled. Set for `http` destinations, never for `tcp`
    /// ones, whose server may speak first.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub detect: bool,
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
    /// Whether `fault` is set.
    pub fault: bool,
}

/// The listener of a destination at `path` (empty for a service file's top level): `None`
/// without `listen`. `protocol: tcp` needs `listen` and `port`, and takes neither routes,
/// retries nor a timeout: a stream's bytes are not matched by path, cannot be replayed, and last
/// as long as the app wants. An `http` destination may have `listen` (then `port` is optional)
/// and keeps its routes, retries and timeout for the HTTP detected there.
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
            let Some(listen) = fields.listen else {
                if fields.port.is_some() {
                    errors.push(
                        at("port"),
                        "only a destination with listen takes it: connections there that are \
                         not HTTP go to this port",
                    );
                }
                return None;
            };
            let listen = listen_addr(listen, &at, errors);
            let port = app_port(fields.port, &at, errors);
            return Some(TcpDestination {
                listen: listen?,
                port: port.ok()?,
                detect: true,
            });
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
        (
            "fault",
            fields.fault,
            "faults are injected into requests, and a TCP stream is not one",
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
        Some(value) => listen_addr(value, &at, errors),
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
        None => {
            errors.push(
                at("port"),
                "a protocol: tcp destination needs the port its app serves on, e.g. 6379",
            );
            None
        }
        port => app_port(port, &at, errors).ok().flatten(),
    };
    Some(TcpDestination {
        listen: listen?,
        port: Some(port?),
        detect: false,
    })
}

/// `listen`: an address with a port of its own.
fn listen_addr(
    value: &str,
    at: &dyn Fn(&str) -> String,
    errors: &mut Errors,
) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
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
    }
}

/// `port`, when set: a port number; `Err` when it is not one.
fn app_port(
    port: Option<u16>,
    at: &dyn Fn(&str) -> String,
    errors: &mut Errors,
) -> Result<Option<u16>, ()> {
    match port {
        Some(0) => {
            errors.push(at("port"), "must be a port number between 1 and 65535");
            Err(())
        }
        port => Ok(port),
    }
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
        assert_eq!(tcp.port, Some(6379));
        assert!(!tcp.detect);
    }

    #[test]
    fn an_http_destination_may_listen_and_then_detects() {
        let (tcp, errors) = check(&TcpFields {
            listen: Some("127.0.0.1:8090"),
            routes: true,
            retries: true,
            timeout: true,
            fault: false,
            ..TcpFields::default()
        });
        assert!(errors.is_empty(), "{errors:?}");
        let tcp = tcp.unwrap();
        assert!(tcp.detect);
        assert_eq!(tcp.port, None);
        let (tcp, errors) = check(&TcpFields {
            protocol: Some("http"),
            listen: Some("127.0.0.1:8090"),
            port: Some(8080),
            ..TcpFields::default()
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(tcp.unwrap().port, Some(8080));
        let (_, errors) = check(&TcpFields {
            listen: Some("127.0.0.1:0"),
            port: Some(0),
            ..TcpFields::default()
        });
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["destinations.redis.listen", "destinations.redis.port"]
        );
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
            fault: false,
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
            port: Some(6379),
            ..TcpFields::default()
        });
        assert_eq!(errors[0].0, "destinations.redis.port");
        assert!(
            errors[0].1.contains("only a destination with listen"),
            "{errors:?}"
        );
        let (_, errors) = check(&TcpFields {
            protocol: Some("tcp"),
            listen: Some("127.0.0.1:0"),
            port: Some(6379),
            ..TcpFields::default()
        });
        assert_eq!(errors[0].0, "destinations.redis.listen");
    }
}
