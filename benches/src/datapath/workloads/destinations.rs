//! A destination table of 1,000 services: the client-side proxy knows `svc-0` … `svc-999`, all
//! served by the same server-side proxy, and the load client's keep-alive GETs name a different
//! one each time (`Host: svc-N`, N cycling), so every request looks its destination up in a
//! large table. What it costs: CPU per request and added latency beside the one-destination
//! path, and memory for the table (the client-side proxy's RSS after start and its peak).
//!
//! In both meshes each destination has its own endpoint pool: our sidecar an endpoint (with its
//! TLS client configuration, checking the destination's identity) per destination, Envoy a
//! cluster per service. So once every name was called, the client side holds a pooled mTLS
//! connection per destination to the one peer. The run counts them (`mesh_connections`), with
//! the server side's connections to the app (`app_connections`), which stay as many as requests
//! in flight whatever the names (one pool to the app in each mesh).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use http::header::HOST;
use http_body_util::{BodyExt, Empty};
use mesh_testkit::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::super::dial::Dial;
use super::super::load::{self, Sender};
use super::super::topology::{
    self, CLIENT, Carry, Proxy, READY_LIMIT, Running, Runtime, SERVER, TRUST_DOMAIN, pem, socket,
};
use super::super::{BODY, Error, Topology};
use super::{Exchange, WorkloadOptions, start_plain};

/// Services in the client side's table.
pub(crate) const DESTINATIONS: usize = 1000;
/// A request that takes longer than this counts as an error, as in `load`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections that call every destination once after start.
const PRIMING_CONNECTIONS: usize = 8;

/// What the run reads from a configuration after its rounds.
#[derive(Debug, Clone, Copy)]
struct Watch {
    /// The client-side sidecar's admin address (ours only: its `/metrics`).
    client_admin: Option<SocketAddr>,
    /// The server-side proxy's listener, whose accepted connections are the mesh connections.
    server_port: Option<u16>,
    app_port: u16,
    /// The client-side proxy's RSS once ready, before any request (KiB).
    started_rss_kib: Option<u64>,
    /// The same once every name was called once, before the measured phases.
    primed_rss_kib: Option<u64>,
    /// From spawning the client-side proxy to its `/ready` answering 200.
    start_ms: Option<u64>,
}

/// Keep-alive `GET /` with `Host: svc-N`, N cycling over the table.
pub(crate) struct Destinations {
    names: Vec<String>,
    next: AtomicUsize,
    watches: Mutex<HashMap<&'static str, Watch>>,
}

impl Destinations {
    pub(crate) fn new() -> Self {
        Self {
            names: (0..DESTINATIONS).map(|i| format!("svc-{i}")).collect(),
            next: AtomicUsize::new(0),
            watches: Mutex::new(HashMap::new()),
        }
    }
}

impl Exchange for Destinations {
    type Conn = Sender;

    async fn connect(&self, dial: &Dial) -> Result<Sender, Error> {
        load::connect(dial).await
    }

    async fn once(&self, _dial: &Dial, send: &mut Sender) -> Result<u64, Error> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.names.len();
        get(send, &self.names[n]).await?;
        Ok(BODY.len() as u64)
    }

    async fn start(
        &self,
        topology: Topology,
        options: &WorkloadOptions,
        envoy: Option<&Path>,
        dir: &Path,
        app: SocketAddr,
    ) -> Result<Running, Error> {
        let (running, mut watch) = match topology {
            Topology::Ours => start_ours(&options.bin_dir, dir, app, &self.names).await?,
            Topology::Envoy => match envoy {
                Some(envoy) => start_envoy(envoy, dir, app, &self.names).await?,
                None => return Err(Error::EnvoySetup("no Envoy binary".to_owned())),
            },
            other => {
                let running = start_plain(other, options, envoy, dir, app).await?;
                let watch = Watch {
                    client_admin: None,
                    server_port: None,
                    app_port: app.port(),
                    started_rss_kib: None,
                    primed_rss_kib: None,
                    start_ms: None,
                };
                (running, watch)
            }
        };
        let client_rss = || {
            let (_, client) = running.proxies.first()?;
            crate::pair::memory_kib(client.pid())
                .ok()
                .map(|(rss, _)| rss)
        };
        watch.started_rss_kib = client_rss();
        // Every name once, before any measured phase: proves each route works, and the
        // connection each destination opens on first use is not on the measured path.
        prime(&running.dial(), &self.names).await?;
        watch.primed_rss_kib = client_rss();
        self.watches.lock().await.insert(topology.name(), watch);
        Ok(running)
    }

    async fn inspect(&self, topology: Topology, running: &Running) -> BTreeMap<String, u64> {
        let mut facts = BTreeMap::new();
        let Some(watch) = self.watches.lock().await.get(topology.name()).copied() else {
            return facts;
        };
        let mut put = |key: &str, value: Option<u64>| {
            if let Some(value) = value {
                facts.insert(key.to_owned(), value);
            }
        };
        put("client_proxy_rss_after_start_kib", watch.started_rss_kib);
        put(
            "client_proxy_rss_after_first_calls_kib",
            watch.primed_rss_kib,
        );
        put("client_proxy_start_ms", watch.start_ms);
        let pid = |i: usize| running.proxies.get(i).map(|(_, p)| p.pid());
        // The client side's connections to the server side, and the server side's to the app.
        put(
            "mesh_connections",
            pid(0)
                .zip(watch.server_port)
                .and_then(|(pid, port)| connections_of(pid, port)),
        );
        put(
            "app_connections",
            pid(1).and_then(|pid| connections_of(pid, watch.app_port)),
        );
        if let Some(admin) = watch.client_admin {
            let metrics = admin_get(admin, "/metrics").await;
            put(
                "distinct_destinations",
                metrics.map(|m| distinct_destinations(&m) as u64),
            );
        }
        facts
    }
}

