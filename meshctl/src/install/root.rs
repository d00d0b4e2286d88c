//! The mesh's root: made for this install (P-256, as the control plane makes its own), or an
//! operator's, checked before it goes into the manifests: a CA certificate, in its validity
//! period, with the key that matches it.

use std::path::Path;

use mesh_control_plane::ca::DevCa;

use super::error::InstallError;
use super::options::RootSource;

/// The root's certificate and key, PEM.
#[derive(Clone)]
pub struct Root {
    /// The certificate: the trust anchor sidecars and the webhook configuration carry.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Root").finish_non_exhaustive()
    }
}

/// The root `source` names, for `trust_domain`.
pub(super) fn root(source: &RootSource, trust_domain: &str) -> Result<Root, InstallError> {
    let ca = match source {
        RootSource::Generate => DevCa::generate(trust_domain)?,
        RootSource::Files { cert, key } => {
            let cert_pem = read("--ca-cert", cert)?;
            let key_pem = read("--ca-key", key)?;
            check_pair(cert, &cert_pem, key, &key_pem)?;
            DevCa::from_pem(trust_domain, &cert_pem, &key_pem)?
        }
    };
    Ok(Root {
        cert_pem: ca.cert_pem().to_owned(),
        key_pem: ca.key_pem().to_owned(),
    })
}

fn read(flag: &'static str, path: &Path) -> Result<String, InstallError> {
    std::fs::read_to_string(path).map_err(|source| InstallError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// The certificate is a CA valid now, and the key is its key.
fn check_pair(
    cert_path: &Path,
    cert_pem: &str,
    key_path: &Path,
    key_pem: &str,
) -> Result<(), InstallError> {
    let bad = |flag, path: &Path, message: String| InstallError::BadRoot {
        flag,
        path: path.to_owned(),
        message,
    };
    let der = pem::parse_many(cert_pem)
        .map_err(|e| bad("--ca-cert", cert_path, format!("not PEM: {e}")))?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .ok_or_else(|| bad("--ca-cert", cert_path, "holds no CERTIFICATE block".into()))?
        .into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
        bad(
            "--ca-cert",
            cert_path,
            format!("not an X.509 certificate: {e}"),
        )
    })?;
    if !cert.is_ca() {
        return Err(bad(
            "--ca-cert",
            cert_path,
            "is not a CA certificate (basicConstraints CA:TRUE is missing)".into(),
        ));
    }
    if !cert.validity().is_valid() {
        return Err(bad(
            "--ca-cert",
            cert_path,
            format!(
                "is not valid now (from {} until {})",
                cert.validity().not_before,
                cert.validity().not_after
            ),
        ));
    }
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| {
        bad(
            "--ca-key",
            key_path,
            format!("not a private key in PEM: {e}"),
        )
    })?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    if cert.public_key().raw != spki.as_slice() {
        return Err(bad(
            "--ca-key",
            key_path,
            format!(
                "is not the key of the certificate in {}",
                cert_path.display()
            ),
        ));
    }
    Ok(())
}
