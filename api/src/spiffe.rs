//! SPIFFE IDs: the only place that knows their format.
//!
//! A workload identity is `spiffe://<trust-domain>/ns/<namespace>/sa/<service>`. Sidecars name
//! each other by this URI, carried as the URI SAN of their certificates. Service and namespace
//! names are DNS labels, as in Kubernetes, so the same names work when the mesh moves there.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use x509_parser::extensions::GeneralName;

const SCHEME: &str = "spiffe://";

/// The namespace of the control plane's identity: the ID sidecars require of it.
pub const CONTROL_PLANE_NAMESPACE: &str = "mesh-system";
/// The service of the control plane's identity; see [`CONTROL_PLANE_NAMESPACE`].
pub const CONTROL_PLANE_SERVICE: &str = "control-plane";

/// The text of a service's SPIFFE ID, unchecked: for names validated already, and for messages
/// that show the pattern (`<service>`). [`SpiffeId::for_service`] checks the result.
pub fn format_service_id(trust_domain: &str, namespace: &str, service: &str) -> String {
    format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service}")
}

/// A validated SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SpiffeId(String);

/// Why a string is not a SPIFFE ID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSpiffeId {
    /// Missing `spiffe://`.
    #[error("must start with \"spiffe://\"")]
    Scheme,
    /// Empty or badly formed trust domain.
    #[error("trust domain must be lowercase letters, digits, '.', '-' or '_'")]
    TrustDomain,
    /// Empty segment, `.`/`..`, or a character outside the allowed set.
    #[error("path segments must be non-empty and use letters, digits, '.', '-' or '_'")]
    Path,
}

// === impl SpiffeId ===

impl SpiffeId {
    /// The conventional ID of a service account in a namespace.
    pub fn for_service(
        trust_domain: &str,
        namespace: &str,
        service: &str,
    ) -> Result<Self, InvalidSpiffeId> {
        format_service_id(trust_domain, namespace, service).parse()
    }

    /// The ID the control plane of `trust_domain` presents.
    pub fn control_plane(trust_domain: &str) -> Result<Self, InvalidSpiffeId> {
        Self::for_service(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE)
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        let rest = &self.0[SCHEME.len()..];
        rest.split_once('/').map_or(rest, |(domain, _)| domain)
    }

    /// The service (`sa` segment) when the ID has the `/ns/<ns>/sa/<sa>` shape.
    pub fn service(&self) -> Option<&str> {
        let path = self.0[SCHEME.len()..].split_once('/')?.1;
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["ns", _, "sa", sa] => Some(sa),
            _ => None,
        }
    }
}

impl FromStr for SpiffeId {
    type Err = InvalidSpiffeId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(SCHEME).ok_or(InvalidSpiffeId::Scheme)?;
        let (domain, path) = match rest.split_once('/') {
            Some((d, p)) => (d, Some(p)),
            None => (rest, None),
        };
        check_trust_domain(domain).map_err(|_| InvalidSpiffeId::TrustDomain)?;
        if let Some(path) = path {
            let segment_ok = |seg: &str| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            };
            if !path.split('/').all(segment_ok) {
                return Err(InvalidSpiffeId::Path);
            }
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service, namespace or trust-domain name that cannot be used in an identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid name {value:?}: {rule}")]
pub struct InvalidName {
    /// The name given.
    pub value: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

/// Checks a service or namespace name: a DNS label of 1-63 lowercase letters, digits and `-`,
/// not starting or ending with `-`.
pub fn check_label(value: &str) -> Result<(), InvalidName> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    ok.then_some(()).ok_or_else(|| InvalidName {
        value: value.to_owned(),
        rule: "use 1-63 lowercase letters, digits and '-'",
    })
}

/// Checks a trust domain: lowercase letters, digits, `.`, `-` and `_`.
pub fn check_trust_domain(value: &str) -> Result<(), InvalidName> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    ok.then_some(()).ok_or_else(|| InvalidName {
        value: value.to_owned(),
        rule: "use lowercase letters, digits, '.', '-' and '_'",
    })
}

/// Lists identities for a message: comma-separated, or "no SPIFFE ID".
pub fn describe(ids: &[SpiffeId]) -> String {
    if ids.is_empty() {
        return "no SPIFFE ID".to_owned();
    }
    ids.iter()
        .map(SpiffeId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The identity of a DER certificate: its one URI SAN, which must be a SPIFFE ID. An X.509-SVID
/// carries exactly one URI SAN; a certificate with several would let a peer be accepted as
/// whichever of them a check looked for, so it has no identity at all.
pub fn id_in_certificate(der: &[u8]) -> Result<SpiffeId, NoIdentity> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Err(NoIdentity::Unreadable);
    };
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    match uris.as_slice() {
        [] => Err(NoIdentity::NoUri),
        [uri] => uri
            .parse()
            .map_err(|_| NoIdentity::NotSpiffe((*uri).to_owned())),
        several => Err(NoIdentity::SeveralUris(several.len())),
    }
}

