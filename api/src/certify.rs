//! A workload's certificate from the control plane: a key pair made here, a CSR for its SPIFFE
//! ID, and `Identity.Certify` with the service's join token.
//!
//! Only the CSR (public key, requested SPIFFE ID, proof of possession) is sent:
//! `CertifyRequest` has no field that could carry a private key. Sidecars and the control
//! plane's own test client both certify through here.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tonic::transport::Channel;

use crate::proto::v1;
use crate::spiffe::SpiffeId;

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// The key pair or CSR could not be made.
    #[error("cannot make a certificate signing request for {id}: {source}")]
    Csr {
        /// The identity asked for.
        id: String,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// The control plane refused or could not be reached.
    #[error("control plane: {}: {}", .0.code(), .0.message())]
    Refused(#[from] tonic::Status),
}

/// A workload's key pair and the certificate the control plane issued for it.
pub struct Workload {
    /// The private key, made here.
    pub key: KeyPair,
    /// Leaf first, then intermediates, DER.
    pub chain_der: Vec<Vec<u8>>,
    /// The roots the control plane trusted when it issued, DER.
    pub trust_bundle_der: Vec<Vec<u8>>,
    /// Expiry of the leaf, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Workload")
            .field("not_after_unix", &self.not_after_unix)
            .finish_non_exhaustive()
    }
}

impl Workload {
    /// The chain and key, as a TLS client certificate.
    pub fn client_cert(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain(), self.private_key())
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain_der
            .iter()
            .cloned()
            .map(CertificateDer::from)
            .collect()
    }

    /// The roots the control plane trusted when it issued.
    pub fn trust_bundle(&self) -> Vec<CertificateDer<'static>> {
        self.trust_bundle_der
            .iter()
            .cloned()
            .map(CertificateDer::from)
            .collect()
    }

    /// The private key, PKCS#8.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

/// A DER CSR signed by `key`, naming `uris` as its URI SANs and `common_name` as its subject
/// (the CA ignores the subject; it helps a human reading the request).
pub fn request_der(
    key: &KeyPair,
    uris: &[&str],
    common_name: Option<&str>,
) -> Result<Vec<u8>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    if let Some(name) = common_name {
        params.distinguished_name.push(DnType::CommonName, name);
    }
    params.subject_alt_names = uris
        .iter()
        .map(|u| Ok(SanType::URI((*u).try_into()?)))
        .collect::<Result<_, rcgen::Error>>()?;
    Ok(params.serialize_request(key)?.der().to_vec())
}

/// A new P-256 key pair and a DER CSR for it; see [`request_der`].
pub fn key_and_request(
    uris: &[&str],
    common_name: Option<&str>,
) -> Result<(KeyPair, Vec<u8>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let der = request_der(&key, uris, common_name)?;
    Ok((key, der))
}

/// Asks the control plane on `channel` for a certificate for `id`, the identity of `service`,
/// with its join token. The channel needs no client certificate.
pub async fn certify(
    channel: Channel,
    service: &str,
    id: &SpiffeId,
    token: &str,
) -> Result<Workload, CertifyError> {
    let (key, csr_der) =
        key_and_request(&[id.as_str()], Some(service)).map_err(|source| CertifyError::Csr {
            id: id.to_string(),
            source,
        })?;
    let response = v1::identity_client::IdentityClient::new(channel)
        .certify(v1::CertifyRequest {
            service: service.to_owned(),
            token: token.to_owned(),
            csr_der,
        })
        .await?
        .into_inner();
    Ok(Workload {
        key,
        chain_der: response.chain_der,
        trust_bundle_der: response.trust_bundle_der,
        not_after_unix: response.not_after_unix,
    })
}

#[cfg(test)]
mod tests {
    use rcgen::CertificateSigningRequestParams;
    use rustls::pki_types::CertificateSigningRequestDer;

    use super::*;

    #[test]
    fn the_request_names_the_identity_and_the_service_and_is_signed() {
        let id = "spiffe://mesh.local/ns/default/sa/orders";
        let (_, der) = key_and_request(&[id], Some("orders")).unwrap();
        // Parsing checks the signature: the proof that the requester holds the key.
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
                .unwrap();
        assert!(
            matches!(
                csr.params.subject_alt_names.as_slice(),
                [SanType::URI(uri)] if uri.as_str() == id
            ),
            "{:?}",
            csr.params.subject_alt_names
        );
        let names: Vec<_> = csr.params.distinguished_name.iter().collect();
        assert_eq!(names.len(), 1);
        assert_eq!(names[0].0, &DnType::CommonName);
    }

    #[tokio::test]
    async fn a_refusal_names_the_control_plane() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let id: SpiffeId = "spiffe://mesh.local/ns/default/sa/orders".parse().unwrap();
        let err = certify(channel, "orders", &id, "token").await.unwrap_err();
        assert!(matches!(err, CertifyError::Refused(_)), "{err:?}");
        assert!(err.to_string().starts_with("control plane: "), "{err}");
    }
}
