//! `mesh.yaml`'s limits on what callers may ask of the control plane: the gRPC listener
//! (`api`), registration (`registration`) and the admin listener (`admin`).
//!
//! ```yaml
//! api:
//!   max_connections: 1024              # open connections, handshakes included
//!   max_handshakes: 128                # TLS handshakes in progress at once
//!   handshake_timeout: 10s
//!   max_concurrent_streams: 128        # per connection, Watch streams included
//!   max_pending_accept_reset_streams: 20   # streams a client resets before they are served
//!   max_local_error_reset_streams: 256     # streams the server resets for protocol errors
//!   request_timeout: 15s               # unary calls; Watch streams are not cut
//!   idle_timeout: 10m                  # a connection with no call in flight this long is closed
//!   keepalive_interval: 30s
//!   keepalive_timeout: 10s
//!   rate_limits:
//!     certify_per_source_ip: { requests_per_second: 20, burst: 100 }
//!     certify_per_service: { requests_per_second: 20, burst: 100 }
//!     register_per_caller: { requests_per_second: 50, burst: 200 }
//! registration:
//!   allowed_addresses: [10.0.0.0/8]    # may be registered from any source address
//!   max_instances_per_service: 1000
//! admin:
//!   max_connections: 64
//!   header_timeout: 5s
//! ```
//!
//! The `api` and `admin` blocks configure listeners, so they take effect at start only;
//! `registration` applies to the next call.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use mesh_api::rate_limit::Rate;
use mesh_api::validate::{Errors, duration};
use serde::{Deserialize, Serialize, Serializer};

const MAX_RATE: f64 = 1_000_000.0;

/// The gRPC listener's limits.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApiLimits {
    /// Open connections, handshakes included; past it, a new connection is closed at once.
    pub max_connections: usize,
    /// TLS handshakes in progress; past it, a new connection is closed at once.
    pub max_handshakes: usize,
    /// How long a client may take to complete the TLS handshake.
    #[serde(serialize_with = "human_duration")]
    pub handshake_timeout: Duration,
    /// HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Streams a client may reset before the server accepts them, before a GOAWAY.
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for a client's protocol errors, before a GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// The longest a unary call may run.
    #[serde(serialize_with = "human_duration")]
    pub request_timeout: Duration,
    /// How long a connection may stay with no call in flight before it is closed.
    #[serde(serialize_with = "human_duration")]
    pub idle_timeout: Duration,
    /// How often an HTTP/2 PING checks a quiet connection.
    #[serde(serialize_with = "human_duration")]
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    #[serde(serialize_with = "human_duration")]
    pub keepalive_timeout: Duration,
    /// Per-caller rates.
    pub rate_limits: RateLimits,
}

/// Rates of the calls that cost the control plane the most or that guess secrets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RateLimits {
    /// `Identity.Certify` calls from one source IP address.
    pub certify_per_source_ip: Rate,
    /// `Identity.Certify` calls naming one declared service.
    pub certify_per_service: Rate,
    /// `Registry.Register` calls from one service identity.
    pub register_per_caller: Rate,
}

/// What an instance may register.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegistrationSettings {
    /// Addresses an instance may register from any source address; any other must be the
    /// address its connection comes from.
    pub allowed_addresses: Vec<Cidr>,
    /// Instances one service may have registered.
    pub max_instances_per_service: usize,
}

/// The admin listener's limits.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdminLimits {
    /// Open connections; past it, a new connection is closed at once.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers.
    #[serde(serialize_with = "human_duration")]
    pub header_timeout: Duration,
}

/// An IP range: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

// === schema ===

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiFile {
    max_connections: Option<usize>,
    max_handshakes: Option<usize>,
    handshake_timeout: Option<String>,
    max_concurrent_streams: Option<u32>,
    max_pending_accept_reset_streams: Option<usize>,
    max_local_error_reset_streams: Option<usize>,
    request_timeout: Option<String>,
    idle_timeout: Option<String>,
    keepalive_interval: Option<String>,
    keepalive_timeout: Option<String>,
    #[serde(default)]
    rate_limits: RateLimitsFile,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitsFile {
    certify_per_source_ip: Option<RateFile>,
    certify_per_service: Option<RateFile>,
    register_per_caller: Option<RateFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateFile {
    requests_per_second: f64,
    burst: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegistrationFile {
    #[serde(default)]
    allowed_addresses: Vec<String>,
    max_instances_per_service: Option<usize>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminFile {
    max_connections: Option<usize>,
    header_timeout: Option<String>,
}

// === defaults ===

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_handshakes: 128,
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_streams: 128,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 256,
            request_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(600),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            rate_limits: RateLimits::default(),
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        let rate = |requests_per_second, burst| Rate {
            requests_per_second,
            burst,
        };
        Self {
            certify_per_source_ip: rate(20.0, 100),
            certify_per_service: rate(20.0, 100),
            register_per_caller: rate(50.0, 200),
        }
    }
}

impl Default for RegistrationSettings {
    fn default() -> Self {
        Self {
            allowed_addresses: Vec::new(),
            max_instances_per_service: 1000,
        }
    }
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
        }
    }
}

