//! What the gateway checks and rewrites on every outside request before routing it: who the
//! client is (its own address, or with `trusted_hops: N` the Nth `x-forwarded-for` entry from
//! the right, as Envoy's `xff_num_trusted_hops`), the forwarding headers the services behind
//! see, and the client's size and rate limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_api::rate_limit::Rate;
use tokio::sync::Mutex;
use tokio::time::Instant;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Client addresses remembered by the rate limiter at most; past that, those idle long enough
/// to be back at a full burst are forgotten, and if none are, the newest client is refused.
const MAX_CLIENTS: usize = 100_000;

/// Replaces the forwarding headers of a request from `peer` over `proto` (`http`/`https`),
/// believing `trusted_hops` entries of its `x-forwarded-for`; returns the client's address.
pub(crate) fn forwarding(
    headers: &mut HeaderMap,
    peer: IpAddr,
    proto: &'static str,
    trusted_hops: u32,
) -> IpAddr {
    let hops = usize::try_from(trusted_hops).unwrap_or(usize::MAX);
    let mut chain: Vec<String> = Vec::new();
    if hops > 0 {
        let entries: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        // The client and the proxies after it; an entry that is no address ends the trust.
        let start = entries.len().saturating_sub(hops);
        chain = entries[start..]
            .iter()
            .rev()
            .take_while(|e| e.parse::<IpAddr>().is_ok())
            .map(|e| (*e).to_owned())
            .collect();
        chain.reverse();
    }
    let client = chain.first().and_then(|e| e.parse().ok()).unwrap_or(peer);
    chain.push(peer.to_string());
    headers.remove(&X_FORWARDED_FOR);
    headers.remove(&X_REAL_IP);
    headers.remove(&FORWARDED);
    headers.remove(&X_FORWARDED_PROTO);
    if let Ok(value) = HeaderValue::from_str(&chain.join(", ")) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    let node = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    if let Ok(value) = HeaderValue::from_str(&format!("for={node};proto={proto}")) {
        headers.insert(FORWARDED, value);
    }
    client
}

/// Why a request is refused before it is routed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 413: its `content-length` is over `max_request_bytes`.
    BodyTooLarge { length: u64, max: u64 },
    /// 413: its body, of undeclared length, went over `max_request_bytes` as it streamed.
    BodyOverLimit { max: u64 },
    /// 431: its headers are over `max_header_bytes`.
    HeadersTooLarge { bytes: usize, max: u32 },
}

/// Checks a request's declared body length and its header bytes; `Ok(true)` when the body's
/// length is not declared, so it must be counted as it streams.
pub(crate) fn check_sizes(
    headers: &HeaderMap,
    max_request_bytes: u64,
    max_header_bytes: u32,
) -> Result<bool, Refusal> {
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > max_header_bytes as usize {
        return Err(Refusal::HeadersTooLarge {
            bytes,
            max: max_header_bytes,
        });
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(length) if length > max_request_bytes => Err(Refusal::BodyTooLarge {
            length,
            max: max_request_bytes,
        }),
        Some(_) => Ok(false),
        None => Ok(true),
    }
}

/// A rate per client address (GCRA: each address's theoretical arrival time).
#[derive(Debug)]
pub(crate) struct ClientRates {
    rate: Rate,
    interval: Duration,
    /// How far ahead of now an address's arrival time may run: the burst.
    tolerance: Duration,
    epoch: Instant,
    clients: Mutex<HashMap<IpAddr, Duration>>,
}

// === impl ClientRates ===

impl ClientRates {
    pub(crate) fn new(rate: Rate) -> Self {
        let interval = rate.interval();
        Self {
            rate,
            interval,
            tolerance: interval.saturating_mul(rate.burst.saturating_sub(1)),
            epoch: Instant::now(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The limit, for messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} requests per second, burst {}",
            self.rate.requests_per_second, self.rate.burst
        )
    }

    /// Takes one request of `client`, or returns how long until one would fit.
    pub(crate) async fn acquire(&self, client: IpAddr) -> Result<(), Duration> {
        let mut clients = self.clients.lock().await;
        let now = self.epoch.elapsed();
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, tat| *tat > now);
            if clients.len() >= MAX_CLIENTS {
                return Err(self.interval);
            }
        }
        let tat = clients.entry(client).or_insert(Duration::ZERO);
        let start = (*tat).max(now);
        let ahead = start - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        *tat = start + self.interval;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(xff: &[&str], hops: u32) -> (IpAddr, HeaderMap) {
        let mut headers = HeaderMap::new();
        for v in xff {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        headers.insert(X_REAL_IP, HeaderValue::from_static("1.1.1.1"));
        headers.insert(FORWARDED, HeaderValue::from_static("for=1.1.1.1"));
        let client = forwarding(&mut headers, "10.0.0.9".parse().unwrap(), "https", hops);
        (client, headers)
    }

    #[test]
    fn without_trusted_hops_only_the_peer_is_believed() {
        let (client, headers) = forwarded(&["6.6.6.6, 7.7.7.7"], 0);
        assert_eq!(client.to_string(), "10.0.0.9");
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(headers[FORWARDED], "for=10.0.0.9;proto=https");
        assert_eq!(headers[X_FORWARDED_PROTO], "https");
        assert!(headers.get(X_REAL_IP).is_none());
    }

    #[test]
    fn trusted_hops_keep_the_last_entries_and_the_client_is_the_first_kept() {
        let (client, headers) = forwarded(&["6.6.6.6, 5.5.5.5", "4.4.4.4"], 2);
        assert_eq!(client.to_string(), "5.5.5.5");
        assert_eq!(headers[X_FORWARDED_FOR], "5.5.5.5, 4.4.4.4, 10.0.0.9");
        // Fewer entries than hops: the first one.
        let (client, _) = forwarded(&["4.4.4.4"], 2);
        assert_eq!(client.to_string(), "4.4.4.4");
        // Not an address: trust ends there.
        let (client, _) = forwarded(&["junk, 4.4.4.4"], 2);
        assert_eq!(client.to_string(), "4.4.4.4");
    }

    #[test]
    fn sizes_over_the_limits_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("2000"));
        assert_eq!(
            check_sizes(&headers, 1000, 8192),
            Err(Refusal::BodyTooLarge {
                length: 2000,
                max: 1000
            })
        );
        assert_eq!(check_sizes(&headers, 2000, 8192), Ok(false));
        assert_eq!(check_sizes(&HeaderMap::new(), 2000, 8192), Ok(true));
        headers.insert("x-big", HeaderValue::from_str(&"a".repeat(9000)).unwrap());
        assert!(matches!(
            check_sizes(&headers, 2000, 8192),
            Err(Refusal::HeadersTooLarge { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_gets_its_burst_then_waits_and_others_are_not_affected() {
        let rates = ClientRates::new(Rate {
            requests_per_second: 1.0,
            burst: 2,
        });
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(rates.acquire(a).await.is_ok());
        assert!(rates.acquire(a).await.is_ok());
        assert!(rates.acquire(a).await.is_err());
        assert!(rates.acquire(b).await.is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(rates.acquire(a).await.is_ok());
    }
}
