//! Which `Host` an admin endpoint (a sidecar's, the control plane's) answers: an IP address or
//! `localhost`, at its own port. A web page on a DNS name that was pointed at this machine (DNS
//! rebinding) sends its own name, so it can neither read nor drive the endpoint.

use http::HeaderValue;
use http::uri::Authority;

/// Whether `host` (the request's `Host`) addresses the admin listener on `port` by an IP address
/// or `localhost`. A request without `Host` (HTTP/1.0, no browser) is let through.
pub fn names_admin_listener(host: Option<&HeaderValue>, port: u16) -> bool {
    let Some(host) = host else {
        return true;
    };
    let Some(authority) = host.to_str().ok().and_then(|h| h.parse::<Authority>().ok()) else {
        return false;
    };
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let named = name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok();
    named && authority.port_u16().is_none_or(|p| p == port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_and_localhost_at_the_port_only() {
        let allowed =
            |host: &str| names_admin_listener(Some(&HeaderValue::from_str(host).unwrap()), 15000);
        for host in [
            "127.0.0.1:15000",
            "127.0.0.1",
            "localhost:15000",
            "[::1]:15000",
            "10.0.0.7:15000",
        ] {
            assert!(allowed(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:15000",
            "localhost:80",
            "127.0.0.1:1",
        ] {
            assert!(!allowed(host), "{host}");
        }
        assert!(names_admin_listener(None, 15000));
    }
}
