//! A network namespace per instance, on a bridge the host shares with every other instance.
//!
//! [`Instance::create`] takes an address on the bridge (making the bridge if this is the first
//! instance), makes the namespace, joins it to the bridge with a veth pair, gives it its
//! address and a default route through the bridge's, and writes its hosts file. Everything it
//! made is in its [`Teardown`], which undoes it in reverse order however the run ends.
//!
//! - [`cidr`]: IPv4 networks.
//! - [`ip`]: running `ip`, reading routes.
//! - [`bridge`]: the shared bridge, its lock and address records.
//! - [`hosts`]: the namespace's hosts file.
//! - [`dial`]: a connection from inside a namespace, past its redirect.
//! - [`teardown`]: the undo list.

pub mod bridge;
pub mod cidr;
pub mod dial;
pub mod hosts;
pub mod ip;
pub mod teardown;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use self::bridge::{Bridge, BridgeError, Member};
use self::ip::IpError;
use self::teardown::{Teardown, Undo};

/// Why an instance's namespace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The bridge or its records.
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    /// An `ip` command.
    #[error(transparent)]
    Ip(#[from] IpError),
    /// A file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// One instance's namespace on the bridge.
#[derive(Debug)]
pub struct Instance {
    /// The namespace's name.
    pub namespace: String,
    /// Its address on the bridge.
    pub address: Ipv4Addr,
    /// The bridge's address, where it reaches the host.
    pub gateway: Ipv4Addr,
    /// Its working directory, `/run/mesh/<bridge>/<namespace>`.
    pub dir: PathBuf,
    /// Its hosts file.
    pub hosts_file: PathBuf,
}

impl Instance {
    /// The name of the namespace of `meshctl` process `pid` running `service`, and of its
    /// veth's host end (at most 15 bytes: `mr` and the pid).
    pub fn names(service: &str, pid: u32) -> (String, String) {
        (format!("meshctl-{service}-{pid}"), format!("mr{pid}"))
    }

    /// Makes the namespace `namespace` on `bridge`, joined by the veth whose host end is
    /// `veth`, pushing each undo step onto `teardown` as it goes; `services` are the hosts
    /// file's first entries.
    pub fn create(
        bridge: &Bridge,
        (namespace, veth): (String, String),
        services: &BTreeMap<String, String>,
        teardown: &mut Teardown,
    ) -> Result<Self, NetnsError> {
        let pid = std::process::id();
        let address = bridge.join(&Member {
            pid,
            namespace: namespace.clone(),
            veth: veth.clone(),
        })?;
        teardown.push(Undo::Address(bridge.clone(), address));

        let dir = bridge.dir().join(&namespace);
        std::fs::create_dir_all(&dir).map_err(|source| NetnsError::Io {
            path: dir.clone(),
            source,
        })?;
        teardown.push(Undo::Dir(dir.clone()));

        ip::ip(&["netns", "add", &namespace])?;
        teardown.push(Undo::Namespace(namespace.clone()));
        ip::ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
        ])?;
        teardown.push(Undo::Link(veth.clone()));
        ip::ip(&["link", "set", &veth, "master", &bridge.name, "up"])?;
        let cidr = format!("{address}/{}", bridge.range.prefix());
        let gateway = bridge.gateway();
        for args in [
            vec!["addr", "add", cidr.as_str(), "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["-n", namespace.as_str()];
            all.extend(args);
            ip::ip(&all)?;
        }
        let via = gateway.to_string();
        ip::ip(&["-n", &namespace, "route", "add", "default", "via", &via])?;

        let hosts_dir = hosts::dir(&namespace);
        std::fs::create_dir_all(&hosts_dir).map_err(|source| NetnsError::Io {
            path: hosts_dir.clone(),
            source,
        })?;
        teardown.push(Undo::Dir(hosts_dir.clone()));
        let hosts_file = hosts_dir.join("hosts");
        hosts::write_in_place(&hosts_file, &hosts::render(&namespace, services)).map_err(
            |source| NetnsError::Io {
                path: hosts_file.clone(),
                source,
            },
        )?;
        Ok(Self {
            namespace,
            address,
            gateway,
            dir,
            hosts_file,
        })
    }
}
