//! The nftables script that `sidecar redirect` hands to `nft -f -`, written from its flags.
//!
//! Everything lives in one table, `inet mesh_redirect` (both IP families, one set of chains),
//! so that removing the redirect is deleting that table and nothing else in the namespace is
//! touched. The script first declares the table, then deletes it, then writes it anew: nft
//! applies a script as one transaction, so this replaces an earlier copy whether or not one
//! exists, and a script that fails part way changes nothing.

use std::collections::BTreeSet;
use std::fmt::{Display, Write};
use std::net::IpAddr;

use super::flags::{Cidr, FlagError, Options, PortRange};

/// The table's family and name, as nft commands write them.
pub const TABLE: &str = "inet mesh_redirect";

/// Priority of the nat chains: the usual destination NAT slot, before conntrack confirms the
/// connection.
const NAT_PRIORITY: i32 = -100;

/// What the rules redirect and exempt, checked and ready to write out.
#[derive(Clone, Debug)]
pub struct Ruleset {
    proxy_uid: u32,
    outbound_port: u16,
    inbound_port: u16,
    admin_port: u16,
    control_plane_ports: BTreeSet<PortRange>,
    inbound_ports: BTreeSet<PortRange>,
    exclude_outbound_ports: BTreeSet<PortRange>,
    exclude_inbound_ports: BTreeSet<PortRange>,
    exclude_outbound_cidrs: BTreeSet<Cidr>,
    exclude_inbound_cidrs: BTreeSet<Cidr>,
    exclude_uids: BTreeSet<u32>,
    ipv6: bool,
}

impl Ruleset {
    /// Checks what clap cannot check flag by flag.
    pub fn from_options(options: &Options) -> Result<Self, FlagError> {
        let proxy_uid = options
            .proxy_uid
            .ok_or(FlagError::Missing { flag: "proxy-uid" })?;
        if options.outbound_port == options.inbound_port {
            return Err(FlagError::SamePort {
                port: options.outbound_port,
            });
        }
        Ok(Self {
            proxy_uid,
            outbound_port: options.outbound_port,
            inbound_port: options.inbound_port,
            admin_port: options.admin_port,
            control_plane_ports: options.control_plane_ports.iter().copied().collect(),
            inbound_ports: options.inbound_ports.iter().copied().collect(),
            exclude_outbound_ports: options.exclude_outbound_ports.iter().copied().collect(),
            exclude_inbound_ports: options.exclude_inbound_ports.iter().copied().collect(),
            exclude_outbound_cidrs: options.exclude_outbound_cidrs.iter().copied().collect(),
            exclude_inbound_cidrs: options.exclude_inbound_cidrs.iter().copied().collect(),
            exclude_uids: options.exclude_uids.iter().copied().collect(),
            ipv6: options.ipv6,
        })
    }

