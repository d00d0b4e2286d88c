//! IPv4 networks as `--network` takes them and `ip -j route` prints them.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: its network address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a network could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    /// Not `a.b.c.d/n`.
    #[error("{0:?} is not an IPv4 network (write e.g. 198.19.0.0/24)")]
    Syntax(String),
    /// Host bits set.
    #[error("{text} is not a network address: did you mean {network}?")]
    HostBits {
        /// As written.
        text: String,
        /// The network it lies in.
        network: Ipv4Net,
    },
}

impl Ipv4Net {
    /// The network of `addr` with `prefix` bits (at most 32).
    pub fn containing(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let prefix = self.prefix.min(other.prefix);
        Self::containing(self.network, prefix) == Self::containing(other.network, prefix)
    }

    /// The `n`th address after the network address, if it is a host address (not the
    /// network or broadcast address).
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        if n == 0 || u64::from(n) >= size.saturating_sub(1) {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network) + n))
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl FromStr for Ipv4Net {
    type Err = CidrError;

    /// `a.b.c.d/n`, or `a.b.c.d` alone for a /32.
    fn from_str(text: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, prefix.parse::<u8>().map_err(|_| syntax())?),
            None => (text, 32),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        let network = Self::containing(addr, prefix);
        if network.network != addr {
            return Err(CidrError::HostBits {
                text: text.to_owned(),
                network,
            });
        }
        Ok(network)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn parses_contains_and_overlaps() {
        let range = net("198.19.0.0/24");
        assert!(range.contains(Ipv4Addr::new(198, 19, 0, 200)));
        assert!(!range.contains(Ipv4Addr::new(198, 19, 1, 1)));
        assert!(range.overlaps(&net("198.19.0.128/25")));
        assert!(range.overlaps(&net("198.18.0.0/15")));
        assert!(!range.overlaps(&net("198.19.1.0/24")));
        assert_eq!(net("10.0.0.1").prefix(), 32);
        assert_eq!(range.host(1), Some(Ipv4Addr::new(198, 19, 0, 1)));
        assert_eq!(range.host(254), Some(Ipv4Addr::new(198, 19, 0, 254)));
        assert_eq!(range.host(255), None);
        assert_eq!(range.host(0), None);
    }

    #[test]
    fn bad_networks_are_named() {
        assert_eq!(
            "198.19.0.5/24".parse::<Ipv4Net>().unwrap_err().to_string(),
            "198.19.0.5/24 is not a network address: did you mean 198.19.0.0/24?"
        );
        assert!(matches!(
            "198.19.0.0/33".parse::<Ipv4Net>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "mesh".parse::<Ipv4Net>(),
            Err(CidrError::Syntax(_))
        ));
    }
}
