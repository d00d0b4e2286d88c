//! A development certificate authority: one root that also makes key pairs.
//!
//! This CA is for local development and tests. The control plane's [`Authority`] signs CSRs so
//! that workload keys never leave the sidecar; here the CA makes the key pair itself, which is
//! fine for files a developer hands to a sidecar on one machine.
//!
//! [`Authority`]: super::Authority

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_api::spiffe::SpiffeId;
use rcgen::{Issuer, KeyPair};
use time::OffsetDateTime;

use super::error::CertError;
use super::files::{read, write};
use super::x509::{
    BACKDATE, Leaf, LeafSpec, leaf_params, root_params, sign_request, validate_label,
    validate_trust_domain,
};

/// A certificate authority that can issue workload certificates.
pub struct DevCa {
    trust_domain: String,
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

// === impl DevCa ===

impl DevCa {
    /// Generates a new root for `trust_domain`.
    pub fn generate(trust_domain: &str) -> Result<Self, CertError> {
        validate_trust_domain(trust_domain)?;
        let key = KeyPair::generate()?;
        let params = root_params(trust_domain, None);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a root from its PEM certificate and key.
    pub fn from_pem(trust_domain: &str, cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        validate_trust_domain(trust_domain)?;
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// Loads `ca.pem` and `ca-key.pem` from `dir` when both exist, else generates a new root.
    pub fn load_or_generate(dir: &Path, trust_domain: &str) -> Result<Self, CertError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        if cert_path.exists() && key_path.exists() {
            let cert = read(&cert_path)?;
            let key = read(&key_path)?;
            return Self::from_pem(trust_domain, &cert, &key);
        }
        Self::generate(trust_domain)
    }

    /// The trust domain this root issues for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate, PEM: the trust bundle to hand to sidecars.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root's private key, PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The SPIFFE ID of `service` in `namespace` under this root's trust domain.
    pub fn spiffe_id(&self, namespace: &str, service: &str) -> Result<String, CertError> {
        validate_label("namespace", namespace)?;
        validate_label("service", service)?;
        let id = SpiffeId::for_service(&self.trust_domain, namespace, service)?;
        Ok(id.to_string())
    }

    /// Issues a leaf for `service` in `namespace`, valid from now for `lifetime`.
    pub fn issue_service(
        &self,
        namespace: &str,
        service: &str,
        lifetime: Duration,
    ) -> Result<Leaf, CertError> {
        let now = OffsetDateTime::now_utc();
        self.issue(&LeafSpec {
            spiffe_id: self.spiffe_id(namespace, service)?,
            not_before: now - BACKDATE,
            not_after: now + lifetime,
        })
    }

    /// Issues a leaf exactly as `spec` says, including validity in the past (for tests of
    /// expired certificates) or any SPIFFE ID (for tests of impersonation).
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf, CertError> {
        let key = KeyPair::generate()?;
        let cert = leaf_params(spec)?.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a certificate signing request for `spiffe_id`, valid from now for `lifetime`.
    ///
    /// This is how a workload gets a certificate without its private key leaving it: it sends
    /// a CSR, which proves it holds the key (rcgen checks the signature). The request must name
    /// exactly `spiffe_id` as its URI SAN, the identity the caller proved by other means (a join
    /// token); anything else it asks for, such as being a CA or other names, is ignored: the
    /// certificate is built from the request's public key and this CA's own rules.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        spiffe_id: &str,
        lifetime: Duration,
    ) -> Result<Leaf, CertError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(CertError::InvalidCsr)?;
        let not_after = OffsetDateTime::now_utc() + lifetime;
        let cert = sign_request(csr, spiffe_id, not_after, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: String::new(),
        })
    }

    /// Writes `ca.pem` and `ca-key.pem` (mode 0600) into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<(), CertError> {
        write(&dir.join("ca.pem"), &self.cert_pem, false)?;
        write(&dir.join("ca-key.pem"), &self.key_pem, true)
    }
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