/// Why a certificate names no identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoIdentity {
    /// Not a DER certificate.
    #[error("the certificate cannot be parsed")]
    Unreadable,
    /// No URI SAN at all.
    #[error("the certificate has no URI SAN")]
    NoUri,
    /// One URI SAN, not a SPIFFE ID.
    #[error("the certificate's URI SAN {0:?} is not a SPIFFE ID")]
    NotSpiffe(String),
    /// More than one URI SAN.
    #[error("the certificate has {0} URI SANs; an X.509-SVID has exactly one")]
    SeveralUris(usize),
}

/// The SPIFFE IDs among a DER certificate's URI SANs, for messages about what a certificate
/// presents. Empty if the certificate cannot be parsed or carries none. A peer's identity is
/// [`id_in_certificate`].
pub fn ids_in_certificate(der: &[u8]) -> Vec<SpiffeId> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.parse().ok(),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with these URI SANs.
    fn with_uris(uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
            .collect();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_names_an_identity_only_with_exactly_one_spiffe_uri() {
        let orders = "spiffe://mesh.local/ns/default/sa/orders";
        assert_eq!(
            id_in_certificate(&with_uris(&[orders])).unwrap().as_str(),
            orders
        );
        assert_eq!(id_in_certificate(&with_uris(&[])), Err(NoIdentity::NoUri));
        assert_eq!(
            id_in_certificate(&with_uris(&[
                orders,
                "spiffe://mesh.local/ns/default/sa/admin"
            ])),
            Err(NoIdentity::SeveralUris(2))
        );
        assert_eq!(
            id_in_certificate(&with_uris(&["https://orders.example"])),
            Err(NoIdentity::NotSpiffe("https://orders.example".into()))
        );
        assert_eq!(id_in_certificate(b"junk"), Err(NoIdentity::Unreadable));
    }

    #[test]
    fn service_ids_and_the_control_planes_share_one_format() {
        assert_eq!(
            format_service_id("mesh.local", "default", "orders"),
            "spiffe://mesh.local/ns/default/sa/orders"
        );
        let cp = SpiffeId::control_plane("mesh.local").unwrap();
        assert_eq!(
            cp.as_str(),
            "spiffe://mesh.local/ns/mesh-system/sa/control-plane"
        );
        assert_eq!(cp.service(), Some(CONTROL_PLANE_SERVICE));
        assert_eq!(
            SpiffeId::control_plane("Bad Domain"),
            Err(InvalidSpiffeId::TrustDomain)
        );
    }

    #[test]
    fn parses_service_ids() {
        let id: SpiffeId = "spiffe://mesh.local/ns/default/sa/orders".parse().unwrap();
        assert_eq!(id.service(), Some("orders"));
        assert_eq!(id.trust_domain(), "mesh.local");
        assert_eq!(
            SpiffeId::for_service("mesh.local", "default", "orders").unwrap(),
            id
        );
    }

    #[test]
    fn other_paths_have_no_service() {
        let id: SpiffeId = "spiffe://example.org/workload/x".parse().unwrap();
        assert_eq!(id.service(), None);
    }

    #[test]
    fn labels_are_dns_labels() {
        assert!(check_label("orders-2").is_ok());
        for bad in [
            "",
            "Orders",
            "orders_svc",
            "-orders",
            "orders-",
            &"a".repeat(64),
        ] {
            assert!(check_label(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_trust_domain("mesh.local").is_ok());
        assert!(check_trust_domain("Mesh Local").is_err());
    }

    #[test]
    fn rejects_malformed_ids() {
        assert_eq!(
            "https://mesh.local/ns/a".parse::<SpiffeId>(),
            Err(InvalidSpiffeId::Scheme)
        );
        assert_eq!(
            "spiffe:///ns/a".parse::<SpiffeId>(),
            Err(InvalidSpiffeId::TrustDomain)
        );
        assert_eq!(
            "spiffe://Mesh/ns/a".parse::<SpiffeId>(),
            Err(InvalidSpiffeId::TrustDomain)
        );
        assert_eq!(
            "spiffe://mesh.local/ns//sa/x".parse::<SpiffeId>(),
            Err(InvalidSpiffeId::Path)
        );
        assert_eq!(
            "spiffe://mesh.local/ns/../sa/x".parse::<SpiffeId>(),
            Err(InvalidSpiffeId::Path)
        );
    }
}
