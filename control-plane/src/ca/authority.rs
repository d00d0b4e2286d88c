//! The control plane's certificate authority, kept in its state directory.
//!
//! # Files
//! - `ca.pem`: the trust bundle, every root the mesh trusts (PEM, concatenated). Operators hand
//!   it to sidecars as their trust anchor. Rewritten atomically when roots change.
//! - `roots/<id>/cert.pem` and `roots/<id>/key.pem` (0600): each root this CA holds the key of;
//!   `<id>` is the first 16 hex digits of the SHA-256 of the root's DER.
//! - `signer`: the id of the root that signs now.
//! - `retired/<id>/`: roots removed from the bundle, kept for the record.
//!
//! # Where the signing key comes from, on each start
//! 1. `intermediate.pem` (the intermediate, optionally followed by further chain up to but not
//!    including a root) and `intermediate-key.pem` exist: the operator's intermediate signs, and
//!    `ca.pem` must hold the root(s) it chains to. Issued chains are the leaf plus the contents of
//!    `intermediate.pem`. The roots' keys stay with the operator, so rotation is refused.
//! 2. `signer` exists: the roots of `ca.pem` are loaded, with the keys found under `roots/`, and
//!    the root it names signs.
//! 3. First start with `ca.pem` and `ca-key.pem`: the operator's root signs. It is copied under
//!    `roots/` and recorded in `signer`, so later starts take path 2.
//! 4. First start with nothing: a new root is generated (ECDSA P-256).
//!
//! Each start checks that a certificate from the signer verifies against `ca.pem`, so a
//! mismatched file set fails at once rather than at the first sidecar.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_api::spiffe::format_service_id;
use rcgen::{Issuer, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::ParsedCertificate;
use time::OffsetDateTime;

use super::error::CertError;
use super::files::{create_private_dir, read, write_atomic};
use super::x509::{
    BACKDATE, ServingName, hex, random_bytes, root_id, root_params, serving_params, sha256_hex,
    sign_request, validate_trust_domain,
};

const BUNDLE: &str = "ca.pem";
const SIGNER: &str = "signer";
const INTERMEDIATE: &str = "intermediate.pem";
const INTERMEDIATE_KEY: &str = "intermediate-key.pem";
const OPERATOR_ROOT_KEY: &str = "ca-key.pem";

/// The CA: the trusted roots and the key that signs. Immutable; a rotation makes a new one
/// (after writing it to disk), so readers never see half a change.
#[derive(Clone)]
pub struct Authority {
    dir: PathBuf,
    trust_domain: String,
    roots: Vec<Root>,
    signer: Signer,
}

#[derive(Clone)]
struct Root {
    id: String,
    sha256: String,
    der: CertificateDer<'static>,
    not_after_unix: i64,
    /// Present when this CA holds the root's key.
    issuer: Option<Arc<Issuer<'static, KeyPair>>>,
}

#[derive(Clone)]
enum Signer {
    Root {
        id: String,
    },
    Intermediate {
        /// The intermediate first, then any further chain.
        chain: Vec<CertificateDer<'static>>,
        issuer: Arc<Issuer<'static, KeyPair>>,
        sha256: String,
        not_after_unix: i64,
    },
}

/// A certificate signed for a workload.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The leaf, then intermediates (not the root), DER.
    pub chain_der: Vec<Vec<u8>>,
    /// Expiry of the leaf, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// One root of the trust bundle, for status pages.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RootInfo {
    /// First 16 hex digits of its SHA-256.
    pub id: String,
    /// Hex SHA-256 of its DER.
    pub sha256: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// Whether this CA holds its key (and so can sign with it).
    pub has_key: bool,
    /// Whether it signs now.
    pub signer: bool,
}

/// Why a rotation step was refused.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The operator's intermediate signs; its roots are managed outside.
    #[error(
        "the signing CA is the operator's intermediate ({INTERMEDIATE}); rotate it by replacing \
         the files and restarting"
    )]
    Intermediate,
    /// No such root in the bundle.
    #[error("no root {0} in the trust bundle")]
    UnknownRoot(String),
    /// The root is trusted but this CA cannot sign with it.
    #[error("root {0} has no key in the state directory, so it cannot sign")]
    NoKey(String),
    /// Removing the signer would leave issued certificates untrusted.
    #[error("root {0} signs now; make another root the signer first")]
    IsSigner(String),
    /// Storing the change failed; nothing changed.
    #[error(transparent)]
    Store(#[from] CertError),
}

