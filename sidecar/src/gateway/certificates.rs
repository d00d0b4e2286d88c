//! The certificates of an HTTPS gateway listener: chosen per connection by SNI among their
//! DNS names (wildcards included; no SNI or no match: the first), and reloaded when their
//! files change. The files are read every second; a changed pair that does not load is
//! refused with a log line naming the file, and the certificate served before stays.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::CertificatePaths;

/// How often the files are read for changes.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A certificate file pair that cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertificateError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// One loaded certificate: its key, its DNS names, and the file contents it came from.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// Lowercase DNS names; a wildcard as `*.suffix`.
    names: Vec<String>,
    files: (Vec<u8>, Vec<u8>),
}

/// Picks a listener's certificate by SNI; swapped live as files change.
#[derive(Debug)]
pub(crate) struct SniCertificates {
    paths: Vec<CertificatePaths>,
    loaded: ArcSwap<Vec<Arc<Loaded>>>,
    provider: Arc<CryptoProvider>,
}

// === impl SniCertificates ===

impl SniCertificates {
    /// Loads every pair of `paths`; the first that fails is the error.
    pub(crate) fn load(paths: &[CertificatePaths]) -> Result<Arc<Self>, CertificateError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = paths
            .iter()
            .map(|p| {
                let files = (read(&p.cert)?, read(&p.key)?);
                load(p, &files, &provider).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            paths: paths.to_vec(),
            loaded: ArcSwap::from_pointee(loaded),
            provider,
        }))
    }

    /// The server config of the listener: these certificates, ALPN h2 and http/1.1.
    pub(crate) fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reads the files every second until `stop`, swapping in each pair that changed and
    /// loads.
    pub(crate) fn watch(self: Arc<Self>, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => self.reload(),
                }
            }
        });
    }

    /// Swaps in each pair whose files changed and load; logs the ones that do not.
    fn reload(&self) {
        let current = self.loaded.load_full();
        let mut next: Vec<Arc<Loaded>> = current.as_ref().clone();
        let mut changed = false;
        for (i, paths) in self.paths.iter().enumerate() {
            let files = match (read(&paths.cert), read(&paths.key)) {
                (Ok(cert), Ok(key)) => (cert, key),
                (Err(error), _) | (_, Err(error)) => {
                    ::tracing::warn!(%error, "certificate not reloaded; the one loaded before stays");
                    continue;
                }
            };
            if next[i].files == files {
                continue;
            }
            match load(paths, &files, &self.provider) {
                Ok(loaded) => {
                    ::tracing::info!(cert = %paths.cert.display(), names = ?loaded.names,
                        "gateway certificate reloaded");
                    next[i] = Arc::new(loaded);
                    changed = true;
                }
                Err(error) => {
                    ::tracing::warn!(%error,
                        "new gateway certificate refused; the one loaded before stays");
                    // Remembered, so one bad pair is reported once, not every second.
                    next[i] = Arc::new(Loaded {
                        key: next[i].key.clone(),
                        names: next[i].names.clone(),
                        files,
                    });
                    changed = true;
                }
            }
        }
        if changed {
            self.loaded.store(Arc::new(next));
        }
    }

    /// The certificate for `sni`: an exact name, else a wildcard, else the first.
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.loaded.load();
        let first = loaded.first()?;
        let Some(sni) = sni.map(str::to_ascii_lowercase) else {
            return Some(first.key.clone());
        };
        let exact = loaded.iter().find(|l| l.names.contains(&sni));
        let wildcard = || {
            let (_, parent) = sni.split_once('.')?;
            let wanted = format!("*.{parent}");
            loaded.iter().find(|l| l.names.contains(&wanted))
        };
        Some(exact.or_else(wildcard).unwrap_or(first).key.clone())
    }
}

impl ResolvesServerCert for SniCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|cause| CertificateError::Read {
        path: path.display().to_string(),
        cause,
    })
}

/// Parses a pair: the chain, its key (which must match), the leaf's DNS names.
fn load(
    paths: &CertificatePaths,
    files: &(Vec<u8>, Vec<u8>),
    provider: &CryptoProvider,
) -> Result<Loaded, CertificateError> {
    let invalid = |path: &Path, message: String| CertificateError::Invalid {
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&files.0)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&paths.cert, format!("bad PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(&paths.cert, "no certificate found".into()));
    };
    let key = PrivateKeyDer::from_pem_slice(&files.1)
        .map_err(|e| invalid(&paths.key, format!("no private key: {e}")))?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid(&paths.key, format!("unusable private key: {e}")))?;
    let key = CertifiedKey::new(chain.clone(), signer);
    key.keys_match().map_err(|e| {
        invalid(
            &paths.key,
            format!("not the key of {}: {e}", paths.cert.display()),
        )
    })?;
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| invalid(&paths.cert, format!("bad certificate: {e}")))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Loaded {
        key: Arc::new(key),
        names,
        files: files.clone(),
    })
}
