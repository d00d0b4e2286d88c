//! The certificates and keys of one test cluster, minted at run time: nothing is shared between
//! runs, and nothing from a real cluster can be trusted by one.
//!
//! Three roots of trust, as in a real cluster: the serving CA (clients check the API server
//! against it), the client CA (the API server authenticates users by it: a certificate's CN is
//! the user name and each O a group) and the service-account key (the API server signs and
//! checks service-account tokens with it).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::ClusterError;

/// A certificate and its private key, as PEM files on disk.
#[derive(Debug, Clone)]
pub(crate) struct PemPair {
    /// The certificate.
    pub(crate) cert: PathBuf,
    /// Its private key (PKCS#8).
    pub(crate) key: PathBuf,
}

/// The per-run trust of one cluster; files live under the cluster's directory.
pub(crate) struct ClusterPki {
    dir: PathBuf,
    /// Signs the users' client certificates.
    client_ca: CertifiedIssuer<'static, KeyPair>,
    /// The serving CA's certificate (the only root clients trust).
    pub(crate) serving_ca: PathBuf,
    /// The client CA's certificate, for `--client-ca-file`.
    pub(crate) client_ca_file: PathBuf,
    /// The API server's serving certificate, for 127.0.0.1 and `localhost`.
    pub(crate) serving: PemPair,
    /// The service-account signing key.
    pub(crate) service_account_key: PathBuf,
    /// Its public half, which checks the tokens.
    pub(crate) service_account_public: PathBuf,
}

impl ClusterPki {
    /// Mints the CAs, the serving certificate and the service-account key into `dir`.
    pub(crate) fn create(dir: &Path) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|e| ClusterError::io("create", dir, e))?;

        let serving_issuer = ca("mesh test cluster serving CA")?;
        let serving_ca = write(dir, "serving-ca.crt", &serving_issuer.pem())?;
        let serving_key = KeyPair::generate().map_err(|e| pki("serving key", e))?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])
            .map_err(|e| pki("serving certificate", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = params
            .signed_by(&serving_key, &serving_issuer)
            .map_err(|e| pki("serving certificate", e))?;
        let serving = PemPair {
            cert: write(dir, "apiserver.crt", &serving_cert.pem())?,
            key: write(dir, "apiserver.key", &serving_key.serialize_pem())?,
        };

        let client_ca = ca("mesh test cluster client CA")?;
        let client_ca_file = write(dir, "client-ca.crt", &client_ca.pem())?;

        let service_account = KeyPair::generate().map_err(|e| pki("service-account key", e))?;
        let service_account_key =
            write(dir, "service-account.key", &service_account.serialize_pem())?;
        // kube-apiserver reads verification keys as public keys or RSA/EC private keys, not
        // PKCS#8: the public half goes in a file of its own.
        let service_account_public = write(
            dir,
            "service-account.pub",
            &service_account.public_key_pem(),
        )?;

        Ok(Self {
            dir: dir.to_owned(),
            client_ca,
            serving_ca,
            client_ca_file,
            serving,
            service_account_key,
            service_account_public,
        })
    }

    /// A client certificate for `user` in `groups`, signed by the client CA and written as
    /// `<user>.crt` and `<user>.key` (the name is made safe for a file name).
    pub(crate) fn client(&self, user: &str, groups: &[&str]) -> Result<PemPair, ClusterError> {
        let key = KeyPair::generate().map_err(|e| pki("client key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.client_ca)
            .map_err(|e| pki(&format!("client certificate for {user:?}"), e))?;
        let stem: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Ok(PemPair {
            cert: write(&self.dir, &format!("user-{stem}.crt"), &cert.pem())?,
            key: write(&self.dir, &format!("user-{stem}.key"), &key.serialize_pem())?,
        })
    }
}

/// A self-signed CA that may sign leaves only.
fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, ClusterError> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().map_err(|e| pki(name, e))?;
    CertifiedIssuer::self_signed(params, key).map_err(|e| pki(name, e))
}

fn write(dir: &Path, name: &str, pem: &str) -> Result<PathBuf, ClusterError> {
    let path = dir.join(name);
    std::fs::write(&path, pem).map_err(|e| ClusterError::io("write", &path, e))?;
    Ok(path)
}

fn pki(what: &str, source: rcgen::Error) -> ClusterError {
    ClusterError::Pki {
        what: what.to_owned(),
        source,
    }
}