// === impl Authority ===

impl Authority {
    /// Loads the CA from `dir`, or creates one there (see the module documentation).
    pub fn open(dir: &Path, trust_domain: &str) -> Result<Self, CertError> {
        validate_trust_domain(trust_domain)?;
        create_private_dir(dir)?;
        let at = |name: &str| dir.join(name);
        let authority = if at(INTERMEDIATE).exists() && at(INTERMEDIATE_KEY).exists() {
            Self::open_intermediate(dir, trust_domain)?
        } else if at(SIGNER).exists() {
            Self::open_managed(dir, trust_domain)?
        } else if at(BUNDLE).exists() && at(OPERATOR_ROOT_KEY).exists() {
            Self::adopt_operator_root(dir, trust_domain)?
        } else if at(BUNDLE).exists() {
            return Err(CertError::InvalidState {
                path: at(BUNDLE),
                message: format!(
                    "exists, but there is no key to sign with: add {OPERATOR_ROOT_KEY} (its \
                     root's key) or {INTERMEDIATE} and {INTERMEDIATE_KEY}"
                ),
            });
        } else {
            Self::generate(dir, trust_domain)?
        };
        authority.check_chain()?;
        Ok(authority)
    }

    /// Copies an operator's root (`ca.pem` and `ca-key.pem` in `from`, such as a mounted
    /// Secret) into the state directory `dir` when `dir` holds no CA yet, so that [`open`]
    /// adopts it as if the operator had put the files there. Returns whether it copied; a
    /// state directory with a CA keeps it (its roots may have rotated since).
    ///
    /// [`open`]: Self::open
    pub fn import_root(dir: &Path, from: &Path) -> Result<bool, CertError> {
        let has_ca = [BUNDLE, SIGNER, INTERMEDIATE]
            .iter()
            .any(|name| dir.join(name).exists());
        if has_ca {
            return Ok(false);
        }
        let bundle = read(&from.join(BUNDLE))?;
        let key = read(&from.join(OPERATOR_ROOT_KEY))?;
        create_private_dir(dir)?;
        // The key first: a bundle without its key would make `open` refuse the directory.
        write_atomic(&dir.join(OPERATOR_ROOT_KEY), key.as_bytes(), 0o600)?;
        write_atomic(&dir.join(BUNDLE), bundle.as_bytes(), 0o644)?;
        tracing::info!(from = %from.display(), "imported the operator's root CA");
        Ok(true)
    }

    fn generate(dir: &Path, trust_domain: &str) -> Result<Self, CertError> {
        let root = new_root(dir, trust_domain)?;
        let authority = Self {
            dir: dir.to_owned(),
            trust_domain: trust_domain.to_owned(),
            signer: Signer::Root {
                id: root.id.clone(),
            },
            roots: vec![root],
        };
        authority.write_bundle()?;
        authority.write_signer()?;
        tracing::info!(root = %authority.roots[0].id, "generated a new root CA");
        Ok(authority)
    }

    fn open_managed(dir: &Path, trust_domain: &str) -> Result<Self, CertError> {
        let signer_path = dir.join(SIGNER);
        let signer = read(&signer_path)?.trim().to_owned();
        let roots = read_bundle(&dir.join(BUNDLE))?
            .into_iter()
            .map(|der| {
                let id = root_id(&der);
                let key_path = dir.join("roots").join(&id).join("key.pem");
                let issuer = if key_path.exists() {
                    Some(Arc::new(load_issuer(&der, &key_path)?))
                } else {
                    None
                };
                root(der, issuer)
            })
            .collect::<Result<Vec<_>, _>>()?;
        match roots.iter().find(|r| r.id == signer) {
            Some(r) if r.issuer.is_some() => {}
            Some(_) => {
                return Err(CertError::InvalidState {
                    path: dir.join("roots").join(&signer).join("key.pem"),
                    message: format!("missing: root {signer} signs, but its key is not there"),
                });
            }
            None => {
                return Err(CertError::InvalidState {
                    path: signer_path,
                    message: format!("names root {signer}, which is not in {BUNDLE}"),
                });
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            trust_domain: trust_domain.to_owned(),
            roots,
            signer: Signer::Root { id: signer },
        })
    }

