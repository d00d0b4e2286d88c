//! The flags of `sidecar redirect` and the values they take: ports and port ranges, CIDRs.
//!
//! Each value is checked as clap parses it, so a bad one is reported with the flag that
//! carried it (`invalid value '70000' for '--exclude-outbound-ports <PORTS>'`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// `sidecar redirect`: what to redirect, what to leave alone, and what to do with the ruleset.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// UID the sidecar runs as. Its own connections are never redirected, which is what keeps
    /// them from looping back into it. Required except with --remove.
    #[arg(long, value_name = "UID", required_unless_present = "remove")]
    pub proxy_uid: Option<u32>,
    /// The sidecar's outbound listener port: the app's TCP connections are redirected there.
    #[arg(long, value_name = "PORT", default_value_t = 15001,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub outbound_port: u16,
    /// The sidecar's inbound listener port: TCP arriving for the app's ports is redirected
    /// there. The listener must be bound where that traffic arrives (e.g. 0.0.0.0:15006).
    #[arg(long, value_name = "PORT", default_value_t = 15006,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub inbound_port: u16,
    /// The sidecar's admin port: reached directly both ways, never redirected.
    #[arg(long, value_name = "PORT", default_value_t = 15000,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub admin_port: u16,
    /// The control plane's ports (API, admin): the app's connections to them are not
    /// redirected.
    #[arg(
        long,
        value_name = "PORTS",
        value_delimiter = ',',
        default_value = "15010,15014"
    )]
    pub control_plane_ports: Vec<PortRange>,
    /// Ports of the app whose incoming TCP is redirected to the inbound listener (comma
    /// separated, ranges as 8000-8099). Default: every port not excluded.
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    pub inbound_ports: Vec<PortRange>,
    /// Destination ports the app reaches directly, not through the sidecar.
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<PortRange>,
    /// Ports of this instance reached directly from outside, not through the sidecar.
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<PortRange>,
    /// Destination networks the app reaches directly (e.g. 10.0.0.0/8,fd00::/8).
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Source networks whose connections reach this instance directly.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub exclude_inbound_cidrs: Vec<Cidr>,
    /// UIDs besides the sidecar's whose connections are not redirected.
    #[arg(long, value_name = "UIDS", value_delimiter = ',')]
    pub exclude_uids: Vec<u32>,
    /// Redirect IPv6 too (outbound to [::1]:PORT): only when the sidecar's listeners accept
    /// IPv6, or the app's IPv6 connections are refused.
    #[arg(long)]
    pub ipv6: bool,
    /// Print the ruleset instead of applying it.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete the ruleset (the whole `inet mesh_redirect` table) instead of installing it.
    #[arg(long)]
    pub remove: bool,
}

/// A flag's value that clap could not check alone.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// A required flag is missing.
    #[error("--{flag} is required")]
    Missing {
        /// The flag, without its dashes.
        flag: &'static str,
    },
    /// Both listeners on one port: nothing could tell inbound from outbound.
    #[error("--outbound-port and --inbound-port are both {port}: give them different ports")]
    SamePort {
        /// The port both name.
        port: u16,
    },
}

/// One port or an inclusive range of ports, as nft writes them (`8080`, `8000-8099`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for one port).
    pub last: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let port = |part: &str| match part.trim().parse::<u16>() {
            Ok(0) => Err("port 0 is not a port".to_owned()),
            Ok(port) => Ok(port),
            Err(_) => Err(format!(
                "{part:?} is not a port (1-65535) or a range (8000-8099)"
            )),
        };
        match text.split_once('-') {
            None => port(text).map(Self::single),
            Some((first, last)) => {
                let (first, last) = (port(first)?, port(last)?);
                if first > last {
                    return Err(format!("range {text} ends before it starts"));
                }
                Ok(Self { first, last })
            }
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A network, `ADDRESS/PREFIX` or one address; host bits are cleared (10.1.2.3/8 is
/// 10.0.0.0/8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    /// The network's address, host bits zero.
    pub network: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address (write e.g. 10.0.0.0/8)"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => match prefix.trim().parse::<u8>() {
                Ok(prefix) if prefix <= max => prefix,
                _ => return Err(format!("prefix /{prefix} is not between /0 and /{max}")),
            },
        };
        let network = match address {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges_parse_and_bad_ones_say_why() {
        assert_eq!("8080".parse(), Ok(PortRange::single(8080)));
        assert_eq!(
            "8000-8099".parse(),
            Ok(PortRange {
                first: 8000,
                last: 8099
            })
        );
        assert!("0".parse::<PortRange>().unwrap_err().contains("port 0"));
        assert!("70000".parse::<PortRange>().unwrap_err().contains("70000"));
        assert!(
            "9-8"
                .parse::<PortRange>()
                .unwrap_err()
                .contains("ends before")
        );
        assert!("http".parse::<PortRange>().is_err());
    }

    #[test]
    fn cidrs_clear_host_bits_and_reject_bad_prefixes() {
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "10.1.2.3".parse::<Cidr>().unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!("fd00::1/8".parse::<Cidr>().unwrap().to_string(), "fd00::/8");
        assert!("10.0.0.0/33".parse::<Cidr>().unwrap_err().contains("/32"));
        assert!("fd00::/129".parse::<Cidr>().unwrap_err().contains("/128"));
        assert!("example.com/8".parse::<Cidr>().is_err());
    }
}
