//! `gateways/<name>.yaml`: the listeners, routes and client limits of the gateway that runs as
//! service `<name>`, in the schema of a gateway bootstrap's `gateway:` section
//! ([`mesh_api::gateway`]) and held to the same rules, plus what only the mesh knows: the
//! service is declared, every backend is a service it calls (so its snapshot carries it), and
//! a backend's `version` is one that service's `traffic_split` lists (so it has endpoints).
//!
//! ```yaml
//! # gateways/gateway.yaml, for the service declared in services/gateway.yaml
//! listeners:
//!   - { name: web, address: "0.0.0.0:8080", protocol: HTTP }
//! routes:
//!   - name: shop
//!     parentRefs: [{ name: web }]
//!     hostnames: [shop.example.com]
//!     rules: [{ backendRefs: [{ name: storefront }] }]
//! clients: { max_request_bytes: 1MiB }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use mesh_api::gateway::{GatewayConfig, GatewayFile};
use mesh_api::validate::Errors;
use serde::Serialize;

use super::file_errors::{ConfigFiles, FileError, drain, file_error, yaml};

/// The directory of gateway files.
pub const GATEWAYS_DIR: &str = "gateways";

/// A gateway the control plane declares.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeclaredGateway {
    /// The file that declares it, relative to the configuration directory.
    pub file: String,
    /// The file as written: what the gateway's snapshot carries (the gateway resolves its
    /// relative certificate paths against its own bootstrap directory).
    #[serde(skip)]
    pub source: String,
    /// As validated here.
    pub config: GatewayConfig,
}

/// What a gateway's validation needs of a declared service: its file, its calls, and the
/// versions it splits into.
pub(super) struct Declared<'a> {
    pub(super) file: &'a str,
    pub(super) calls: &'a [String],
    pub(super) split: Option<&'a BTreeMap<String, u32>>,
}

