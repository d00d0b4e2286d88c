//! The `limits:` block: every field checked against a range that keeps the sidecar working
//! (a cap of zero would refuse everything), defaults filled in from `runtime.rs`.

use mesh_api::validate::{Errors, duration};

use super::runtime::{
    AdminLimits, AppLimits, DEFAULT_ADMIN_HEADER_READ_TIMEOUT, DEFAULT_APP_CONNECT_TIMEOUT,
    DEFAULT_FIRST_BYTES_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_HTTP2_IDLE_TIMEOUT,
    DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT, DEFAULT_MAX_ADMIN_CONNECTIONS,
    DEFAULT_MAX_ADMIN_HEADER_BYTES, DEFAULT_MAX_ADMIN_HEADERS, DEFAULT_MAX_APP_HEADER_BYTES,
    DEFAULT_MAX_APP_HEADERS, DEFAULT_MAX_APP_IDLE_CONNECTIONS, DEFAULT_MAX_APP_REQUESTS,
    DEFAULT_MAX_APP_STREAMS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_LOCAL_ERROR_RESETS, DEFAULT_MAX_PEER_HEADER_BYTES, DEFAULT_MAX_PEER_HEADERS,
    DEFAULT_MAX_PEER_STREAMS, DEFAULT_MAX_PENDING_ACCEPT_RESETS, DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    Http2Limits, HttpListenerLimits, InboundLimits, Limits,
};
use super::schema::{
    AdminLimitsFile, AppLimitsFile, Http2LimitsFile, HttpListenerLimitsFile, LimitsFile,
};

/// hyper reads HTTP/1.1 into a buffer of at least 8 KiB; a smaller header limit cannot be set.
const MIN_HEADER_BYTES: u32 = 8 << 10;
/// HTTP/2 carries a header list size in 32 bits, but no client sends a megabyte of headers.
const MAX_HEADER_BYTES: u32 = 1 << 20;
const MAX_HEADERS: u32 = 10_000;
const MAX_CONNECTIONS: u32 = 1_000_000;

/// The per-listener and app limits of `file`, each error with its path under `limits`.
pub(super) fn validate(file: LimitsFile, errors: &mut Errors) -> Limits {
    let defaults = Limits::default();
    let inbound = file.inbound;
    Limits {
        outbound: http_listener("limits.outbound", file.outbound, &defaults.outbound, errors),
        inbound: InboundLimits {
            http: http_listener(
                "limits.inbound",
                HttpListenerLimitsFile {
                    max_connections: inbound.max_connections,
                    header_read_timeout: inbound.header_read_timeout,
                    max_header_bytes: inbound.max_header_bytes,
                    max_headers: inbound.max_headers,
                    http2: inbound.http2,
                },
                &defaults.inbound.http,
                errors,
            ),
            max_handshakes: count(
                errors,
                "limits.inbound.max_handshakes",
                inbound.max_handshakes,
                defaults.inbound.max_handshakes,
                MAX_CONNECTIONS,
            ),
            tls_handshake_timeout: duration(
                errors,
                "limits.inbound.tls_handshake_timeout",
                inbound.tls_handshake_timeout,
                defaults.inbound.tls_handshake_timeout,
            ),
            first_bytes_timeout: duration(
                errors,
                "limits.inbound.first_bytes_timeout",
                inbound.first_bytes_timeout,
                defaults.inbound.first_bytes_timeout,
            ),
        },
        admin: admin(file.admin, &defaults.admin, errors),
        app: app(file.app, &defaults.app, errors),
    }
}

fn http_listener(
    path: &str,
    file: HttpListenerLimitsFile,
    defaults: &HttpListenerLimits,
    errors: &mut Errors,
) -> HttpListenerLimits {
    HttpListenerLimits {
        max_connections: count(
            errors,
            &format!("{path}.max_connections"),
            file.max_connections,
            defaults.max_connections,
            MAX_CONNECTIONS,
        ),
        header_read_timeout: duration(
            errors,
            &format!("{path}.header_read_timeout"),
            file.header_read_timeout,
            defaults.header_read_timeout,
        ),
        max_header_bytes: header_bytes(
            errors,
            &format!("{path}.max_header_bytes"),
            file.max_header_bytes,
            defaults.max_header_bytes,
        ),
        max_headers: count(
            errors,
            &format!("{path}.max_headers"),
            file.max_headers,
            defaults.max_headers,
            MAX_HEADERS,
        ),
        http2: http2(
            &format!("{path}.http2"),
            file.http2,
            &defaults.http2,
            errors,
        ),
    }
}

