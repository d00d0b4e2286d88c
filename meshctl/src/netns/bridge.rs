//! The host bridge every instance's namespace joins, shared by concurrent `meshctl run`s.
//!
//! The bridge has the first address of the range; each instance takes the lowest free one after
//! it. Who holds which address is recorded under the state directory
//! (`/run/mesh/<bridge>/members/<address>`: the holder's pid, namespace and veth), and every
//! change of the records or of the bridge itself happens under an exclusive lock on
//! `/run/mesh/<bridge>/lock`, so two instances starting at once never take one address, and the
//! last to leave removes the bridge while no newcomer is attaching to it. A record whose pid is
//! gone (a `meshctl run` killed with SIGKILL) is swept, with its namespace, at the next join.

use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::netns::cidr::Ipv4Net;
use crate::netns::ip::{self, IpError, Route};

/// Where the bridges' records live by default.
pub const STATE_ROOT: &str = "/run/mesh";
/// The range instances' addresses come from by default: part of 198.18.0.0/15, which RFC 2544
/// sets aside for benchmarking networks, so no real network, VPN or container runtime uses it.
pub const DEFAULT_RANGE: &str = "198.19.0.0/24";
/// The bridge's default name.
pub const DEFAULT_BRIDGE: &str = "mesh0";

/// A bridge, its range, and where its records are kept.
#[derive(Clone, Debug)]
pub struct Bridge {
    /// The bridge interface's name.
    pub name: String,
    /// Where instances' addresses come from; the bridge has the first.
    pub range: Ipv4Net,
    /// The directory holding `<name>/`.
    pub state_root: PathBuf,
}

/// Why the bridge could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The name is not a valid interface name.
    #[error("--bridge {0:?}: an interface name is 1 to 15 letters, digits, '-', '_' or '.'")]
    Name(String),
    /// The range holds too few addresses.
    #[error("--network {0}: too small; use a /29 or larger (a /24 holds 253 instances)")]
    TooSmall(Ipv4Net),
    /// A route of the host is inside or around the range.
    #[error(
        "--network {range} overlaps the host's route {route}: choose a range no route of \
         `ip route` touches (e.g. --network 198.19.1.0/24)"
    )]
    Overlap {
        /// `--network`.
        range: Ipv4Net,
        /// The route.
        route: Route,
    },
    /// The bridge exists with another address.
    #[error(
        "the bridge {name} exists with {found}, not {wanted}: every instance on one bridge \
         must use the same --network (or pass another --bridge)"
    )]
    Mismatch {
        /// The bridge.
        name: String,
        /// Its addresses.
        found: String,
        /// The address this range gives it.
        wanted: String,
    },
    /// Every address is taken.
    #[error("--network {0} has no free address left: use a larger range")]
    Full(Ipv4Net),
    /// A file of the state directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// An `ip` command.
    #[error(transparent)]
    Ip(#[from] IpError),
}

/// The record of one instance on the bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The `meshctl` process that holds the address.
    pub pid: u32,
    /// The instance's network namespace.
    pub namespace: String,
    /// The host end of its veth pair.
    pub veth: String,
}

