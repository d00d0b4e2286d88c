//! The gateway configurations: outside HTTPS entering the mesh. The load client speaks TLS to a
//! gateway with the edge certificate (a host name under a CA of its own, as an operator's
//! certificate would be), which routes by host name and calls `inventory`'s sidecar over
//! HTTP/2 with mutual TLS under its own SPIFFE identity; that sidecar hands the request to the
//! app. *ours-gateway* is our sidecar binary in gateway mode in front of our sidecar;
//! *envoy-gateway* is an Envoy with a TLS listener and a virtual host for the same name in
//! front of an Envoy, with the same certificates.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mesh_testkit::free_port;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use super::dial::EdgeTls;
use super::topology::{
    Carry, Proxy, READY_LIMIT, Running, Runtime, SERVER, TRUST_DOMAIN, sidecar_yaml,
    start_envoy_pair, start_proxy,
};
use super::{Error, load};

/// The gateway's service name: its identity on the mTLS hop.
pub(crate) const GATEWAY: &str = "gateway";
/// The host name outside clients ask for, by SNI and in `Host`.
pub(crate) const EDGE_HOST: &str = "shop.bench.example";
/// The edge certificate and key, and the CA the load client trusts for them, in the run's
/// directory.
pub(crate) const EDGE_CERT: &str = "edge.pem";
pub(crate) const EDGE_KEY: &str = "edge-key.pem";
const EDGE_CA: &str = "edge-ca.pem";

/// Writes the edge CA and a certificate for [`EDGE_HOST`] signed by it into `dir`.
pub(crate) fn write_edge_certs(dir: &Path) -> Result<(), Error> {
    let cert = |e: rcgen::Error| Error::Certs(format!("edge certificate: {e}"));
    let ca_key = KeyPair::generate().map_err(cert)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "benchmark edge CA");
    let ca = ca_params.self_signed(&ca_key).map_err(cert)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().map_err(cert)?;
    let leaf = CertificateParams::new(vec![EDGE_HOST.to_owned()])
        .map_err(cert)?
        .signed_by(&key, &issuer)
        .map_err(cert)?;
    for (name, text) in [
        (EDGE_CA, ca.pem()),
        (EDGE_CERT, leaf.pem()),
        (EDGE_KEY, key.serialize_pem()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io(path.display(), e))?;
    }
    Ok(())
}

/// The load client's TLS: trusts the edge CA only, asks for [`EDGE_HOST`], offers HTTP/1.1.
fn edge_tls(dir: &Path) -> Result<EdgeTls, Error> {
    let path = dir.join(EDGE_CA);
    let ca = CertificateDer::from_pem_file(&path)
        .map_err(|e| Error::Certs(format!("{}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca)
        .map_err(|e| Error::Certs(format!("{}: {e}", path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Certs(format!("client TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name =
        ServerName::try_from(EDGE_HOST).map_err(|e| Error::Certs(format!("{EDGE_HOST}: {e}")))?;
    Ok(EdgeTls {
        connector: TlsConnector::from(Arc::new(config)),
        name,
    })
}

/// Our gateway (the sidecar binary in gateway mode, one worker) in front of `inventory`'s
/// sidecar in front of the app.
pub(crate) async fn start_ours(
    bin_dir: &Path,
    dir: &Path,
    app: SocketAddr,
) -> Result<Running, Error> {
    let sidecar = super::sidecar_binary(bin_dir)?;
    let binary = Proxy::Sidecar(&sidecar, Runtime::Default);
    let [i_out, i_in, i_admin] = std::array::from_fn(|_| free_port());
    let inventory = sidecar_yaml(SERVER, app, [i_out, i_in, i_admin], "{}");
    let inventory = start_proxy(binary, dir, "gateway-inventory", &inventory, i_admin).await?;
    let [g_out, g_admin, websecure] = std::array::from_fn(|_| free_port());
    let yaml = format!(
        "service: {GATEWAY}\ntrust_domain: {TRUST_DOMAIN}\n\
         listen: {{ outbound: \"{g_out}\", admin: \"{g_admin}\" }}\n\
         tls: {{ cert: {GATEWAY}.pem, key: {GATEWAY}-key.pem, trust_bundle: ca.pem }}\n\
         destinations: {{ {SERVER}: {{ endpoints: [\"{i_in}\"] }} }}\n\
         gateway:\n\
         \x20 listeners:\n\
         \x20   - name: websecure\n\
         \x20     address: \"{websecure}\"\n\
         \x20     protocol: HTTPS\n\
         \x20     tls: {{ certificates: [{{ cert: {EDGE_CERT}, key: {EDGE_KEY} }}] }}\n\
         \x20 routes:\n\
         \x20   - name: shop\n\
         \x20     parentRefs: [{{ name: websecure }}]\n\
         \x20     hostnames: [{EDGE_HOST}]\n\
         \x20     rules: [{{ backendRefs: [{{ name: {SERVER} }}] }}]\n"
    );
    let gateway = start_proxy(binary, dir, "gateway", &yaml, g_admin).await?;
    let running = Running {
        entry: websecure,
        proxies: vec![("gateway", gateway), ("server side", inventory)],
        namespaced: None,
        edge: Some(edge_tls(dir)?),
    };
    load::probe(&running.dial(), READY_LIMIT).await?;
    Ok(running)
}

/// An Envoy gateway (TLS listener, virtual host for [`EDGE_HOST`], one worker) in front of an
/// Envoy in front of the app.
pub(crate) async fn start_envoy(
    envoy: &Path,
    dir: &Path,
    app: SocketAddr,
) -> Result<Running, Error> {
    let mut running = start_envoy_pair(envoy, dir, app, Carry::Edge, "envoy-gateway").await?;
    running.edge = Some(edge_tls(dir)?);
    load::probe(&running.dial(), READY_LIMIT).await?;
    Ok(running)
}
