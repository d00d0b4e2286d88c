//! The table of services' virtual addresses: `virtual-addresses` in the state directory.
//!
//! An address, once a service has it, is written into hosts files and cached by apps, so it
//! must not move: the table records every allocation and is rewritten atomically whenever one
//! is made, and a service keeps its address across restarts and while other services come and
//! go. A new service starts probing at a hash of its name, so even a lost table tends to give
//! back the same addresses. The address of a service no longer declared stays reserved for it
//! (a stale hosts file may still name it) until the range has no other free address.
//!
//! The file has one `name address` line per service.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::ca::{CertError, write_atomic};
use crate::config::{Cidr, MeshConfig};

/// The table's file in the state directory.
pub const TABLE_FILE: &str = "virtual-addresses";

/// The allocations of one state directory.
#[derive(Debug)]
pub(crate) struct AddressTable {
    path: PathBuf,
    assigned: BTreeMap<String, IpAddr>,
}

/// The table could not be read or written, or has no room.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A line of the file is not `name address`.
    #[error("{path}: line {line}: expected `service-name ip-address`")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
    },
    /// The file could not be written.
    #[error("{0}")]
    Write(#[from] CertError),
    /// Every usable address of the range is taken.
    #[error("virtual_addresses.range {range}: no free address left for service {service}")]
    Exhausted {
        /// The range.
        range: Cidr,
        /// The service left without one.
        service: String,
    },
}

impl AddressTable {
    /// Reads the table of `state_dir`; empty when there is none yet.
    pub(crate) fn open(state_dir: &Path) -> Result<Self, AddressError> {
        let path = state_dir.join(TABLE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(AddressError::Read { path, source }),
        };
        let mut assigned = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line
                .split_once(' ')
                .and_then(|(name, ip)| Some((name.to_owned(), ip.trim().parse::<IpAddr>().ok()?)));
            let Some((name, ip)) = parsed else {
                return Err(AddressError::Malformed { path, line: i + 1 });
            };
            assigned.insert(name, ip);
        }
        Ok(Self { path, assigned })
    }

    /// Gives every service of `config` its virtual address: its pinned one, else the one it
    /// had, else a free one; records new allocations in the file before returning.
    pub(crate) fn assign(&mut self, config: &mut MeshConfig) -> Result<(), AddressError> {
        let range = config.virtual_addresses.range;
        let mut next = self.assigned.clone();
        let mut taken: BTreeSet<IpAddr> = config
            .services
            .values()
            .filter_map(|s| s.virtual_address)
            .collect();
        // Keep what still holds: in the range, pinned by no other service.
        let mut unplaced = Vec::new();
        for service in config.services.values() {
            if let Some(pinned) = service.virtual_address {
                next.insert(service.name.clone(), pinned);
                continue;
            }
            match self.assigned.get(&service.name) {
                Some(ip) if range.usable(*ip) && taken.insert(*ip) => {}
                _ => unplaced.push(service.name.clone()),
            }
        }
        for name in unplaced {
            // Addresses held for services no longer declared are reused only as a last resort.
            let reserved: BTreeSet<IpAddr> = next
                .iter()
                .filter(|(held_by, _)| !config.services.contains_key(*held_by))
                .map(|(_, ip)| *ip)
                .collect();
            let ip = probe(range, &name, |ip| {
                !taken.contains(&ip) && !reserved.contains(&ip)
            })
            .or_else(|| probe(range, &name, |ip| !taken.contains(&ip)))
            .ok_or_else(|| AddressError::Exhausted {
                range,
                service: name.clone(),
            })?;
            next.retain(|_, held| *held != ip);
            taken.insert(ip);
            next.insert(name, ip);
        }
        if next != self.assigned {
            write_atomic(&self.path, render(&next).as_bytes(), 0o644)?;
            self.assigned = next;
        }
        for service in config.services.values_mut() {
            service.virtual_address = self.assigned.get(&service.name).copied();
        }
        Ok(())
    }
}

/// The first usable address of `range` that is `free`, starting at a hash of `name` and
/// wrapping. The walk is bounded: it ends at the first free address, and at the latest after
/// every usable address was tried once.
fn probe(range: Cidr, name: &str, free: impl Fn(IpAddr) -> bool) -> Option<IpAddr> {
    let (first, last) = range.usable_offsets();
    let count = (last - first).saturating_add(1);
    let start = u128::from(fnv1a(name)) % count;
    (0..count)
        .map(|step| range.at(first + (start + step) % count))
        .find(|ip| free(*ip))
}

/// FNV-1a: a hash whose value is fixed by its definition, so a name maps to the same starting
/// point on every build and platform (std's hashers promise neither).
fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn render(table: &BTreeMap<String, IpAddr>) -> String {
    let mut text = String::from("# service virtual-address; kept so addresses never move\n");
    for (name, ip) in table {
        text.push_str(&format!("{name} {ip}\n"));
    }
    text
}

#[cfg(test)]
mod tests;
