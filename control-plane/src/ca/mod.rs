//! Certificate authorities for SPIFFE workload certificates.
//!
//! Each leaf carries exactly one identity, as a URI SAN
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service>`, and no DNS name: sidecars verify each
//! other by that URI, not by host name. Keys are ECDSA P-256, the curve every TLS stack supports.
//!
//! - [`DevCa`]: one root that also makes key pairs, for development files and tests.
//! - [`Authority`]: the control plane's CA, kept in its state directory, with several trusted
//!   roots (for rotation) or an operator's intermediate; it only signs CSRs for workloads.

mod authority;
mod dev;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_api::spiffe;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

pub use authority::{Authority, Issued, RootInfo, RotationError};
pub use dev::DevCa;

/// Lifetime of a development leaf unless the caller asks for another.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Lifetime of a root.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start to be valid a little in the past, so clock skew between processes on one
/// machine (or a freshly minted certificate) never reads as "not yet valid".
const BACKDATE: Duration = Duration::from_secs(300);

/// Errors from minting or storing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or the key.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A name that cannot appear in a SPIFFE ID.
    #[error("{what}: {source}")]
    InvalidName {
        /// Which part of the identity.
        what: &'static str,
        /// The name and the rule it breaks.
        source: spiffe::InvalidName,
    },
    /// A certificate signing request that cannot be parsed or whose signature is wrong.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(rcgen::Error),
    /// A certificate signing request for another identity than the one allowed.
    #[error("the request asks for {requested}, but may only ask for {allowed}")]
    WrongIdentity {
        /// What the request names (its URI SANs).
        requested: String,
        /// The identity the caller proved.
        allowed: String,
    },
    /// The names do not make a valid SPIFFE ID.
    #[error("invalid identity: {0}")]
    Identity(#[from] spiffe::InvalidSpiffeId),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The CA files in a state directory do not fit together.
    #[error("{path}: {message}")]
    InvalidState {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

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

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The fields of every workload certificate: one SPIFFE URI SAN, not a CA, signing only, usable
/// as client and as server (every sidecar is both).
fn leaf_params(spec: &LeafSpec) -> Result<CertificateParams, CertError> {
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
fn root_params(trust_domain: &str, tag: Option<&str>) -> CertificateParams {
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
fn sign_request(
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

fn validate_trust_domain(value: &str) -> Result<(), CertError> {
    spiffe::check_trust_domain(value).map_err(|e| CertError::InvalidName {
        what: "trust domain",
        source: e,
    })
}

fn validate_label(what: &'static str, value: &str) -> Result<(), CertError> {
    spiffe::check_label(value).map_err(|source| CertError::InvalidName { what, source })
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    fs::write(path, contents).map_err(io_err)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    }
    Ok(())
}

/// Writes `path` so that readers see the old or the new contents, never a mix: a temporary file
/// in the same directory, created with `mode`, then renamed over.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", hex(&random_bytes::<4>())));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}
