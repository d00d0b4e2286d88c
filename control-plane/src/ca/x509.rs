//! The fields of roots and workload certificates, and signing a CSR for exactly one SPIFFE ID.

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