/// One `GET /` with `Host: name`; an error unless it answered 200 with its whole body.
async fn get(send: &mut Sender, name: &str) -> Result<(), Error> {
    let once = async {
        send.ready().await?;
        let req = Request::get("/").header(HOST, name).body(Empty::new())?;
        let rsp = send.send_request(req).await?;
        let ok = rsp.status().is_success();
        rsp.into_body().collect().await?;
        if ok { Ok(()) } else { Err(Error::Status) }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, once)
        .await
        .map_err(|_| Error::Timeout)?
}

/// Calls every name once over a few connections; the first call is retried until the path
/// answers (the proxies may still be connecting), the others must succeed at once.
async fn prime(dial: &Dial, names: &[String]) -> Result<(), Error> {
    let deadline = Instant::now() + READY_LIMIT;
    let mut first = Err(Error::Timeout);
    while Instant::now() < deadline {
        first = match load::connect(dial).await {
            Ok(mut send) => get(&mut send, &names[0]).await,
            Err(e) => Err(e),
        };
        if first.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first?;
    let tasks: Vec<_> = (0..PRIMING_CONNECTIONS)
        .map(|k| {
            let dial = dial.clone();
            let mine: Vec<String> = names
                .iter()
                .skip(k)
                .step_by(PRIMING_CONNECTIONS)
                .cloned()
                .collect();
            tokio::spawn(async move {
                let mut send = load::connect(&dial).await?;
                for name in &mine {
                    get(&mut send, name).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| Error::Load(format!("priming task: {e}")))??;
    }
    Ok(())
}

/// Our sidecar pair, the client side's table listing every name, each at the server side's
/// inbound listener with the server's identity.
async fn start_ours(
    bin_dir: &Path,
    dir: &Path,
    app: SocketAddr,
    names: &[String],
) -> Result<(Running, Watch), Error> {
    let sidecar = crate::datapath::sidecar_binary(bin_dir)?;
    let [o_out, o_in, o_admin, i_out, i_in, i_admin] = std::array::from_fn(|_| free_port());
    let server_id = mesh_api::spiffe::format_service_id(TRUST_DOMAIN, "default", SERVER);
    let mut table = String::from("{ ");
    for (i, name) in names.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(
            table,
            "{sep}{name}: {{ endpoints: [\"{i_in}\"], identity: \"{server_id}\" }}"
        );
    }
    table.push_str(" }");
    let runtime = Runtime::Default;
    let client_yaml = topology::sidecar_yaml(CLIENT, app, [o_out, o_in, o_admin], &table);
    let server_yaml = topology::sidecar_yaml(SERVER, app, [i_out, i_in, i_admin], "{}");
    let started = Instant::now();
    let client = topology::start_proxy(
        Proxy::Sidecar(&sidecar, runtime),
        dir,
        &format!("sidecar-{CLIENT}-destinations"),
        &client_yaml,
        o_admin,
    )
    .await?;
    let start_ms = u64::try_from(started.elapsed().as_millis()).ok();
    let server = topology::start_proxy(
        Proxy::Sidecar(&sidecar, runtime),
        dir,
        &format!("sidecar-{SERVER}-destinations"),
        &server_yaml,
        i_admin,
    )
    .await?;
    let running = Running {
        entry: o_out,
        proxies: vec![("client side", client), ("server side", server)],
        namespaced: None,
        edge: None,
    };
    let watch = Watch {
        client_admin: Some(o_admin),
        server_port: Some(i_in.port()),
        app_port: app.port(),
        started_rss_kib: None,
        primed_rss_kib: None,
        start_ms,
    };
    Ok((running, watch))
}

/// Two Envoys: the client side with a cluster and a virtual host per name (the same endpoint,
/// HTTP/2 and mutual TLS checking the server's SPIFFE ID, as `envoy`'s one cluster), the
/// server side as in `envoy` (`domains: ["*"]`).
async fn start_envoy(
    envoy: &Path,
    dir: &Path,
    app: SocketAddr,
    names: &[String],
) -> Result<(Running, Watch), Error> {
    let [c_listen, c_admin, s_listen, s_admin] = std::array::from_fn(|_| free_port());
    let client_yaml = envoy_client_config(dir, [c_listen, c_admin], s_listen, names);
    let server_yaml = topology::envoy_server_config(dir, [s_listen, s_admin], app, Carry::Http);
    let started = Instant::now();
    let client = topology::start_proxy(
        Proxy::Envoy(envoy),
        dir,
        &format!("envoy-{CLIENT}-destinations"),
        &client_yaml,
        c_admin,
    )
    .await?;
    let start_ms = u64::try_from(started.elapsed().as_millis()).ok();
    let server = topology::start_proxy(
        Proxy::Envoy(envoy),
        dir,
        &format!("envoy-{SERVER}-destinations"),
        &server_yaml,
        s_admin,
    )
    .await?;
    let running = Running {
        entry: c_listen,
        proxies: vec![("client side", client), ("server side", server)],
        namespaced: None,
        edge: None,
    };
    let watch = Watch {
        client_admin: None,
        server_port: Some(s_listen.port()),
        app_port: app.port(),
        started_rss_kib: None,
        primed_rss_kib: None,
        start_ms,
    };
    Ok((running, watch))
}

fn envoy_client_config(
    dir: &Path,
    [listen, admin]: [SocketAddr; 2],
    server: SocketAddr,
    names: &[String],
) -> String {
    let server_id = mesh_api::spiffe::format_service_id(TRUST_DOMAIN, "default", SERVER);
    let (cert, key, ca) = (
        pem(dir, &format!("{CLIENT}.pem")),
        pem(dir, &format!("{CLIENT}-key.pem")),
        pem(dir, "ca.pem"),
    );
    let server = socket(server);
    let mut hosts = String::new();
    let mut clusters = String::new();
    for name in names {
        let _ = write!(
            hosts,
            r#"                  - name: {name}
                    domains: ["{name}"]
                    routes:
                      - match: {{ prefix: "/" }}
                        route: {{ cluster: {name} }}
"#
        );
        let _ = write!(
            clusters,
            r#"    - name: {name}
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: {name}
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {server} }}
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          common_tls_context:
            alpn_protocols: ["h2"]
            tls_certificates:
              - certificate_chain: {cert}
                private_key: {key}
            validation_context:
              trusted_ca: {ca}
              match_typed_subject_alt_names:
                - san_type: URI
                  matcher: {{ exact: "{server_id}" }}
"#
        );
    }
    format!(
        r#"admin:
  address: {admin}
static_resources:
  listeners:
    - name: outbound
      address: {listen}
      filter_chains:
        - filters:
          - name: envoy.filters.network.http_connection_manager
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              stat_prefix: outbound
              codec_type: HTTP1
              route_config:
                name: local
                virtual_hosts:
{hosts}              http_filters:
                - name: envoy.filters.http.router
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"#,
        admin = socket(admin),
        listen = socket(listen),
    )
}

/// Established TCP connections of process `pid` to `port` on the other end, from its
/// descriptors and /proc/net/tcp and tcp6: so each proxy's own connections are counted, not
/// those of another configuration that dials the same app.
fn connections_of(pid: u32, port: u16) -> Option<u64> {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut count = 0;
    let mut read_any = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        read_any = true;
        count += text
            .lines()
            .skip(1)
            .filter(|line| {
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                let fields: Vec<&str> = line.split_whitespace().collect();
                let remote_port = fields
                    .get(2)
                    .and_then(|r| r.rsplit_once(':'))
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
                let inode = fields.get(9).and_then(|i| i.parse::<u64>().ok());
                fields.get(3) == Some(&"01")
                    && remote_port == Some(port)
                    && inode.is_some_and(|i| inodes.contains(&i))
            })
            .count() as u64;
    }
    read_any.then_some(count)
}

/// `GET path` on an admin listener, the body as text; `None` on any failure.
async fn admin_get(addr: SocketAddr, path: &str) -> Option<String> {
    let fetch = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (status, body) = text.split_once("\r\n\r\n")?;
        status.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()
        .flatten()
}

/// Distinct `svc-` destinations in `mesh_requests_total`'s series.
fn distinct_destinations(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("mesh_requests_total{"))
        .filter_map(|l| {
            let (_, rest) = l.split_once("destination=\"")?;
            let (value, _) = rest.split_once('"')?;
            value.starts_with("svc-").then_some(value)
        })
        .collect::<BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_svc_destinations() {
        let text = "mesh_requests_total{direction=\"outbound\",source=\"orders\",destination=\"svc-1\",status_code=\"200\"} 3\n\
                    mesh_requests_total{direction=\"outbound\",source=\"orders\",destination=\"svc-1\",status_code=\"503\"} 1\n\
                    mesh_requests_total{direction=\"outbound\",source=\"orders\",destination=\"svc-22\",status_code=\"200\"} 1\n\
                    mesh_requests_total{direction=\"inbound\",source=\"orders\",destination=\"inventory\",status_code=\"200\"} 1\n";
        assert_eq!(distinct_destinations(text), 2);
    }
}
