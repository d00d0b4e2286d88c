//! Test support for the mesh: real sockets, real TLS, nothing mocked.
//!
//! # Layout
//! - [`TestMesh`]: a trust domain with a CA minted at run time and a temporary directory for
//!   certificates and bootstrap files.
//! - [`SidecarBuilder`] / [`Sidecar`]: a sidecar started in-process from a real bootstrap file,
//!   on listeners bound to 127.0.0.1 port 0; stopped when dropped.
//! - [`app`]: upstream apps on port 0: the echo app, gated, faulty and relaying apps, or any
//!   handler.
//! - [`echo`]: the echo app's handler, which describes each request (or streams its body
//!   back); also the `echo-app` binary of the examples and benchmarks.
//! - [`server`]: serves a handler over HTTP/1.1 and HTTP/2, with a bounded drain.
//! - [`client`]: HTTP/1.1 and HTTP/2 clients for talking to an outbound listener.
//! - [`grpc`]: a tonic service with unary and server-streaming calls.
//! - [`metrics`]: the value of one series in Prometheus text.
//! - [`otlp`]: an OTLP trace collector (gRPC and HTTP/protobuf) that keeps what it receives.
//! - [`process`]: spawned binaries, killed and reaped when the test ends.
//! - [`netns`]: two hosts on one machine, network namespaces joined by a veth pair, or one
//!   namespace alone (root).
//! - [`tcp`]: a TCP app that replies once its client has finished sending, and a client round
//!   trip, for `protocol: tcp` destinations.
//! - [`eventually`]: bounded polling for conditions that become true asynchronously.
//! - [`free_port`]: a loopback address where nothing listens, for a peer that is down or a
//!   process to bind later.
//!
//! Helpers `expect` freely: they run only in tests, where a panic is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

pub mod app;
pub mod client;
pub mod echo;
pub mod grpc;
pub mod metrics;
pub mod netns;
pub mod otlp;
pub mod process;
pub mod server;
pub mod tcp;
mod wait;

pub use self::wait::{Progress, eventually};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mesh_control_plane::ca::{DEFAULT_LEAF_LIFETIME, DevCa, Leaf};
use mesh_sidecar::Listeners;
use mesh_sidecar::config::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The trust domain of test meshes.
pub const TRUST_DOMAIN: &str = "mesh.local";

/// Logs to the test's captured output once per process; `RUST_LOG` controls the level.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mesh_sidecar=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A CA and a scratch directory shared by the sidecars of one test.
pub struct TestMesh {
    ca: DevCa,
    dir: tempfile::TempDir,
}

impl TestMesh {
    /// A new mesh with a fresh root CA.
    pub fn new() -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = DevCa::generate(TRUST_DOMAIN).expect("generate test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("write ca.pem");
        Self { ca, dir }
    }

    /// The mesh's CA.
    pub fn ca(&self) -> &DevCa {
        &self.ca
    }

    /// The scratch directory (certificates, bootstrap files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The trust bundle file of this mesh.
    pub fn trust_bundle(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// A valid leaf for `service` from this mesh's CA.
    pub fn leaf(&self, service: &str) -> Leaf {
        self.ca
            .issue_service("default", service, DEFAULT_LEAF_LIFETIME)
            .expect("issue leaf")
    }

    /// A leaf for `service` obtained the way a workload will: a key pair made here and a CSR
    /// signed by the mesh's CA, which never sees the key.
    pub fn leaf_from_csr(&self, service: &str) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("key pair");
        let id = self.ca.spiffe_id("default", service).expect("identity");
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names =
            vec![rcgen::SanType::URI(id.clone().try_into().expect("URI SAN"))];
        let csr = params
            .serialize_request(&key)
            .and_then(|r| r.pem())
            .expect("CSR");
        let signed = self
            .ca
            .sign_csr(&csr, &id, DEFAULT_LEAF_LIFETIME)
            .expect("sign CSR");
        Leaf {
            cert_pem: signed.cert_pem,
            key_pem: key.serialize_pem(),
        }
    }