/// Validates every `gateways/*.yaml` of `files` against the declared `services`.
pub(super) fn validate(
    files: &ConfigFiles,
    services: &BTreeMap<&str, Declared<'_>>,
    out: &mut Vec<FileError>,
) -> BTreeMap<String, DeclaredGateway> {
    let mut gateways = BTreeMap::new();
    let prefix = format!("{GATEWAYS_DIR}/");
    for (file, bytes) in files.range(prefix.clone()..) {
        let Some(base_name) = file.strip_prefix(&prefix) else {
            break;
        };
        let name = base_name
            .strip_suffix(".yaml")
            .or_else(|| base_name.strip_suffix(".yml"))
            .unwrap_or(base_name);
        let Some(service) = services.get(name) else {
            out.push(file_error(
                file,
                "",
                format!(
                    "service {name:?} is not declared: a gateway's file is named after its \
                     service (services/{name}.yaml)"
                ),
            ));
            continue;
        };
        if let Some(first) = gateways.get(name).map(|g: &DeclaredGateway| g.file.clone()) {
            out.push(file_error(
                file,
                "",
                format!("{first} already declares gateway {name:?}"),
            ));
            continue;
        }
        let Some(parsed) = yaml::<GatewayFile>(file, bytes, out) else {
            continue;
        };
        let mut errors = Errors::default();
        for (path, backend, version) in parsed.backend_names() {
            if !service.calls.iter().any(|call| call == backend) {
                errors.push(
                    format!("{path}.name"),
                    format!(
                        "{backend:?} is not a service {name} calls: add it to the calls of {}",
                        service.file
                    ),
                );
            }
            let Some((version, target)) = version.zip(services.get(backend)) else {
                continue;
            };
            if !target
                .split
                .is_some_and(|split| split.contains_key(version))
            {
                errors.push(
                    format!("{path}.version"),
                    format!(
                        "{version:?} is not in {backend}'s traffic_split: add it there in {} \
                         (weight 0 sends it only the requests of routes that name it)",
                        target.file
                    ),
                );
            }
        }
        let config = mesh_api::gateway::validate(parsed, "", Path::new(""), &mut errors);
        let failed = !errors.is_empty();
        drain(file, errors, out);
        if failed {
            continue;
        }
        gateways.insert(
            name.to_owned(),
            DeclaredGateway {
                file: file.clone(),
                source: String::from_utf8_lossy(bytes).into_owned(),
                config,
            },
        );
    }
    gateways
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigFiles, MESH_FILE, parse};

    fn files(gateways: &[(&str, &str)]) -> ConfigFiles {
        let mut files = ConfigFiles::new();
        files.insert(MESH_FILE.into(), b"trust_domain: mesh.local\n".to_vec());
        for (name, text) in [
            ("gateway", "name: gateway\ncalls: [storefront]\n"),
            (
                "storefront",
                "name: storefront\ntraffic_split: { v1: 100, v2: 0 }\n",
            ),
            ("orders", "name: orders\n"),
        ] {
            files.insert(format!("services/{name}.yaml"), text.as_bytes().to_vec());
        }
        for (name, text) in gateways {
            files.insert(format!("gateways/{name}"), text.as_bytes().to_vec());
        }
        files
    }

    fn errors(gateways: &[(&str, &str)]) -> Vec<String> {
        parse(&files(gateways))
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    const WEB: &str = "listeners: [{ name: web, address: \"127.0.0.1:8080\", protocol: HTTP }]\n";

    #[test]
    fn the_example_gateway_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/mesh");
        let config = super::super::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let gateway = &config.gateways["gateway"];
        let names: Vec<&str> = gateway
            .config
            .listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["web", "websecure"]);
    }

    #[test]
    fn a_gateway_file_is_read_with_its_source() {
        let text = format!(
            "{WEB}routes:\n  - {{ name: shop, parentRefs: [{{ name: web }}], hostnames: [shop.example.com], rules: [{{ backendRefs: [{{ name: storefront }}] }}] }}\n"
        );
        let config = parse(&files(&[("gateway.yaml", &text)])).unwrap();
        let gateway = &config.gateways["gateway"];
        assert_eq!(gateway.file, "gateways/gateway.yaml");
        assert_eq!(gateway.source, text);
        assert_eq!(gateway.config.listeners[0].name, "web");
        assert_eq!(
            gateway.config.routes[0].rules[0].backends[0].service,
            "storefront"
        );
    }

    #[test]
    fn mistakes_are_reported_with_file_and_path() {
        let text = "listeners:\n\
            \x20 - { name: web, address: \"127.0.0.1:8080\", protocol: HTTP }\n\
            \x20 - { name: web, address: \"127.0.0.1:8080\", protocol: HTTP }\n\
            \x20 - { name: tls, address: \"127.0.0.1:8443\", protocol: HTTPS }\n\
            routes:\n\
            \x20 - { name: shop, parentRefs: [{ name: websecure }], rules: [{ backendRefs: [{ name: storefront }, { name: orders }] }] }\n\
            clients: { max_request_bytes: lots }\n";
        assert_eq!(
            errors(&[("gateway.yaml", text)]),
            [
                "gateways/gateway.yaml: routes[0].rules[0].backendRefs[1].name: \"orders\" is \
                 not a service gateway calls: add it to the calls of services/gateway.yaml",
                "gateways/gateway.yaml: listeners[1].name: \"web\": another listener has this name",
                "gateways/gateway.yaml: listeners[1].address: 127.0.0.1:8080: another listener \
                 listens there",
                "gateways/gateway.yaml: listeners[2].tls: missing: an HTTPS listener needs \
                 tls.certificates",
                "gateways/gateway.yaml: routes[0].parentRefs[0].name: no listener named \
                 \"websecure\"",
                "gateways/gateway.yaml: clients.max_request_bytes: invalid size \"lots\": write \
                 e.g. 16KiB, 1MiB or 4096",
            ]
        );
    }

    #[test]
    fn a_backend_version_is_one_its_service_splits_into() {
        let route = |backends: &str| {
            format!(
                "{WEB}routes:\n  - {{ name: shop, parentRefs: [{{ name: web }}], rules: [{{ backendRefs: {backends} }}] }}\n"
            )
        };
        let good = route("[{ name: storefront, version: v2 }, { name: storefront, weight: 9 }]");
        let config = parse(&files(&[("gateway.yaml", &good)])).unwrap();
        let backends = &config.gateways["gateway"].config.routes[0].rules[0].backends;
        assert_eq!(backends[0].version.as_deref(), Some("v2"));
        assert_eq!(backends[1].version, None);
        assert_eq!(
            errors(&[(
                "gateway.yaml",
                &route("[{ name: storefront, version: v3 }]")
            )]),
            [
                "gateways/gateway.yaml: routes[0].rules[0].backendRefs[0].version: \"v3\" is not \
                 in storefront's traffic_split: add it there in services/storefront.yaml (weight \
                 0 sends it only the requests of routes that name it)"
            ]
        );
    }

    #[test]
    fn a_gateway_file_names_a_declared_service_and_has_known_fields() {
        assert_eq!(
            errors(&[("payments.yaml", WEB)]),
            [
                "gateways/payments.yaml: service \"payments\" is not declared: a gateway's file is \
              named after its service (services/payments.yaml)"
            ]
        );
        let unknown = errors(&[("gateway.yaml", &format!("{WEB}listener: []\n"))]);
        assert_eq!(unknown.len(), 1);
        assert!(
            unknown[0].starts_with("gateways/gateway.yaml: ") && unknown[0].contains("listener"),
            "{unknown:?}"
        );
        assert_eq!(
            errors(&[("gateway.yaml", "routes: []\n")]),
            ["gateways/gateway.yaml: listeners: at least one listener is needed"]
        );
    }
}
