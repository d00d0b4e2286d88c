//! `virtual_addresses` in `mesh.yaml` and each service's pinned `virtual_address`.
//!
//! A service's virtual address is the IP its callers' apps reach it at (a hosts file maps its
//! name there); netfilter sends those connections to the caller's sidecar, which maps the
//! original destination back to the service. The range defaults to `127.240.0.0/12`: inside
//! 127.0.0.0/8, so a connection to it never leaves the instance's network namespace even
//! when nothing redirects it, and clear of 127.0.0.1, where apps and sidecars listen.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use mesh_api::validate::Errors;
use serde::{Deserialize, Serialize};

use super::limits::Cidr;

/// The range virtual addresses come from when `mesh.yaml` does not say: 127.240.0.0/12.
pub const DEFAULT_RANGE: Cidr = Cidr::v4([127, 240, 0, 0], 12);

/// Where services' virtual addresses come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VirtualAddressSettings {
    /// The range; every service's address is one of its usable addresses.
    pub range: Cidr,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VirtualAddressesFile {
    range: Option<String>,
}

/// Checks the range: a network address with no host bits set, clear of 127.0.0.1 and of the
/// unspecified address.
pub(super) fn settings(file: VirtualAddressesFile, errors: &mut Errors) -> VirtualAddressSettings {
    const FIELD: &str = "virtual_addresses.range";
    let Some(text) = file.range else {
        return VirtualAddressSettings {
            range: DEFAULT_RANGE,
        };
    };
    let range = match text.parse::<Cidr>() {
        Ok(range) => range,
        Err(e) => {
            errors.push(FIELD, e);
            return VirtualAddressSettings {
                range: DEFAULT_RANGE,
            };
        }
    };
    let network = range.first();
    if network != range.network() {
        errors.push(
            FIELD,
            format!(
                "{text} has bits set past its prefix: the range is {network}/{}",
                range.prefix()
            ),
        );
    } else if range.contains(IpAddr::from([127, 0, 0, 1])) {
        errors.push(
            FIELD,
            format!("{text} contains 127.0.0.1, where apps and sidecars listen"),
        );
    } else if range.contains(IpAddr::from([0, 0, 0, 0])) || range.contains(IpAddr::from([0u16; 8]))
    {
        errors.push(FIELD, format!("{text} contains the unspecified address"));
    }
    VirtualAddressSettings { range }
}

/// What the checks read of one declared service.
pub(super) struct ServiceAddresses<'a> {
    /// Its file, which its errors name.
    pub(super) file: &'a str,
    pub(super) name: &'a str,
    /// Its own listener, if it has one.
    pub(super) listen: Option<SocketAddr>,
    /// Its pinned virtual address.
    pub(super) pinned: Option<IpAddr>,
}

/// A problem found: the service's file (`None`: `mesh.yaml`), the field, what is wrong.
pub(super) type Problem<'a> = (Option<&'a str>, &'static str, String);

/// Checks every service's pinned address (usable in the range, held by no other service), that
/// no listener sits in the range, and that the range has an address for every service.
pub(super) fn check_services<'a>(
    settings: &VirtualAddressSettings,
    services: &[ServiceAddresses<'a>],
) -> Vec<Problem<'a>> {
    let range = settings.range;
    let mut out = Vec::new();
    let mut pinned: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for service in services {
        if let Some(listen) = service.listen
            && range.contains(listen.ip())
        {
            out.push((
                Some(service.file),
                "listen",
                format!(
                    "{listen} is inside virtual_addresses.range {range}: a listener there would \
                     take connections meant for a service's virtual address",
                ),
            ));
        }
        let Some(ip) = service.pinned else {
            continue;
        };
        if !range.usable(ip) {
            let why = if range.contains(ip) {
                "is the network or broadcast address of"
            } else {
                "is outside"
            };
            out.push((
                Some(service.file),
                "virtual_address",
                format!("{ip} {why} virtual_addresses.range {range}"),
            ));
        } else if let Some(first) = pinned.insert(ip, service.name) {
            out.push((
                Some(service.file),
                "virtual_address",
                format!("{ip} is already the virtual address of {first}"),
            ));
        }
    }
    let capacity = range.usable_count();
    if u128::try_from(services.len()).unwrap_or(u128::MAX) > capacity {
        out.push((
            None,
            "virtual_addresses.range",
            format!(
                "{range} holds {capacity} usable addresses, fewer than the {} declared \
                 services: use a larger range",
                services.len()
            ),
        ));
    }
    out
}

/// Reads a service file's `virtual_address`.
pub(super) fn pinned(text: Option<&str>, errors: &mut Errors) -> Option<IpAddr> {
    let text = text?;
    match text.parse::<IpAddr>() {
        Ok(ip) => Some(ip.to_canonical()),
        Err(_) => {
            errors.push(
                "virtual_address",
                format!("{text:?} is not an IP address (e.g. 127.240.0.10)"),
            );
            None
        }
    }
}
