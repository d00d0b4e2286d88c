//! The fields of roots, workload certificates and serving certificates, and signing a CSR for
//! exactly one SPIFFE ID.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use mesh_api::spiffe;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::error::CertError;

/// Lifetime of a development leaf unless the caller asks for another.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Lifetime of a root.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start to be valid a little in the past, so clock skew between processes on one
/// machine (or a freshly minted certificate) never reads as "not yet valid".
pub(super) const BACKDATE: Duration = Duration::from_secs(300);

/// What to put in one leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// The SPIFFE ID to carry as the only URI SAN.
    pub spiffe_id: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// A minted leaf: PEM certificate and PEM (PKCS#8) private key.
#[derive(Clone)]
pub struct Leaf {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf's private key, PEM PKCS#8; empty when the certificate was signed from a CSR
    /// (the key stayed with the requester).
    pub key_pem: String,
}

/// Hex SHA-256 of `der`: how sidecars name the CA that issued their certificate.
pub fn sha256_hex(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// The id of a root: the first 16 hex digits of the SHA-256 of its DER.
pub fn root_id(der: &[u8]) -> String {
    let mut id = sha256_hex(der);
    id.truncate(16);
    id
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The fields of every workload certificate: one SPIFFE URI SAN, not a CA, signing only, usable
/// as client and as server (every sidecar is both).
pub(super) fn leaf_params(spec: &LeafSpec) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mesh workload");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(spec.spiffe_id.clone().try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = spec.not_before;
    params.not_after = spec.not_after;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A name a serving certificate is for. Kubernetes' API server dials its webhooks by DNS name
/// (a Service) or by IP address, and checks the name against the certificate's SANs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServingName {
    /// A DNS name, such as `mesh-control-plane.mesh-system.svc`.
    Dns(String),
    /// An IP address, carried as an IP SAN.
    Ip(IpAddr),
}

impl ServingName {
    /// An IP address if `text` is one, else a DNS name: labels of letters, digits and `-`,
    /// separated by dots, at most 253 characters.
    pub fn parse(text: &str) -> Result<Self, CertError> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let invalid = |reason: &str| CertError::InvalidServingName {
            name: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(invalid("is empty"));
        }
        if text.len() > 253 {
            return Err(invalid("is longer than 253 characters"));
        }
        for label in text.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(invalid(
                    "has a label that is empty or longer than 63 characters",
                ));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(invalid(
                    "may hold only letters, digits, '-' and '.' (or be an IP address)",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("has a label that starts or ends with '-'"));
            }
        }
        Ok(Self::Dns(text.to_ascii_lowercase()))
    }
}

impl fmt::Display for ServingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The fields of a serving certificate (the webhook's): the names as DNS and IP SANs, server
/// authentication only, no SPIFFE ID (its clients verify host names, not workload identities).
pub(super) fn serving_params(
    names: &[ServingName],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CertError> {
    let Some(first) = names.first() else {
        return Err(CertError::InvalidServingName {
            name: String::new(),
            reason: "a serving certificate needs at least one name".to_owned(),
        });
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mesh");
    dn.push(DnType::CommonName, first.to_string());
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .iter()
        .map(|name| match name {
            ServingName::Dns(dns) => Ok(SanType::DnsName(dns.clone().try_into()?)),
            ServingName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// A root's fields; `tag` tells roots of one trust domain apart by subject, so path building
/// never confuses an old root with its successor.
pub(super) fn root_params(trust_domain: &str, tag: Option<&str>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mesh");
    let cn = match tag {
        Some(tag) => format!("{trust_domain} root CA {tag}"),
        None => format!("{trust_domain} root CA"),
    };
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + ROOT_LIFETIME;
    params
}

/// The URI SANs a CSR asks for, as text.
fn requested_names(csr: &CertificateSigningRequestParams) -> Vec<String> {
    csr.params
        .subject_alt_names
        .iter()
        .map(|san| match san {
            SanType::URI(uri) => uri.as_str().to_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Signs `csr` for exactly `spiffe_id`: refuses a request for anything else, and builds the
/// certificate only from the request's public key and this CA's rules, so nothing else the
/// request asks for (being a CA, other names) gets in.
pub(super) fn sign_request(
    csr: CertificateSigningRequestParams,
    spiffe_id: &str,
    not_after: OffsetDateTime,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<rcgen::Certificate, CertError> {
    let requested = requested_names(&csr);
    if requested != [spiffe_id] {
        return Err(CertError::WrongIdentity {
            requested: if requested.is_empty() {
                "no identity".to_owned()
            } else {
                requested.join(", ")
            },
            allowed: spiffe_id.to_owned(),
        });
    }
    let now = OffsetDateTime::now_utc();
    let mut params = leaf_params(&LeafSpec {
        spiffe_id: spiffe_id.to_owned(),
        not_before: now - BACKDATE,
        not_after,
    })?;
    params.serial_number = Some(random_serial());
    Ok(CertificateSigningRequestParams {
        params,
        public_key: csr.public_key,
    }
    .signed_by(issuer)?)
}

/// A random positive 128-bit serial: two certificates for one key still differ.
fn random_serial() -> SerialNumber {
    let mut bytes = random_bytes::<16>();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// Random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    // SystemRandom reads the OS generator; it only fails when the OS has none, and then
    // nothing secure can be made at all.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        tracing::error!("the operating system's random generator failed");
        std::process::abort();
    }
    bytes
}

/// Checks a trust domain, naming it in the error.
pub(super) fn validate_trust_domain(value: &str) -> Result<(), CertError> {
    spiffe::check_trust_domain(value).map_err(|e| CertError::InvalidName {
        what: "trust domain",
        source: e,
    })
}

/// Checks a service or namespace name, naming `what` it is in the error.
pub(super) fn validate_label(what: &'static str, value: &str) -> Result<(), CertError> {
    spiffe::check_label(value).map_err(|source| CertError::InvalidName { what, source })
}