impl Bridge {
    /// Checks the name and the range.
    pub fn new(name: &str, range: Ipv4Net, state_root: PathBuf) -> Result<Self, BridgeError> {
        let valid = !name.is_empty()
            && name.len() <= 15
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(BridgeError::Name(name.to_owned()));
        }
        if range.prefix() > 29 {
            return Err(BridgeError::TooSmall(range));
        }
        Ok(Self {
            name: name.to_owned(),
            range,
            state_root,
        })
    }

    /// The bridge's own address, where namespaces reach the host.
    pub fn gateway(&self) -> Ipv4Addr {
        // A /29 or larger has a first host address.
        self.range.host(1).unwrap_or(self.range.network())
    }

    /// `/run/mesh/<bridge>`.
    pub fn dir(&self) -> PathBuf {
        self.state_root.join(&self.name)
    }

    fn members_dir(&self) -> PathBuf {
        self.dir().join("members")
    }

    /// Fails naming the first route of the host that overlaps the range, other than the
    /// bridge's own.
    pub fn check_routes(&self) -> Result<(), BridgeError> {
        check_overlap(self.range, &self.name, &ip::routes()?)
    }

    /// Takes an address for `member`: sweeps records of processes that are gone, makes the
    /// bridge if it is missing, and records the lowest free address.
    pub fn join(&self, member: &Member) -> Result<Ipv4Addr, BridgeError> {
        let _lock = self.lock()?;
        self.sweep();
        self.ensure_up()?;
        let taken = self.members();
        let free = (2..)
            .map_while(|n| self.range.host(n))
            .find(|addr| !taken.iter().any(|(a, _)| a == addr))
            .ok_or(BridgeError::Full(self.range))?;
        let path = self.members_dir().join(free.to_string());
        let text = serde_json::to_string(member).map_err(|e| BridgeError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&path, text).map_err(|source| BridgeError::Io { path, source })?;
        Ok(free)
    }

    /// Gives `address` back; the last to leave deletes the bridge and its state directory.
    pub fn leave(&self, address: Ipv4Addr) -> Result<(), BridgeError> {
        let _lock = self.lock()?;
        let path = self.members_dir().join(address.to_string());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(BridgeError::Io { path, source }),
        }
        self.remove_if_unused()
    }

    /// Deletes the bridge and its records when no instance holds an address.
    fn remove_if_unused(&self) -> Result<(), BridgeError> {
        if !self.members().is_empty() {
            return Ok(());
        }
        if ip::link_exists(&self.name) {
            ip::ip(&["link", "delete", &self.name, "type", "bridge"])?;
        }
        let _ = std::fs::remove_dir(self.members_dir());
        let _ = std::fs::remove_file(self.dir().join("lock"));
        let _ = std::fs::remove_dir(self.dir());
        Ok(())
    }

    fn lock(&self) -> Result<File, BridgeError> {
        let dir = self.members_dir();
        std::fs::create_dir_all(&dir).map_err(|source| BridgeError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = self.dir().join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| BridgeError::Io {
                path: path.clone(),
                source,
            })?;
        file.lock()
            .map_err(|source| BridgeError::Io { path, source })?;
        Ok(file)
    }

    /// Every record: address and member.
    fn members(&self) -> Vec<(Ipv4Addr, Member)> {
        let Ok(entries) = std::fs::read_dir(self.members_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let addr: Ipv4Addr = entry.file_name().to_str()?.parse().ok()?;
                let text = std::fs::read(entry.path()).ok()?;
                Some((addr, serde_json::from_slice(&text).ok()?))
            })
            .collect()
    }

    /// Removes what members whose process is gone left behind.
    fn sweep(&self) {
        for (addr, member) in self.members() {
            if Path::new(&format!("/proc/{}", member.pid)).exists() {
                continue;
            }
            let _ = ip::ip(&["netns", "delete", &member.namespace]);
            if ip::link_exists(&member.veth) {
                let _ = ip::ip(&["link", "delete", &member.veth]);
            }
            let _ = std::fs::remove_dir_all(crate::netns::hosts::dir(&member.namespace));
            let _ = std::fs::remove_dir_all(self.dir().join(&member.namespace));
            let _ = std::fs::remove_file(self.members_dir().join(addr.to_string()));
        }
    }

    /// Makes the bridge with its address if it is missing; checks the address if not.
    fn ensure_up(&self) -> Result<(), BridgeError> {
        let wanted = format!("{}/{}", self.gateway(), self.range.prefix());
        if ip::link_exists(&self.name) {
            let shown = ip::ip(&["-4", "-o", "addr", "show", "dev", &self.name])?;
            let found: Vec<&str> = shown
                .lines()
                .filter_map(|l| {
                    let mut words = l.split_whitespace();
                    words.find(|w| *w == "inet")?;
                    words.next()
                })
                .collect();
            if !found.contains(&wanted.as_str()) {
                return Err(BridgeError::Mismatch {
                    name: self.name.clone(),
                    found: if found.is_empty() {
                        "no address".to_owned()
                    } else {
                        found.join(", ")
                    },
                    wanted,
                });
            }
        } else {
            self.check_routes()?;
            ip::ip(&["link", "add", &self.name, "type", "bridge"])?;
            let made = ip::ip(&["addr", "add", &wanted, "dev", &self.name])
                .and_then(|_| ip::ip(&["link", "set", &self.name, "up"]));
            if let Err(e) = made {
                let _ = ip::ip(&["link", "delete", &self.name]);
                return Err(e.into());
            }
        }
        Ok(())
    }
}

/// The first of `routes` that overlaps `range`, other than those through `bridge`.
pub fn check_overlap(range: Ipv4Net, bridge: &str, routes: &[Route]) -> Result<(), BridgeError> {
    match routes
        .iter()
        .find(|r| r.dev.as_deref() != Some(bridge) && r.dst.overlaps(&range))
    {
        Some(route) => Err(BridgeError::Overlap {
            range,
            route: route.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_names_the_route_and_skips_the_bridges_own() {
        let range: Ipv4Net = "198.19.0.0/24".parse().unwrap();
        let routes = vec![
            Route {
                dst: "198.19.0.0/24".parse().unwrap(),
                dev: Some("mesh0".into()),
            },
            Route {
                dst: "192.0.2.0/24".parse().unwrap(),
                dev: Some("eth0".into()),
            },
        ];
        assert!(check_overlap(range, "mesh0", &routes).is_ok());
        let err = check_overlap(range, "other0", &routes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--network 198.19.0.0/24 overlaps the host's route 198.19.0.0/24 dev mesh0: choose \
             a range no route of `ip route` touches (e.g. --network 198.19.1.0/24)"
        );
    }

    #[test]
    fn names_and_sizes_are_checked() {
        let range: Ipv4Net = "198.19.0.0/24".parse().unwrap();
        assert!(Bridge::new("mesh0", range, STATE_ROOT.into()).is_ok());
        assert!(matches!(
            Bridge::new("a-name-far-too-long", range, STATE_ROOT.into()),
            Err(BridgeError::Name(_))
        ));
        assert!(matches!(
            Bridge::new("mesh0", "198.19.0.0/30".parse().unwrap(), STATE_ROOT.into()),
            Err(BridgeError::TooSmall(_))
        ));
    }
}
