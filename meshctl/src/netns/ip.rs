//! Running iproute2's `ip`, and reading the host's routes from `ip -j route`.

use std::process::Command;

use serde::Deserialize;

use crate::netns::cidr::Ipv4Net;

/// Why an `ip` command failed.
#[derive(Debug, thiserror::Error)]
pub enum IpError {
    /// `ip` could not be started.
    #[error("cannot run `ip` (Debian and Ubuntu: apt-get install iproute2): {0}")]
    Spawn(std::io::Error),
    /// It ran and failed.
    #[error("`ip {command}` failed: {stderr}")]
    Failed {
        /// Its arguments.
        command: String,
        /// What it said.
        stderr: String,
    },
    /// `ip -j route` printed something that is not its JSON.
    #[error("cannot read `ip -j route`: {0}")]
    Json(serde_json::Error),
}

/// Runs `ip ARGS`, returning its standard output.
pub fn ip(args: &[&str]) -> Result<String, IpError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(IpError::Spawn)?;
    if !out.status.success() {
        return Err(IpError::Failed {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the link `name` exists in this network namespace.
pub fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).is_ok()
}

/// One IPv4 route of the host's main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Its destination.
    pub dst: Ipv4Net,
    /// Its device, if it names one.
    pub dev: Option<String>,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.dev {
            Some(dev) => write!(f, "{} dev {dev}", self.dst),
            None => write!(f, "{}", self.dst),
        }
    }
}

#[derive(Deserialize)]
struct RouteJson {
    dst: String,
    #[serde(default)]
    dev: Option<String>,
}

/// The IPv4 routes of the main table but the default route (which covers every network and
/// so says nothing about which are in use).
pub fn routes() -> Result<Vec<Route>, IpError> {
    parse_routes(&ip(&["-j", "-4", "route", "show"])?)
}

/// [`routes`] from the JSON `ip -j -4 route show` prints.
pub fn parse_routes(json: &str) -> Result<Vec<Route>, IpError> {
    let list: Vec<RouteJson> = serde_json::from_str(json).map_err(IpError::Json)?;
    Ok(list
        .into_iter()
        .filter_map(|r| {
            let dst = r.dst.parse().ok()?;
            Some(Route { dst, dev: r.dev })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_skip_the_default_route() {
        let json = r#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]},
            {"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel","scope":"link","flags":[]},
            {"dst":"10.1.2.3","dev":"tun0","flags":[]}]"#;
        let routes = parse_routes(json).unwrap();
        let shown: Vec<String> = routes.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["192.0.2.0/24 dev eth0", "10.1.2.3/32 dev tun0"]);
    }
}