    /// Starts `inventory` (the echo app behind its sidecar) and `orders` calling it, after each
    /// builder is adjusted by its closure. Returns `(orders, inventory)`.
    pub async fn pair<'a>(
        &'a self,
        orders: impl FnOnce(SidecarBuilder<'a>) -> SidecarBuilder<'a>,
        inventory: impl FnOnce(SidecarBuilder<'a>) -> SidecarBuilder<'a>,
    ) -> (Sidecar, Sidecar) {
        let app = app::echo("inventory").await;
        let inventory = inventory(self.sidecar("inventory").app(app)).start().await;
        let orders = orders(
            self.sidecar("orders")
                .destination("inventory", &[inventory.inbound]),
        )
        .start()
        .await;
        (orders, inventory)
    }

    /// Starts describing a sidecar for `service`.
    pub fn sidecar(&self, service: &str) -> SidecarBuilder<'_> {
        SidecarBuilder {
            mesh: self,
            service: service.to_owned(),
            app: None,
            destinations: Vec::new(),
            inbound_at: None,
            leaf: None,
            trust_bundle: None,
            extra: String::new(),
            control_plane: None,
            advertise: None,
            outbound_listener: None,
            inbound_listener: None,
        }
    }
}

impl Default for TestMesh {
    fn default() -> Self {
        Self::new()
    }
}

/// One destination of a sidecar under test.
struct Dest {
    name: String,
    endpoints: Vec<SocketAddr>,
    identity: Option<String>,
    /// YAML lines of the destination's policy (timeout, retries, ...).
    policy: String,
}

/// Describes one sidecar before it starts.
pub struct SidecarBuilder<'a> {
    mesh: &'a TestMesh,
    service: String,
    app: Option<SocketAddr>,
    destinations: Vec<Dest>,
    inbound_at: Option<SocketAddr>,
    leaf: Option<Leaf>,
    trust_bundle: Option<PathBuf>,
    extra: String,
    control_plane: Option<ControlPlaneRef>,
    advertise: Option<String>,
    outbound_listener: Option<TcpListener>,
    inbound_listener: Option<TcpListener>,
}

/// Where a sidecar finds its control plane.
#[derive(Clone, Debug)]
pub struct ControlPlaneRef {
    /// API address.
    pub address: SocketAddr,
    /// `ca.pem` of the control plane's state directory.
    pub trust_anchor: PathBuf,
    /// The token file of the sidecar's service: a join token, or in Kubernetes mode a projected
    /// service-account token.
    pub token_file: PathBuf,
}