    /// The script for `nft -f -` that installs (or replaces) the table.
    pub fn script(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# sidecar redirect: this network namespace's TCP through the mesh sidecar.\n",
        );
        out.push_str(&replace_header());
        let _ = writeln!(out, "table {TABLE} {{");
        self.output_chain(&mut out);
        out.push('\n');
        self.prerouting_chain(&mut out);
        out.push_str("}\n");
        out
    }

    /// Connections this namespace's processes open.
    fn output_chain(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\t# TCP the app opens goes to the outbound listener, 127.0.0.1:{}{}.",
            self.outbound_port,
            if self.ipv6 { " or [::1]" } else { "" }
        );
        chain_header(out, "output", "output");
        if !self.ipv6 {
            out.push_str("\t\tmeta nfproto ipv6 return\n");
        }
        let mut uids = self.exclude_uids.clone();
        uids.insert(self.proxy_uid);
        rule(out, "meta skuid", &uids, "return");
        let direct: BTreeSet<PortRange> = [PortRange::single(self.admin_port)]
            .into_iter()
            .chain(self.control_plane_ports.iter().copied())
            .chain(self.exclude_outbound_ports.iter().copied())
            .collect();
        rule(out, "tcp dport", &direct, "return");
        // The sidecar's own listeners, dialled over loopback, are reached as they are: a
        // redirect there would send the outbound listener its own traffic.
        let listeners: BTreeSet<PortRange> = [self.outbound_port, self.inbound_port]
            .into_iter()
            .map(PortRange::single)
            .collect();
        rule(out, "oifname \"lo\" tcp dport", &listeners, "return");
        self.cidr_rules(out, "daddr", &self.exclude_outbound_cidrs);
        let _ = writeln!(
            out,
            "\t\tmeta l4proto tcp redirect to :{}",
            self.outbound_port
        );
        out.push_str("\t}\n");
    }

    /// Connections arriving from other hosts.
    fn prerouting_chain(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\t# TCP arriving for the app's ports goes to the inbound listener, port {}.",
            self.inbound_port
        );
        chain_header(out, "prerouting", "prerouting");
        if !self.ipv6 {
            out.push_str("\t\tmeta nfproto ipv6 return\n");
        }
        out.push_str("\t\tiifname \"lo\" return\n");
        let direct: BTreeSet<PortRange> = [self.admin_port, self.inbound_port]
            .into_iter()
            .map(PortRange::single)
            .chain(self.exclude_inbound_ports.iter().copied())
            .collect();
        rule(out, "tcp dport", &direct, "return");
        self.cidr_rules(out, "saddr", &self.exclude_inbound_cidrs);
        let redirect = format!("redirect to :{}", self.inbound_port);
        if self.inbound_ports.is_empty() {
            let _ = writeln!(out, "\t\tmeta l4proto tcp {redirect}");
        } else {
            rule(out, "tcp dport", &self.inbound_ports, &redirect);
        }
        out.push_str("\t}\n");
    }

    /// `ip saddr { ... } return` and its IPv6 twin, for the networks of each family.
    fn cidr_rules(&self, out: &mut String, field: &str, cidrs: &BTreeSet<Cidr>) {
        let (v4, v6): (BTreeSet<Cidr>, BTreeSet<Cidr>) = cidrs
            .iter()
            .partition(|cidr| matches!(cidr.network, IpAddr::V4(_)));
        rule(out, &format!("ip {field}"), &v4, "return");
        if self.ipv6 {
            rule(out, &format!("ip6 {field}"), &v6, "return");
        }
    }
}

/// The script for `nft -f -` that deletes the table, and succeeds when there is none.
pub fn removal_script() -> String {
    format!("# sidecar redirect --remove\ntable {TABLE}\ndelete table {TABLE}\n")
}

/// Declare, then delete: the table is gone whether or not it was there, in the same
/// transaction as its new contents.
fn replace_header() -> String {
    format!("table {TABLE}\ndelete table {TABLE}\n")
}

fn chain_header(out: &mut String, name: &str, hook: &str) {
    let _ = writeln!(out, "\tchain {name} {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook {hook} priority {NAT_PRIORITY}; policy accept;"
    );
}