    fn adopt_operator_root(dir: &Path, trust_domain: &str) -> Result<Self, CertError> {
        let key_path = dir.join(OPERATOR_ROOT_KEY);
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem)?;
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let bundle = read_bundle(&dir.join(BUNDLE))?;
        let mut roots = Vec::new();
        let mut signer = None;
        for der in bundle {
            let matches = x509_parser::parse_x509_certificate(&der)
                .is_ok_and(|(_, cert)| cert.public_key().raw == spki.as_slice());
            if matches && signer.is_none() {
                let issuer = Issuer::from_ca_cert_der(&der, KeyPair::from_pem(&key_pem)?)?;
                let r = root(der, Some(Arc::new(issuer)))?;
                store_root(dir, &r.id, &pem("CERTIFICATE", &r.der), &key_pem)?;
                signer = Some(r.id.clone());
                roots.push(r);
            } else {
                roots.push(root(der, None)?);
            }
        }
        let Some(id) = signer else {
            return Err(CertError::InvalidState {
                path: key_path,
                message: format!("is not the key of any certificate in {BUNDLE}"),
            });
        };
        let authority = Self {
            dir: dir.to_owned(),
            trust_domain: trust_domain.to_owned(),
            roots,
            signer: Signer::Root { id },
        };
        authority.write_signer()?;
        tracing::info!(root = %authority.signer_id().unwrap_or_default(), "adopted the operator's root CA");
        Ok(authority)
    }

    fn open_intermediate(dir: &Path, trust_domain: &str) -> Result<Self, CertError> {
        let chain_path = dir.join(INTERMEDIATE);
        let chain = read_bundle(&chain_path)?;
        let issuer = load_issuer(&chain[0], &dir.join(INTERMEDIATE_KEY))?;
        let roots = read_bundle(&dir.join(BUNDLE))?
            .into_iter()
            .map(|der| root(der, None))
            .collect::<Result<Vec<_>, _>>()?;
        let sha256 = sha256_hex(&chain[0]);
        let not_after_unix = not_after(&chain[0]).ok_or_else(|| CertError::InvalidState {
            path: chain_path.clone(),
            message: "cannot parse the certificate".into(),
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            trust_domain: trust_domain.to_owned(),
            roots,
            signer: Signer::Intermediate {
                chain,
                issuer: Arc::new(issuer),
                sha256,
                not_after_unix,
            },
        })
    }

    /// Issues a throwaway certificate and verifies it against the bundle.
    fn check_chain(&self) -> Result<(), CertError> {
        let key = KeyPair::generate()?;
        let id = format_service_id(&self.trust_domain, "probe", "probe");
        let issued = self.sign(&key_csr(&key, &id)?, &id, Duration::from_secs(60))?;
        let path = match &self.signer {
            Signer::Intermediate { .. } => self.dir.join(INTERMEDIATE),
            Signer::Root { .. } => self.dir.join(SIGNER),
        };
        let leaf = CertificateDer::from(issued.chain_der[0].clone());
        let intermediates: Vec<_> = issued.chain_der[1..]
            .iter()
            .map(|d| CertificateDer::from(d.clone()))
            .collect();
        let parsed = ParsedCertificate::try_from(&leaf).map_err(|e| CertError::InvalidState {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.root_store(),
            &intermediates,
            UnixTime::now(),
            algorithms.all,
        )
        .map_err(|e| CertError::InvalidState {
            path,
            message: format!("the signing CA does not chain to a root in {BUNDLE}: {e}"),
        })
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Every trusted root, DER, in bundle order.
    pub fn trust_bundle_der(&self) -> Vec<Vec<u8>> {
        self.roots.iter().map(|r| r.der.to_vec()).collect()
    }

    /// The trusted roots, as a rustls store.
    pub fn root_store(&self) -> RootCertStore {
        let mut store = RootCertStore::empty();
        let (added, ignored) =
            store.add_parsable_certificates(self.roots.iter().map(|r| r.der.clone()));
        if ignored > 0 {
            tracing::warn!(
                added,
                ignored,
                "some trust bundle certificates are unusable"
            );
        }
        store
    }

    /// The roots, with which one signs.
    pub fn roots(&self) -> Vec<RootInfo> {
        self.roots
            .iter()
            .map(|r| RootInfo {
                id: r.id.clone(),
                sha256: r.sha256.clone(),
                not_after_unix: r.not_after_unix,
                has_key: r.issuer.is_some(),
                signer: self.signer_id() == Some(r.id.as_str()),
            })
            .collect()
    }

    /// The id of the signing root; `None` when an intermediate signs.
    pub fn signer_id(&self) -> Option<&str> {
        match &self.signer {
            Signer::Root { id } => Some(id),
            Signer::Intermediate { .. } => None,
        }
    }

    /// The root id for a CA certificate's hex SHA-256, if it is a root of the bundle.
    pub fn root_id_of(&self, sha256: &str) -> Option<&str> {
        self.roots
            .iter()
            .find(|r| r.sha256 == sha256)
            .map(|r| r.id.as_str())
    }

    /// Hex SHA-256 of the DER of the CA certificate that signs now.
    pub fn issuer_sha256(&self) -> &str {
        match &self.signer {
            Signer::Root { id } => self
                .roots
                .iter()
                .find(|r| &r.id == id)
                .map_or("", |r| r.sha256.as_str()),
            Signer::Intermediate { sha256, .. } => sha256,
        }
    }

    /// The key that signs, its chain above the leaf, and its expiry.
    fn signing(&self) -> Option<(&Issuer<'static, KeyPair>, Vec<Vec<u8>>, i64)> {
        match &self.signer {
            Signer::Root { id } => {
                let r = self.roots.iter().find(|r| &r.id == id)?;
                Some((r.issuer.as_deref()?, Vec::new(), r.not_after_unix))
            }
            Signer::Intermediate {
                chain,
                issuer,
                not_after_unix,
                ..
            } => Some((
                issuer,
                chain.iter().map(|c| c.to_vec()).collect(),
                *not_after_unix,
            )),
        }
    }

    /// Signs a DER CSR for exactly `spiffe_id` (see [`DevCa::sign_csr`] for what is checked),
    /// valid from now for `lifetime` but never beyond the signing CA.
    ///
    /// [`DevCa::sign_csr`]: super::DevCa::sign_csr
    pub fn sign_csr_der(
        &self,
        csr_der: &[u8],
        spiffe_id: &str,
        lifetime: Duration,
    ) -> Result<Issued, CertError> {
        let csr = rcgen::CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(CertError::InvalidCsr)?;
        self.sign(&csr, spiffe_id, lifetime)
    }

    fn sign(
        &self,
        csr: &rcgen::CertificateSigningRequestParams,
        spiffe_id: &str,
        lifetime: Duration,
    ) -> Result<Issued, CertError> {
        let (issuer, above, ca_not_after) =
            self.signing().ok_or_else(|| CertError::InvalidState {
                path: self.dir.join(SIGNER),
                message: "the signer has no key".into(),
            })?;
        let ca_not_after =
            OffsetDateTime::from_unix_timestamp(ca_not_after).unwrap_or(OffsetDateTime::now_utc());
        let not_after = (OffsetDateTime::now_utc() + lifetime).min(ca_not_after);
        let csr = rcgen::CertificateSigningRequestParams {
            params: csr.params.clone(),
            public_key: csr.public_key.clone(),
        };
        let cert = sign_request(csr, spiffe_id, not_after, issuer)?;
        let mut chain_der = vec![cert.der().to_vec()];
        chain_der.extend(above);
        Ok(Issued {
            chain_der,
            not_after_unix: not_after.unix_timestamp(),
        })
    }

    /// Issues a certificate for `spiffe_id` with a key made here: the control plane's own.
    pub fn issue_own(
        &self,
        spiffe_id: &str,
        lifetime: Duration,
    ) -> Result<(Issued, PrivateKeyDer<'static>), CertError> {
        let key = KeyPair::generate()?;
        let issued = self.sign(&key_csr(&key, spiffe_id)?, spiffe_id, lifetime)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((issued, key))
    }

    /// Issues a serving certificate for `names` (DNS and IP SANs) with a key made here: the
    /// webhook's, which the API server verifies by host name against `ca.pem`. Valid from now
    /// for `lifetime`, but never beyond the signing CA.
    pub fn issue_serving(
        &self,
        names: &[ServingName],
        lifetime: Duration,
    ) -> Result<(Issued, PrivateKeyDer<'static>), CertError> {
        let (issuer, above, ca_not_after) =
            self.signing().ok_or_else(|| CertError::InvalidState {
                path: self.dir.join(SIGNER),
                message: "the signer has no key".into(),
            })?;
        let now = OffsetDateTime::now_utc();
        let ca_not_after = OffsetDateTime::from_unix_timestamp(ca_not_after).unwrap_or(now);
        let not_after = (now + lifetime).min(ca_not_after);
        let key = KeyPair::generate()?;
        let cert = serving_params(names, now - BACKDATE, not_after)?.signed_by(&key, issuer)?;
        let mut chain_der = vec![cert.der().to_vec()];
        chain_der.extend(above);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((
            Issued {
                chain_der,
                not_after_unix: not_after.unix_timestamp(),
            },
            key,
        ))
    }

    /// The trust bundle as PEM, exactly as `ca.pem` holds it.
    pub fn trust_bundle_pem(&self) -> String {
        self.roots
            .iter()
            .map(|r| pem("CERTIFICATE", &r.der))
            .collect()
    }

    // === rotation ===

    /// Generates a new root and adds it to the bundle (not yet signing). Returns the new CA and
    /// the root's id.
    pub fn add_root(&self) -> Result<(Self, String), RotationError> {
        self.managed()?;
        let root = new_root(&self.dir, &self.trust_domain)?;
        let id = root.id.clone();
        let mut next = self.clone();
        next.roots.push(root);
        next.write_bundle()?;
        Ok((next, id))
    }

    /// Makes root `id` the signer.
    pub fn use_root(&self, id: &str) -> Result<Self, RotationError> {
        self.managed()?;
        let root = self
            .roots
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| RotationError::UnknownRoot(id.to_owned()))?;
        if root.issuer.is_none() {
            return Err(RotationError::NoKey(id.to_owned()));
        }
        let mut next = self.clone();
        next.signer = Signer::Root { id: id.to_owned() };
        next.write_signer()?;
        Ok(next)
    }

    /// Removes root `id` from the bundle; its files move to `retired/<id>`.
    pub fn remove_root(&self, id: &str) -> Result<Self, RotationError> {
        self.managed()?;
        if !self.roots.iter().any(|r| r.id == id) {
            return Err(RotationError::UnknownRoot(id.to_owned()));
        }
        if self.signer_id() == Some(id) {
            return Err(RotationError::IsSigner(id.to_owned()));
        }
        let mut next = self.clone();
        next.roots.retain(|r| r.id != id);
        next.write_bundle()?;
        let from = self.dir.join("roots").join(id);
        if from.exists() {
            let retired = self.dir.join("retired");
            let moved =
                fs::create_dir_all(&retired).and_then(|()| fs::rename(&from, retired.join(id)));
            if let Err(e) = moved {
                tracing::warn!(root = id, error = %e, "removed root's files stay under roots/");
            }
        }
        Ok(next)
    }

    fn managed(&self) -> Result<(), RotationError> {
        match self.signer {
            Signer::Root { .. } => Ok(()),
            Signer::Intermediate { .. } => Err(RotationError::Intermediate),
        }
    }

    fn write_bundle(&self) -> Result<(), CertError> {
        write_atomic(
            &self.dir.join(BUNDLE),
            self.trust_bundle_pem().as_bytes(),
            0o644,
        )
    }

    fn write_signer(&self) -> Result<(), CertError> {
        if let Signer::Root { id } = &self.signer {
            write_atomic(&self.dir.join(SIGNER), format!("{id}\n").as_bytes(), 0o644)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print keys.
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .field(
                "roots",
                &self.roots.iter().map(|r| &r.id).collect::<Vec<_>>(),
            )
            .field("signer", &self.signer_id())
            .finish_non_exhaustive()
    }
}

fn root(
    der: CertificateDer<'static>,
    issuer: Option<Arc<Issuer<'static, KeyPair>>>,
) -> Result<Root, CertError> {
    let not_after_unix = not_after(&der).ok_or_else(|| CertError::InvalidState {
        path: PathBuf::from(BUNDLE),
        message: "holds a certificate that cannot be parsed".into(),
    })?;
    Ok(Root {
        id: root_id(&der),
        sha256: sha256_hex(&der),
        der,
        not_after_unix,
        issuer,
    })
}

fn new_root(dir: &Path, trust_domain: &str) -> Result<Root, CertError> {
    let key = KeyPair::generate()?;
    let tag = hex(&random_bytes::<4>());
    let params = root_params(trust_domain, Some(&tag));
    let cert = params.self_signed(&key)?;
    let key_pem = key.serialize_pem();
    let der = cert.der().clone();
    let r = root(der, Some(Arc::new(Issuer::new(params, key))))?;
    store_root(dir, &r.id, &cert.pem(), &key_pem)?;
    Ok(r)
}

fn store_root(dir: &Path, id: &str, cert_pem: &str, key_pem: &str) -> Result<(), CertError> {
    let roots = dir.join("roots");
    create_private_dir(&roots)?;
    let at = roots.join(id);
    create_private_dir(&at)?;
    write_atomic(&at.join("key.pem"), key_pem.as_bytes(), 0o600)?;
    write_atomic(&at.join("cert.pem"), cert_pem.as_bytes(), 0o644)
}

fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = fs::read(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::InvalidState {
            path: path.to_owned(),
            message: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CertError::InvalidState {
            path: path.to_owned(),
            message: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

fn load_issuer(
    cert: &CertificateDer<'_>,
    key_path: &Path,
) -> Result<Issuer<'static, KeyPair>, CertError> {
    let key = KeyPair::from_pem(&read(key_path)?).map_err(|e| CertError::InvalidState {
        path: key_path.to_owned(),
        message: format!("invalid key: {e}"),
    })?;
    Ok(Issuer::from_ca_cert_der(cert, key)?)
}

fn key_csr(
    key: &KeyPair,
    spiffe_id: &str,
) -> Result<rcgen::CertificateSigningRequestParams, CertError> {
    let der = mesh_api::certify::request_der(key, &[spiffe_id], None)?;
    rcgen::CertificateSigningRequestParams::from_der(&der.into()).map_err(CertError::InvalidCsr)
}

fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// PEM with `\n` line ends, as rcgen writes the files it makes.
fn pem(label: &str, der: &[u8]) -> String {
    let config = ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF);
    ::pem::encode_config(&::pem::Pem::new(label, der), config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        let der = CertificateDer::from(vec![1u8, 2, 3, 4, 5, 6, 7]);
        let text = pem("CERTIFICATE", &der);
        let back = CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(back, [der]);
    }

    #[test]
    fn pem_matches_what_rcgen_writes() {
        let key = KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap();
        assert_eq!(pem("CERTIFICATE", cert.der()), cert.pem());
    }

    #[test]
    fn generates_then_reloads_the_same_root() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::open(dir.path(), "mesh.local").unwrap();
        let again = Authority::open(dir.path(), "mesh.local").unwrap();
        assert_eq!(ca.trust_bundle_der(), again.trust_bundle_der());
        assert_eq!(ca.signer_id(), again.signer_id());
        let id = ca.signer_id().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let key = dir.path().join("roots").join(id).join("key.pem");
        let mode = fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn rotation_keeps_files_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::open(dir.path(), "mesh.local").unwrap();
        let old = ca.signer_id().unwrap().to_owned();
        let (ca, new) = ca.add_root().unwrap();
        assert_eq!(ca.trust_bundle_der().len(), 2);
        assert!(matches!(
            ca.remove_root(&old),
            Err(RotationError::IsSigner(_))
        ));
        let ca = ca.use_root(&new).unwrap();
        let ca = ca.remove_root(&old).unwrap();
        let reloaded = Authority::open(dir.path(), "mesh.local").unwrap();
        assert_eq!(reloaded.signer_id(), Some(new.as_str()));
        assert_eq!(reloaded.trust_bundle_der(), ca.trust_bundle_der());
        assert!(
            dir.path()
                .join("retired")
                .join(&old)
                .join("key.pem")
                .exists()
        );
    }

    #[test]
    fn operator_root_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let dev = super::super::DevCa::generate("mesh.local").unwrap();
        dev.write_to(dir.path()).unwrap();
        let ca = Authority::open(dir.path(), "mesh.local").unwrap();
        let bundle = CertificateDer::pem_slice_iter(dev.cert_pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(ca.trust_bundle_der(), [bundle[0].to_vec()]);
        let again = Authority::open(dir.path(), "mesh.local").unwrap();
        assert_eq!(again.signer_id(), ca.signer_id());
    }

    #[test]
    fn operator_intermediate_signs_and_refuses_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let root_key = KeyPair::generate().unwrap();
        let root_params = root_params("mesh.local", Some("op"));
        let root_cert = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let inter_key = KeyPair::generate().unwrap();
        let mut inter_params = super::super::x509::root_params("mesh.local", Some("intermediate"));
        inter_params.use_authority_key_identifier_extension = true;
        let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
        fs::write(dir.path().join("ca.pem"), root_cert.pem()).unwrap();
        fs::write(dir.path().join(INTERMEDIATE), inter.pem()).unwrap();
        fs::write(dir.path().join(INTERMEDIATE_KEY), inter_key.serialize_pem()).unwrap();
        let ca = Authority::open(dir.path(), "mesh.local").unwrap();
        assert_eq!(ca.signer_id(), None);
        assert_eq!(ca.issuer_sha256(), sha256_hex(inter.der()));
        let (issued, _) = ca
            .issue_own(
                "spiffe://mesh.local/ns/default/sa/a",
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(issued.chain_der.len(), 2);
        assert!(matches!(ca.add_root(), Err(RotationError::Intermediate)));

        // An intermediate that does not chain to ca.pem is refused at start.
        let other = tempfile::tempdir().unwrap();
        let stranger = DevCaLike::root();
        fs::write(other.path().join("ca.pem"), stranger).unwrap();
        fs::write(other.path().join(INTERMEDIATE), inter.pem()).unwrap();
        fs::write(
            other.path().join(INTERMEDIATE_KEY),
            inter_key.serialize_pem(),
        )
        .unwrap();
        let err = Authority::open(other.path(), "mesh.local").unwrap_err();
        assert!(err.to_string().contains("does not chain"), "{err}");
    }

    #[test]
    fn an_imported_root_signs_on_a_first_start_only() {
        let from = tempfile::tempdir().unwrap();
        let dev = super::super::DevCa::generate("mesh.local").unwrap();
        dev.write_to(from.path()).unwrap();
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("state");
        assert!(Authority::import_root(&dir, from.path()).unwrap());
        let ca = Authority::open(&dir, "mesh.local").unwrap();
        let root = CertificateDer::pem_slice_iter(dev.cert_pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(ca.trust_bundle_der(), [root[0].to_vec()]);
        assert_eq!(
            ca.trust_bundle_pem(),
            fs::read_to_string(dir.join("ca.pem")).unwrap()
        );
        // The state directory has a CA now: another root offered later is not taken.
        let other = tempfile::tempdir().unwrap();
        super::super::DevCa::generate("mesh.local")
            .unwrap()
            .write_to(other.path())
            .unwrap();
        assert!(!Authority::import_root(&dir, other.path()).unwrap());
        let again = Authority::open(&dir, "mesh.local").unwrap();
        assert_eq!(again.trust_bundle_der(), ca.trust_bundle_der());
        // A directory without the key is named.
        let empty = tempfile::tempdir().unwrap();
        let err = Authority::import_root(&state.path().join("new"), empty.path()).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }

    #[test]
    fn a_serving_certificate_names_its_hosts_and_chains_to_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::open(dir.path(), "mesh.local").unwrap();
        let names = [
            ServingName::parse("mesh-control-plane.mesh-system.svc").unwrap(),
            ServingName::parse("127.0.0.1").unwrap(),
        ];
        let (issued, _) = ca.issue_serving(&names, Duration::from_secs(3600)).unwrap();
        let leaf = CertificateDer::from(issued.chain_der[0].clone());
        let parsed = ParsedCertificate::try_from(&leaf).unwrap();
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &ca.root_store(),
            &[],
            UnixTime::now(),
            algorithms.all,
        )
        .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let text = format!("{:?}", san.value.general_names);
        assert!(
            text.contains("mesh-control-plane.mesh-system.svc"),
            "{text}"
        );
        assert!(text.contains("IPAddress([127, 0, 0, 1])"), "{text}");
        assert!(!text.contains("spiffe"), "{text}");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert!(lifetime <= 3600 + 300, "{lifetime}");
    }

    #[test]
    fn serving_names_are_checked() {
        assert_eq!(
            ServingName::parse("::1").unwrap(),
            ServingName::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            ServingName::parse("Webhook.Example").unwrap(),
            ServingName::Dns("webhook.example".into())
        );
        for bad in ["", "a..b", "-a.b", "a_b.c", "a b", &"x".repeat(64)] {
            let err = ServingName::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    struct DevCaLike;
    impl DevCaLike {
        fn root() -> String {
            super::super::DevCa::generate("mesh.local")
                .unwrap()
                .cert_pem()
                .to_owned()
        }
    }
}