// === validation ===

pub(super) fn api(file: ApiFile, errors: &mut Errors) -> ApiLimits {
    let d = ApiLimits::default();
    let count = |errors: &mut Errors, field: &str, value: Option<usize>, default: usize| {
        positive(errors, &format!("api.{field}"), value, default)
    };
    let time = |errors: &mut Errors, field: &str, value: Option<String>, default: Duration| {
        duration(errors, &format!("api.{field}"), value, default)
    };
    let max_concurrent_streams = file
        .max_concurrent_streams
        .unwrap_or(d.max_concurrent_streams);
    if max_concurrent_streams == 0 {
        errors.push(
            "api.max_concurrent_streams",
            "must be at least 1: every call is a stream",
        );
    }
    let limits = ApiLimits {
        max_connections: count(
            errors,
            "max_connections",
            file.max_connections,
            d.max_connections,
        ),
        max_handshakes: count(
            errors,
            "max_handshakes",
            file.max_handshakes,
            d.max_handshakes,
        ),
        handshake_timeout: time(
            errors,
            "handshake_timeout",
            file.handshake_timeout,
            d.handshake_timeout,
        ),
        max_concurrent_streams,
        max_pending_accept_reset_streams: count(
            errors,
            "max_pending_accept_reset_streams",
            file.max_pending_accept_reset_streams,
            d.max_pending_accept_reset_streams,
        ),
        max_local_error_reset_streams: count(
            errors,
            "max_local_error_reset_streams",
            file.max_local_error_reset_streams,
            d.max_local_error_reset_streams,
        ),
        request_timeout: time(
            errors,
            "request_timeout",
            file.request_timeout,
            d.request_timeout,
        ),
        idle_timeout: time(errors, "idle_timeout", file.idle_timeout, d.idle_timeout),
        keepalive_interval: time(
            errors,
            "keepalive_interval",
            file.keepalive_interval,
            d.keepalive_interval,
        ),
        keepalive_timeout: time(
            errors,
            "keepalive_timeout",
            file.keepalive_timeout,
            d.keepalive_timeout,
        ),
        rate_limits: rate_limits(file.rate_limits, errors),
    };
    if limits.max_handshakes > limits.max_connections {
        errors.push(
            "api.max_handshakes",
            format!(
                "{} exceeds api.max_connections ({}): a handshake is a connection",
                limits.max_handshakes, limits.max_connections
            ),
        );
    }
    limits
}

fn rate_limits(file: RateLimitsFile, errors: &mut Errors) -> RateLimits {
    let d = RateLimits::default();
    let mut one = |field: &str, value: Option<RateFile>, default: Rate| {
        value.map_or(default, |r| {
            rate(r, &format!("api.rate_limits.{field}"), errors).unwrap_or(default)
        })
    };
    RateLimits {
        certify_per_source_ip: one(
            "certify_per_source_ip",
            file.certify_per_source_ip,
            d.certify_per_source_ip,
        ),
        certify_per_service: one(
            "certify_per_service",
            file.certify_per_service,
            d.certify_per_service,
        ),
        register_per_caller: one(
            "register_per_caller",
            file.register_per_caller,
            d.register_per_caller,
        ),
    }
}