// === impl Leaf ===

impl Leaf {
    /// Writes `<name>.pem` and `<name>-key.pem` (mode 0600) into `dir`; returns both paths.
    pub fn write_to(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), CertError> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        write(&cert, &self.cert_pem, false)?;
        write(&key, &self.key_pem, true)?;
        Ok((cert, key))
    }
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::DEFAULT_LEAF_LIFETIME;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, SanType};
    use x509_parser::extensions::GeneralName;

    fn uri_sans(pem: &str) -> Vec<String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn leaf_carries_only_the_spiffe_uri() {
        let ca = DevCa::generate("mesh.local").unwrap();
        let leaf = ca
            .issue_service("default", "orders", DEFAULT_LEAF_LIFETIME)
            .unwrap();
        assert_eq!(
            uri_sans(&leaf.cert_pem),
            ["spiffe://mesh.local/ns/default/sa/orders"]
        );
    }

    #[test]
    fn reloaded_ca_issues_leaves_chaining_to_the_same_root() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate("mesh.local").unwrap();
        ca.write_to(dir.path()).unwrap();
        let again = DevCa::load_or_generate(dir.path(), "mesh.local").unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let mode = std::fs::metadata(dir.path().join("ca-key.pem"))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    /// A key pair and a CSR naming `uris`, as a workload would make them.
    fn csr(uris: &[&str], ca: bool) -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        (key, pem)
    }

    const ORDERS: &str = "spiffe://mesh.local/ns/default/sa/orders";

    #[test]
    fn a_csr_for_the_allowed_identity_is_signed_for_its_own_key() {
        let ca = DevCa::generate("mesh.local").unwrap();
        let (key, request) = csr(&[ORDERS], false);
        let leaf = ca
            .sign_csr(&request, ORDERS, Duration::from_secs(3600))
            .unwrap();
        assert!(leaf.key_pem.is_empty(), "the key never reaches the CA");
        assert_eq!(uri_sans(&leaf.cert_pem), [ORDERS]);
        let (_, pem) = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }

    #[test]
    fn a_csr_for_another_identity_is_refused() {
        let ca = DevCa::generate("mesh.local").unwrap();
        let payments = "spiffe://mesh.local/ns/default/sa/payments";
        for uris in [&[payments][..], &[ORDERS, payments], &[]] {
            let (_, request) = csr(uris, false);
            let err = ca
                .sign_csr(&request, ORDERS, Duration::from_secs(3600))
                .unwrap_err();
            assert!(
                matches!(err, CertError::WrongIdentity { .. }),
                "{uris:?}: {err}"
            );
        }
    }

    #[test]
    fn what_else_a_csr_asks_for_is_ignored() {
        let ca = DevCa::generate("mesh.local").unwrap();
        let (_, request) = csr(&[ORDERS], true);
        let leaf = ca
            .sign_csr(&request, ORDERS, Duration::from_secs(3600))
            .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let constraints = cert.basic_constraints().unwrap().map(|b| b.value.ca);
        assert_eq!(constraints, Some(false), "a workload never becomes a CA");
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let ca = DevCa::generate("mesh.local").unwrap();
        let (_, request) = csr(&[ORDERS], false);
        // Flip one byte inside the base64 body: the signature no longer matches.
        let mut bytes = request.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let err = ca
            .sign_csr(
                &String::from_utf8(bytes).unwrap(),
                ORDERS,
                Duration::from_secs(3600),
            )
            .unwrap_err();
        assert!(matches!(err, CertError::InvalidCsr(_)), "{err}");
    }

    #[test]
    fn bad_names_are_rejected_with_the_name() {
        let ca = DevCa::generate("mesh.local").unwrap();
        let err = ca
            .issue_service("default", "Orders_Svc", DEFAULT_LEAF_LIFETIME)
            .unwrap_err();
        assert!(err.to_string().contains("Orders_Svc"), "{err}");
        assert!(DevCa::generate("Mesh Local").is_err());
    }
}