fn http2(
    path: &str,
    file: Http2LimitsFile,
    defaults: &Http2Limits,
    errors: &mut Errors,
) -> Http2Limits {
    let field = |name: &str| format!("{path}.{name}");
    Http2Limits {
        max_concurrent_streams: count(
            errors,
            &field("max_concurrent_streams"),
            file.max_concurrent_streams,
            defaults.max_concurrent_streams,
            u32::MAX,
        ),
        max_pending_accept_reset_streams: count(
            errors,
            &field("max_pending_accept_reset_streams"),
            file.max_pending_accept_reset_streams,
            defaults.max_pending_accept_reset_streams,
            u32::MAX,
        ),
        max_local_error_reset_streams: count(
            errors,
            &field("max_local_error_reset_streams"),
            file.max_local_error_reset_streams,
            defaults.max_local_error_reset_streams,
            u32::MAX,
        ),
        idle_timeout: duration(
            errors,
            &field("idle_timeout"),
            file.idle_timeout,
            defaults.idle_timeout,
        ),
        keep_alive_interval: duration(
            errors,
            &field("keep_alive_interval"),
            file.keep_alive_interval,
            defaults.keep_alive_interval,
        ),
        keep_alive_timeout: duration(
            errors,
            &field("keep_alive_timeout"),
            file.keep_alive_timeout,
            defaults.keep_alive_timeout,
        ),
    }
}

fn admin(file: AdminLimitsFile, defaults: &AdminLimits, errors: &mut Errors) -> AdminLimits {
    AdminLimits {
        max_connections: count(
            errors,
            "limits.admin.max_connections",
            file.max_connections,
            defaults.max_connections,
            MAX_CONNECTIONS,
        ),
        header_read_timeout: duration(
            errors,
            "limits.admin.header_read_timeout",
            file.header_read_timeout,
            defaults.header_read_timeout,
        ),
        max_header_bytes: header_bytes(
            errors,
            "limits.admin.max_header_bytes",
            file.max_header_bytes,
            defaults.max_header_bytes,
        ),
        max_headers: count(
            errors,
            "limits.admin.max_headers",
            file.max_headers,
            defaults.max_headers,
            MAX_HEADERS,
        ),
    }
}

fn app(file: AppLimitsFile, defaults: &AppLimits, errors: &mut Errors) -> AppLimits {
    let max_idle_connections = file
        .max_idle_connections
        .unwrap_or(defaults.max_idle_connections);
    AppLimits {
        max_concurrent_requests: count(
            errors,
            "limits.app.max_concurrent_requests",
            file.max_concurrent_requests,
            defaults.max_concurrent_requests,
            MAX_CONNECTIONS,
        ),
        connect_timeout: duration(
            errors,
            "limits.app.connect_timeout",
            file.connect_timeout,
            defaults.connect_timeout,
        ),
        // Zero is allowed: every connection to the app is then closed after its request.
        max_idle_connections,
    }
}

/// A count between 1 and `max`: a cap of zero would refuse everything.
fn count(errors: &mut Errors, path: &str, value: Option<u32>, default: u32, max: u32) -> u32 {
    let n = value.unwrap_or(default);
    if !(1..=max).contains(&n) {
        errors.push(path, format!("must be between 1 and {max}"));
        return default;
    }
    n
}

fn header_bytes(errors: &mut Errors, path: &str, value: Option<u32>, default: u32) -> u32 {
    let n = value.unwrap_or(default);
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&n) {
        errors.push(
            path,
            format!(
                "must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES} bytes (8 KiB to 1 MiB)"
            ),
        );
        return default;
    }
    n
}

// === impl Limits ===