fn rate(file: RateFile, path: &str, errors: &mut Errors) -> Option<Rate> {
    let rps = file.requests_per_second;
    if !(rps.is_finite() && rps > 0.0 && rps <= MAX_RATE) {
        errors.push(
            format!("{path}.requests_per_second"),
            format!("{rps}: must be greater than 0 and at most {MAX_RATE}"),
        );
        return None;
    }
    // One second's worth by default, and at least one call.
    let burst = file
        .burst
        .unwrap_or_else(|| rps.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
    if burst == 0 {
        errors.push(format!("{path}.burst"), "must be at least 1");
        return None;
    }
    Some(Rate {
        requests_per_second: rps,
        burst,
    })
}

pub(super) fn registration(file: RegistrationFile, errors: &mut Errors) -> RegistrationSettings {
    let d = RegistrationSettings::default();
    let allowed_addresses = file
        .allowed_addresses
        .iter()
        .enumerate()
        .filter_map(|(i, text)| match text.parse::<Cidr>() {
            Ok(cidr) => Some(cidr),
            Err(e) => {
                errors.push(format!("registration.allowed_addresses[{i}]"), e);
                None
            }
        })
        .collect();
    RegistrationSettings {
        allowed_addresses,
        max_instances_per_service: positive(
            errors,
            "registration.max_instances_per_service",
            file.max_instances_per_service,
            d.max_instances_per_service,
        ),
    }
}

pub(super) fn admin(file: AdminFile, errors: &mut Errors) -> AdminLimits {
    let d = AdminLimits::default();
    AdminLimits {
        max_connections: positive(
            errors,
            "admin.max_connections",
            file.max_connections,
            d.max_connections,
        ),
        header_timeout: duration(
            errors,
            "admin.header_timeout",
            file.header_timeout,
            d.header_timeout,
        ),
    }
}

fn positive(errors: &mut Errors, path: &str, value: Option<usize>, default: usize) -> usize {
    match value {
        Some(0) => {
            errors.push(path, "must be at least 1");
            default
        }
        Some(n) => n,
        None => default,
    }
}

fn human_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

// === impl RegistrationSettings ===

impl RegistrationSettings {
    /// Whether `ip` is in one of the allowed ranges.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed_addresses.iter().any(|c| c.contains(ip))
    }
}

// === impl Cidr ===

impl Cidr {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// An IPv4 range, for constants.
    pub(crate) const fn v4(octets: [u8; 4], prefix: u8) -> Self {
        Self {
            network: IpAddr::V4(std::net::Ipv4Addr::new(
                octets[0], octets[1], octets[2], octets[3],
            )),
            prefix,
        }
    }

    /// The address as written, host bits and all.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn bits(&self) -> u32 {
        if self.network.is_ipv4() { 32 } else { 128 }
    }

    fn base(&self) -> u128 {
        let raw = match self.network {
            IpAddr::V4(ip) => u128::from(u32::from(ip)),
            IpAddr::V6(ip) => u128::from(ip),
        };
        let host_bits = self.bits() - u32::from(self.prefix);
        raw.checked_shr(host_bits)
            .and_then(|n| n.checked_shl(host_bits))
            .unwrap_or(0)
    }

    /// The range's first address (the network address, host bits cleared).
    pub fn first(&self) -> IpAddr {
        self.at(0)
    }

    /// The address `offset` past the first; wraps within the address family.
    pub(crate) fn at(&self, offset: u128) -> IpAddr {
        let n = self.base().wrapping_add(offset);
        match self.network {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(n as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(n)),
        }
    }

    /// The offsets of the addresses a host may hold, first and last: all but the network
    /// address, and for IPv4 the broadcast address, when the range has room for them.
    pub(crate) fn usable_offsets(&self) -> (u128, u128) {
        let host_bits = self.bits() - u32::from(self.prefix);
        let last = 1u128
            .checked_shl(host_bits)
            .map_or(u128::MAX, |size| size - 1);
        match (self.network, last) {
            (_, 0) | (IpAddr::V4(_), 1) => (0, last),
            (IpAddr::V4(_), _) => (1, last - 1),
            (IpAddr::V6(_), _) => (1, last),
        }
    }

    /// How many addresses a host may hold.
    pub fn usable_count(&self) -> u128 {
        let (first, last) = self.usable_offsets();
        (last - first).saturating_add(1)
    }

    /// `ip`'s offset from the first address, when in the range.
    pub(crate) fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        let n = match (self.network, ip.to_canonical()) {
            (IpAddr::V4(_), IpAddr::V4(ip)) => u128::from(u32::from(ip)),
            (IpAddr::V6(_), IpAddr::V6(ip)) => u128::from(ip),
            _ => return None,
        };
        self.contains(ip).then(|| n - self.base())
    }

    /// Whether `ip` is in the range and a host may hold it.
    pub fn usable(&self, ip: IpAddr) -> bool {
        let (first, last) = self.usable_offsets();
        self.offset_of(ip)
            .is_some_and(|o| (first..=last).contains(&o))
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or range (e.g. 10.0.0.0/8)"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_their_addresses() {
        let v4: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(v4.contains("10.1.200.3".parse().unwrap()));
        assert!(v4.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!v4.contains("10.2.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.2".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.2/32");
        assert!(one.contains("127.0.0.2".parse().unwrap()));
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>().unwrap_err(),
            "\"10.0.0.0/33\": the prefix length must be 0 to 32"
        );
        assert!("example.com/8".parse::<Cidr>().is_err());
    }
}