impl SidecarBuilder<'_> {
    /// Takes certificate and destinations from a control plane instead of files.
    pub fn control_plane(mut self, control_plane: ControlPlaneRef) -> Self {
        self.control_plane = Some(control_plane);
        self
    }
    /// The local app (default: an address where nothing listens).
    pub fn app(mut self, addr: SocketAddr) -> Self {
        self.app = Some(addr);
        self
    }

    /// A destination and its sidecars' inbound addresses.
    pub fn destination(self, name: &str, endpoints: &[SocketAddr]) -> Self {
        self.destination_with_policy(name, endpoints, "")
    }

    /// A destination with policy, written as YAML lines under the destination, e.g.
    /// `"timeout: 2s\nretries: { attempts: 3 }"`.
    pub fn destination_with_policy(
        mut self,
        name: &str,
        endpoints: &[SocketAddr],
        policy: &str,
    ) -> Self {
        self.destinations.push(Dest {
            name: name.to_owned(),
            endpoints: endpoints.to_vec(),
            identity: None,
            policy: policy.to_owned(),
        });
        self
    }

    /// Binds the inbound listener at `addr` instead of a fresh port (an endpoint that comes
    /// back where it was).
    pub fn inbound_at(mut self, addr: SocketAddr) -> Self {
        self.inbound_at = Some(addr);
        self
    }

    /// A destination whose sidecars must present `identity`.
    pub fn destination_with_identity(
        mut self,
        name: &str,
        endpoints: &[SocketAddr],
        identity: &str,
    ) -> Self {
        self.destinations.push(Dest {
            name: name.to_owned(),
            endpoints: endpoints.to_vec(),
            identity: Some(identity.to_owned()),
            policy: String::new(),
        });
        self
    }

    /// Present this certificate and key instead of a fresh valid leaf.
    pub fn leaf(mut self, leaf: Leaf) -> Self {
        self.leaf = Some(leaf);
        self
    }

    /// Trust this bundle instead of the mesh's.
    pub fn trust_bundle(mut self, path: PathBuf) -> Self {
        self.trust_bundle = Some(path);
        self
    }

    /// Serves the outbound side on `listener` instead of a fresh one on 127.0.0.1 (one bound
    /// inside a network namespace, say).
    pub fn outbound_listener(mut self, listener: TcpListener) -> Self {
        self.outbound_listener = Some(listener);
        self
    }

    /// Serves the inbound side on `listener` instead of a fresh one on 127.0.0.1 (one bound
    /// inside a network namespace, for peers there).
    pub fn inbound_listener(mut self, listener: TcpListener) -> Self {
        self.inbound_listener = Some(listener);
        self
    }

    /// Registers `address` (`listen.advertise`: `IP` or `IP:PORT`) instead of the inbound one.
    pub fn advertise(mut self, address: &str) -> Self {
        self.advertise = Some(address.to_owned());
        self
    }

    /// Appends raw lines to the bootstrap file (e.g. `drain_timeout: 300ms`, which replaces the
    /// default 5 s).
    pub fn extra_yaml(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self
    }

    /// Writes the certificate files and the bootstrap file for these listen addresses.
    pub fn write_config(
        &self,
        outbound: SocketAddr,
        inbound: SocketAddr,
        admin: SocketAddr,
    ) -> PathBuf {
        let dir = self.mesh.dir();
        let name = format!("{}-{}", self.service, inbound.port());
        let app = self.app.unwrap_or_else(free_port);
        let advertise = self
            .advertise
            .as_ref()
            .map(|a| format!(", advertise: \"{a}\""))
            .unwrap_or_default();
        let listen = format!(
            "listen: {{ outbound: \"{outbound}\", inbound: \"{inbound}\", admin: \"{admin}\"{advertise} }}"
        );
        // 5 s unless the extra lines set their own.
        let drain = if self.extra.contains("drain_timeout:") {
            ""
        } else {
            "drain_timeout: 5s\n"
        };
        if let Some(cp) = &self.control_plane {
            let yaml = format!(
                "service: {service}\ntrust_domain: {td}\napp: {app}\n{listen}\n\
                 control_plane: {{ address: \"{address}\", trust_anchor: {anchor}, token_file: {token} }}\n\
                 {drain}{extra}",
                service = self.service,
                td = TRUST_DOMAIN,
                address = cp.address,
                anchor = cp.trust_anchor.display(),
                token = cp.token_file.display(),
                extra = self.extra,
            );
            let path = dir.join(format!("{name}.yaml"));
            std::fs::write(&path, yaml).expect("write bootstrap file");
            return path;
        }
        let leaf = self
            .leaf
            .clone()
            .unwrap_or_else(|| self.mesh.leaf(&self.service));
        let (cert, key) = leaf.write_to(dir, &name).expect("write leaf");
        let bundle = self
            .trust_bundle
            .clone()
            .unwrap_or_else(|| self.mesh.trust_bundle());
        let mut yaml = format!(
            "service: {service}\ntrust_domain: {td}\napp: {app}\n{listen}\n\
             tls: {{ cert: {cert}, key: {key}, trust_bundle: {bundle} }}\n{drain}",
            service = self.service,
            td = TRUST_DOMAIN,
            cert = cert.display(),
            key = key.display(),
            bundle = bundle.display(),
        );
        yaml.push_str(&self.extra);
        if !self.destinations.is_empty() {
            yaml.push_str("destinations:\n");
            for dest in &self.destinations {
                let list: Vec<String> = dest.endpoints.iter().map(|e| format!("\"{e}\"")).collect();
                yaml.push_str(&format!(
                    "  {}:\n    endpoints: [{}]\n",
                    dest.name,
                    list.join(", ")
                ));
                if let Some(id) = &dest.identity {
                    yaml.push_str(&format!("    identity: {id}\n"));
                }
                for line in dest.policy.lines() {
                    yaml.push_str(&format!("    {line}\n"));
                }
            }
        }
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("write bootstrap file");
        path
    }

    /// Binds listeners on port 0, writes the bootstrap file, and runs the sidecar.
    pub async fn start(mut self) -> Sidecar {
        let bind = || async {
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0")
        };
        let inbound = match (self.inbound_listener.take(), self.inbound_at) {
            (Some(listener), _) => listener,
            (None, Some(addr)) => TcpListener::bind(addr)
                .await
                .expect("bind the inbound address"),
            (None, None) => bind().await,
        };
        let outbound = match self.outbound_listener.take() {
            Some(listener) => listener,
            None => bind().await,
        };
        let admin = bind().await;
        let addr = |l: &TcpListener| l.local_addr().expect("bound address");
        let addresses = (addr(&outbound), addr(&inbound), addr(&admin));
        let listeners = Listeners {
            outbound,
            inbound: Some(inbound),
            admin,
        };
        let (outbound, inbound, admin) = addresses;
        let path = self.write_config(outbound, inbound, admin);
        let config = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let credentials = config.load_credentials().unwrap_or_else(|e| panic!("{e}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(mesh_sidecar::run(config, credentials, listeners, async {
            let _ = stopped.await;
        }));
        Sidecar {
            service: self.service,
            outbound,
            inbound,
            admin,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// A running in-process sidecar. Dropping it starts its shutdown.
pub struct Sidecar {
    pub service: String,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Sidecar {
    /// `http://<outbound>`.
    pub fn outbound_url(&self) -> String {
        format!("http://{}", self.outbound)
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The Prometheus text of its admin `/metrics`.
    pub async fn metrics(&self) -> String {
        client::text(client::get_url(&self.admin_url("/metrics")).await).await
    }

    /// Takes the run task, to await its end after a shutdown triggered elsewhere.
    pub fn take_task(&mut self) -> JoinHandle<anyhow::Result<()>> {
        self.task.take().expect("task not yet taken")
    }

    /// Signals shutdown and waits (at most 10 s) for the drain to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        drop(self.stop.take());
        let task = self.take_task();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .map_err(|_| anyhow::anyhow!("sidecar did not stop within 10s"))??
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

/// An address on 127.0.0.1 where nothing listens (bound, then released), for a peer that is
/// down or for a process to bind later.
///
/// The port is chosen below Linux's ephemeral range (32768-60999): every other test binds port 0,
/// which the kernel serves from that range, so no parallel test can take this port before the
/// test that picked it binds it again. Within one process no port is handed out twice (until
/// the range is used up): picks step through the range from a random start, so a caller taking
/// several ports before binding any (a sidecar's three listeners) never gets the same one twice.
pub fn free_port() -> SocketAddr {
    let span = u32::from(FREE_PORTS.end - FREE_PORTS.start);
    let _ = NEXT_PICK.compare_exchange(
        UNSET,
        fastrand::u32(0..span),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..1000 {
        let offset = NEXT_PICK.fetch_add(1, Ordering::Relaxed) % span;
        let port = FREE_PORTS.start + u16::try_from(offset).expect("offset below the span");
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("address");
        }
    }
    panic!("no free port in 20000-32000 after 1000 tries")
}

/// Where [`free_port`] picks from.
const FREE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// [`free_port`]'s next pick, an offset into [`FREE_PORTS`]; [`UNSET`] until the first pick.
static NEXT_PICK: AtomicU32 = AtomicU32::new(UNSET);
const UNSET: u32 = u32::MAX;

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_picked_in_one_process_are_all_different() {
        // 2,000 random picks out of 12,000 ports would repeat one almost surely.
        let picked: std::collections::HashSet<u16> =
            (0..2000).map(|_| super::free_port().port()).collect();
        assert_eq!(picked.len(), 2000);
    }
}