impl Default for Limits {
    fn default() -> Self {
        let http2 = Http2Limits {
            max_concurrent_streams: DEFAULT_MAX_APP_STREAMS,
            max_pending_accept_reset_streams: DEFAULT_MAX_PENDING_ACCEPT_RESETS,
            max_local_error_reset_streams: DEFAULT_MAX_LOCAL_ERROR_RESETS,
            idle_timeout: DEFAULT_HTTP2_IDLE_TIMEOUT,
            keep_alive_interval: DEFAULT_KEEP_ALIVE_INTERVAL,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
        };
        Self {
            outbound: HttpListenerLimits {
                max_connections: DEFAULT_MAX_CONNECTIONS,
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                max_header_bytes: DEFAULT_MAX_APP_HEADER_BYTES,
                max_headers: DEFAULT_MAX_APP_HEADERS,
                http2,
            },
            inbound: InboundLimits {
                http: HttpListenerLimits {
                    max_connections: DEFAULT_MAX_CONNECTIONS,
                    header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                    max_header_bytes: DEFAULT_MAX_PEER_HEADER_BYTES,
                    max_headers: DEFAULT_MAX_PEER_HEADERS,
                    http2: Http2Limits {
                        max_concurrent_streams: DEFAULT_MAX_PEER_STREAMS,
                        ..http2
                    },
                },
                max_handshakes: DEFAULT_MAX_HANDSHAKES,
                tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                first_bytes_timeout: DEFAULT_FIRST_BYTES_TIMEOUT,
            },
            admin: AdminLimits {
                max_connections: DEFAULT_MAX_ADMIN_CONNECTIONS,
                header_read_timeout: DEFAULT_ADMIN_HEADER_READ_TIMEOUT,
                max_header_bytes: DEFAULT_MAX_ADMIN_HEADER_BYTES,
                max_headers: DEFAULT_MAX_ADMIN_HEADERS,
            },
            app: AppLimits {
                max_concurrent_requests: DEFAULT_MAX_APP_REQUESTS,
                connect_timeout: DEFAULT_APP_CONNECT_TIMEOUT,
                max_idle_connections: DEFAULT_MAX_APP_IDLE_CONNECTIONS,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn read(yaml: &str) -> (Limits, Vec<(String, String)>) {
        let file: LimitsFile = serde_saphyr::from_str(yaml).unwrap();
        let mut errors = Errors::default();
        let limits = validate(file, &mut errors);
        let errors = errors
            .into_vec()
            .into_iter()
            .map(|e| (e.path, e.message))
            .collect();
        (limits, errors)
    }

    #[test]
    fn defaults_keep_the_limits_the_sidecar_had() {
        let (limits, errors) = read("{}");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(limits, Limits::default());
        assert_eq!(limits.outbound.max_header_bytes, 64 << 10);
        assert_eq!(limits.inbound.http.max_header_bytes, 96 << 10);
        assert_eq!(limits.inbound.http.http2.max_concurrent_streams, 10_000);
        assert_eq!(
            limits.inbound.tls_handshake_timeout,
            Duration::from_secs(10)
        );
        assert_eq!(limits.outbound.header_read_timeout, Duration::from_secs(30));
    }

    #[test]
    fn fields_are_read_and_bad_ones_named_by_path() {
        let (limits, errors) = read(
            "outbound: { max_connections: 5, http2: { idle_timeout: 2s } }\n\
             inbound: { max_handshakes: 3, first_bytes_timeout: 200ms }\n\
             app: { max_concurrent_requests: 7, max_idle_connections: 0 }\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(limits.outbound.max_connections, 5);
        assert_eq!(limits.outbound.http2.idle_timeout, Duration::from_secs(2));
        assert_eq!(limits.inbound.max_handshakes, 3);
        assert_eq!(
            limits.inbound.first_bytes_timeout,
            Duration::from_millis(200)
        );
        assert_eq!(limits.app.max_concurrent_requests, 7);
        assert_eq!(limits.app.max_idle_connections, 0);

        let (_, errors) = read(
            "outbound: { max_connections: 0, max_header_bytes: 100 }\n\
             inbound: { http2: { keep_alive_timeout: soon, max_pending_accept_reset_streams: 0 } }\n\
             admin: { max_headers: 0 }\napp: { connect_timeout: 0s }\n",
        );
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "limits.outbound.max_connections",
                "limits.outbound.max_header_bytes",
                "limits.inbound.http2.max_pending_accept_reset_streams",
                "limits.inbound.http2.keep_alive_timeout",
                "limits.admin.max_headers",
                "limits.app.connect_timeout",
            ],
            "{errors:?}"
        );
    }
}