/// `MATCH { a, b } VERDICT`, or nothing for an empty set.
fn rule<T: Display>(out: &mut String, matcher: &str, set: &BTreeSet<T>, verdict: &str) {
    if set.is_empty() {
        return;
    }
    let items: Vec<String> = set.iter().map(ToString::to_string).collect();
    let _ = writeln!(out, "\t\t{matcher} {{ {} }} {verdict}", items.join(", "));
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn script(args: &[&str]) -> String {
        let cli = Cli::try_parse_from(std::iter::once("redirect").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        Ruleset::from_options(&cli.options).unwrap().script()
    }

    fn lines(script: &str) -> Vec<&str> {
        script.lines().map(str::trim).collect()
    }

    #[test]
    fn defaults_redirect_all_tcp_but_the_sidecars_own_and_its_ports() {
        let script = script(&["--proxy-uid", "1337"]);
        let lines = lines(&script);
        for expected in [
            "table inet mesh_redirect",
            "delete table inet mesh_redirect",
            "chain output {",
            "type nat hook output priority -100; policy accept;",
            "meta nfproto ipv6 return",
            "meta skuid { 1337 } return",
            "tcp dport { 15000, 15010, 15014 } return",
            "oifname \"lo\" tcp dport { 15001, 15006 } return",
            "meta l4proto tcp redirect to :15001",
            "chain prerouting {",
            "type nat hook prerouting priority -100; policy accept;",
            "iifname \"lo\" return",
            "tcp dport { 15000, 15006 } return",
            "meta l4proto tcp redirect to :15006",
        ] {
            assert!(
                lines.contains(&expected),
                "{expected:?} missing in\n{script}"
            );
        }
        // The declaration and deletion come before the table's contents.
        let delete = script.find("delete table").unwrap();
        assert!(delete < script.find("chain output").unwrap());
        assert!(!script.contains("ip daddr"), "{script}");
    }

    #[test]
    fn flags_add_their_exclusions_in_the_right_chain() {
        let script = script(&[
            "--proxy-uid",
            "1337",
            "--outbound-port",
            "16001",
            "--inbound-port",
            "16006",
            "--admin-port",
            "16000",
            "--control-plane-ports",
            "17010",
            "--inbound-ports",
            "8080,9000-9009",
            "--exclude-outbound-ports",
            "5432,6379",
            "--exclude-inbound-ports",
            "22",
            "--exclude-outbound-cidrs",
            "10.1.2.3/8,fd00::/8",
            "--exclude-inbound-cidrs",
            "192.168.0.0/16",
            "--exclude-uids",
            "0,1000",
        ]);
        let (output, prerouting) = script.split_once("chain prerouting").unwrap();
        let output = lines(output);
        let prerouting = lines(prerouting);
        for expected in [
            "meta skuid { 0, 1000, 1337 } return",
            "tcp dport { 5432, 6379, 16000, 17010 } return",
            "oifname \"lo\" tcp dport { 16001, 16006 } return",
            "ip daddr { 10.0.0.0/8 } return",
            "meta l4proto tcp redirect to :16001",
        ] {
            assert!(
                output.contains(&expected),
                "{expected:?} missing in\n{script}"
            );
        }
        for expected in [
            "tcp dport { 22, 16000, 16006 } return",
            "ip saddr { 192.168.0.0/16 } return",
            "tcp dport { 8080, 9000-9009 } redirect to :16006",
        ] {
            assert!(
                prerouting.contains(&expected),
                "{expected:?} missing in\n{script}"
            );
        }
        // IPv6 is not redirected at all without --ipv6, so its exclusions are not written.
        assert!(!script.contains("fd00"), "{script}");
        // With --inbound-ports, only those ports are redirected inbound.
        assert!(
            !prerouting.contains(&"meta l4proto tcp redirect to :16006"),
            "{script}"
        );
    }

    #[test]
    fn ipv6_drops_the_family_return_and_keeps_ipv6_exclusions() {
        let script = script(&[
            "--proxy-uid",
            "1337",
            "--ipv6",
            "--exclude-outbound-cidrs",
            "fd00::/8,10.0.0.0/8",
        ]);
        assert!(!script.contains("meta nfproto ipv6 return"), "{script}");
        let lines = lines(&script);
        assert!(lines.contains(&"ip6 daddr { fd00::/8 } return"), "{script}");
        assert!(
            lines.contains(&"ip daddr { 10.0.0.0/8 } return"),
            "{script}"
        );
    }

    #[test]
    fn the_same_port_for_both_listeners_is_refused() {
        let cli = Cli::try_parse_from(["redirect", "--proxy-uid", "1", "--outbound-port", "15006"])
            .unwrap();
        let err = Ruleset::from_options(&cli.options).unwrap_err();
        assert!(err.to_string().contains("--outbound-port"), "{err}");
        assert!(err.to_string().contains("--inbound-port"), "{err}");
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (flag, value) in [
            ("--exclude-outbound-ports", "70000"),
            ("--inbound-ports", "9-8"),
            ("--exclude-outbound-cidrs", "10.0.0.0/40"),
            ("--exclude-uids", "root"),
            ("--outbound-port", "0"),
        ] {
            let err = Cli::try_parse_from(["redirect", "--proxy-uid", "1", flag, value])
                .err()
                .unwrap_or_else(|| panic!("{flag} {value} accepted"));
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
        let err = Cli::try_parse_from(["redirect"]).err().unwrap();
        assert!(err.to_string().contains("--proxy-uid"), "{err}");
        assert!(Cli::try_parse_from(["redirect", "--remove"]).is_ok());
    }

    #[test]
    fn removal_declares_then_deletes_so_it_succeeds_without_a_table() {
        assert_eq!(
            lines(&removal_script())[1..],
            [
                "table inet mesh_redirect",
                "delete table inet mesh_redirect"
            ]
        );
    }
}
