//! The control plane in Kubernetes mode at cluster scale: a real API server holding 1,000
//! Services with their MeshService objects and EndpointSlices (10,000 endpoints), the control
//! plane reading them as its ServiceAccount, and 1,000 simulated sidecars watching. Measures how
//! fast an EndpointSlice edit reaches every watcher that depends on it, how long the first sync
//! takes, and the control plane's memory with that state.
//!
//! Services: `backend`, `frontend-0` … `frontend-{F-1}` (each calling `backend`), and filler
//! services `svc-N` up to the count, each with its endpoints in one slice. The watchers are
//! instances of the frontends (certified with their ServiceAccounts' projected tokens); each
//! change removes or restores one endpoint of `backend`'s slice, which every frontend's snapshot
//! carries, so every watcher must receive it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use mesh_api::proto::v1;
use mesh_control_plane::client::{self, Workload};
use mesh_control_plane::{ControlPlane, KubernetesOptions, Listeners, Options};
use mesh_kube_testkit::TestCluster;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::control_plane::report::{Latencies, Machine, ms};

/// The trust domain and namespace of the benchmark mesh.
const TRUST_DOMAIN: &str = "mesh.local";
const NAMESPACE: &str = "default";
/// The service every frontend calls, whose slice the benchmark edits.
const BACKEND: &str = "backend";

/// The bench drives the control plane from one address far past what one caller may ask in
/// production: many streams per connection.
const MESH_YAML: &str = "trust_domain: mesh.local\nnamespace: default\ncertificate_lifetime: 1h\n\
    api:\n  max_concurrent_streams: 4096\n  rate_limits:\n    \
    certify_per_source_ip: { requests_per_second: 1000000, burst: 1000000 }\n    \
    certify_per_service: { requests_per_second: 1000000, burst: 1000000 }\n";

/// Why a run could not complete (a target missed is in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum KubeBenchError {
    /// The test cluster's binaries are not built (`scripts/build-kube.sh`).
    #[error("etcd and kube-apiserver are not built: run scripts/build-kube.sh")]
    NoBinaries,
    /// The test cluster failed.
    #[error("test cluster: {0}")]
    Cluster(#[from] mesh_kube_testkit::ClusterError),
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The API server's answer.
        source: kube::Error,
    },
    /// The control plane failed.
    #[error("control plane: {0}")]
    ControlPlane(#[from] mesh_control_plane::Error),
    /// A client step failed.
    #[error("client: {0}")]
    Client(#[from] mesh_control_plane::client::ClientError),
    /// A file or /proc could not be used.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeBenchError {
    let what = what.into();
    move |source| KubeBenchError::Api { what, source }
}

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Services (each a Service, a MeshService and one EndpointSlice).
    pub services: usize,
    /// Endpoints per service.
    pub endpoints_per_service: usize,
    /// Simulated sidecars watching.
    pub watchers: usize,
    /// Frontend services the watchers are instances of.
    pub frontends: usize,
    /// Services each frontend calls: `backend` and the first fillers, so each watcher's
    /// snapshot carries this many destinations.
    pub calls_per_frontend: usize,
    /// Watch streams per TLS connection.
    pub streams_per_channel: usize,
    /// Slice edits measured.
    pub changes: usize,
    /// API writes in flight while the cluster is filled.
    pub writes_in_flight: usize,
    /// Bound on every watcher getting one change.
    #[serde(skip)]
    pub change_within: Duration,
    /// Bound on the first sync and every watcher's first snapshot.
    #[serde(skip)]
    pub first_within: Duration,
    /// The command line, for the report.
    pub command: String,
}

impl Settings {
    /// The target's scale: 1,000 Services, 10,000 endpoints, 1,000 watchers.
    pub fn full() -> Self {
        Self {
            services: 1_000,
            endpoints_per_service: 10,
            watchers: 1_000,
            frontends: 4,
            calls_per_frontend: 1,
            streams_per_channel: 250,
            changes: 6,
            writes_in_flight: 16,
            change_within: Duration::from_secs(30),
            first_within: Duration::from_secs(180),
            command: String::new(),
        }
    }

    /// The smoke run: 40 Services, 50 watchers, 2 changes.
    pub fn quick() -> Self {
        Self {
            services: 40,
            watchers: 50,
            streams_per_channel: 20,
            changes: 2,
            change_within: Duration::from_secs(10),
            first_within: Duration::from_secs(60),
            ..Self::full()
        }
    }
}

/// One slice edit, as the watchers saw it.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// 1-based.
    pub change: usize,
    /// What the edit did.
    pub edit: String,
    /// `backend`'s endpoints after it.
    pub endpoints: usize,
    /// From the write's start to each watcher's receipt (ms).
    pub write_to_receive_ms: Latencies,
    /// Watchers that did not get it in time.
    pub missed: usize,
}

/// The results.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What ran.
    pub settings: Settings,
    /// Where.
    pub machine: Machine,
    /// Objects in the cluster.
    pub services: usize,
    /// Endpoints in the cluster.
    pub endpoints: usize,
    /// Filling the cluster (ms).
    pub fill_ms: f64,
    /// From the control plane's start to its readiness with every MeshService (ms).
    pub start_ms: f64,
    /// From the watchers' first request to all holding a snapshot with `backend`'s endpoints.
    pub first_snapshot_ms: f64,
    /// The process's resident set before the control plane started (KiB).
    pub baseline_rss_kib: u64,
    /// Its growth with the control plane synced to the cluster (KiB).
    pub synced_kib: i64,
    /// Its growth with the watchers too (KiB).
    pub with_watchers_kib: i64,
    /// Every change.
    pub changes: Vec<Change>,
    /// All changes together.
    pub write_to_receive_ms: Latencies,
    /// Watchers that missed any change.
    pub missed: usize,
}

impl Report {
    /// Whether the push target (p99 < 1 s, nothing missed) is met.
    pub fn met(&self) -> bool {
        self.missed == 0 && self.write_to_receive_ms.p99 < 1_000.0
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "# The control plane in Kubernetes mode at scale\n\n\
             Command: `{}`\n\n\
             Machine: {} ({} cores), {}, {}. Load average at the start {}.\n\n\
             Setup: a real etcd and kube-apiserver (the test cluster) on loopback holding {} \
             Services, each with a MeshService and one EndpointSlice of {} ready endpoints \
             ({} endpoints). The control plane runs in-process in Kubernetes mode as its \
             ServiceAccount (the installed RBAC). {} simulated sidecars (instances of {} \
             frontends that each call {} services, `backend` among them, so each snapshot \
             carries {} endpoints; certified with their ServiceAccounts' TokenRequest \
             tokens through TokenReview) watch over gRPC+TLS, {} streams per connection. Each \
             change removes or restores one endpoint of `backend`'s slice with a PUT; latency \
             runs from the start of the PUT to each watcher's receipt of a snapshot with the \
             new endpoint count. Memory is this process's resident set growth (the control \
             plane and the watchers' client side; the API server is another process).\n\n",
            s.command,
            self.machine.cpu,
            self.machine.cores,
            self.machine.kernel,
            self.machine.date,
            self.machine.load_start,
            self.services,
            s.endpoints_per_service,
            self.endpoints,
            s.watchers,
            s.frontends,
            s.calls_per_frontend,
            s.calls_per_frontend * s.endpoints_per_service,
            s.streams_per_channel,
        );
        out += &format!(
            "## Target\n\n| what | target | measured | result |\n|---|---|---|---|\n\
             | slice edit to {} watchers, p99 | < 1000 ms | {:.0} ms ({} missed) | {} |\n\n",
            s.watchers,
            self.write_to_receive_ms.p99,
            self.missed,
            if self.met() { "met" } else { "NOT met" },
        );
        out += &format!(
            "## Sync and memory\n\n| what | value |\n|---|---|\n\
             | filling the cluster ({} objects) | {:.0} ms |\n\
             | control plane start to ready, synced | {:.0} ms |\n\
             | every watcher on its first snapshot | {:.0} ms |\n\
             | RSS before the control plane | {} KiB |\n\
             | growth, synced to {} Services / {} endpoints | {} KiB |\n\
             | growth, with {} watchers too | {} KiB |\n\n",
            3 * self.services,
            self.fill_ms,
            self.start_ms,
            self.first_snapshot_ms,
            self.baseline_rss_kib,
            self.services,
            self.endpoints,
            self.synced_kib,
            s.watchers,
            self.with_watchers_kib,
        );
        out += "## Each change (ms, write start → receipt)\n\n\
                | change | edit | endpoints after | p50 | p90 | p99 | max | missed |\n\
                |---|---|---|---|---|---|---|---|\n";
        for c in &self.changes {
            let l = &c.write_to_receive_ms;
            out += &format!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} |\n",
                c.change, c.edit, c.endpoints, l.p50, l.p90, l.p99, l.max, c.missed
            );
        }
        let l = &self.write_to_receive_ms;
        out += &format!(
            "| all | | | {:.0} | {:.0} | {:.0} | {:.0} | {} |\n",
            l.p50, l.p90, l.p99, l.max, self.missed
        );
        out
    }
}

/// The name of service `i`: the frontends first, then `backend`, then fillers.
fn service_name(i: usize, frontends: usize) -> String {
    if i < frontends {
        format!("frontend-{i}")
    } else if i == frontends {
        BACKEND.to_owned()
    } else {
        format!("svc-{i}")
    }
}

/// A pod IP for endpoint `index` of the whole cluster, in 10.200.0.0/16.
fn pod_ip(index: usize) -> String {
    format!("10.200.{}.{}", index / 250, index % 250 + 1)
}

/// `backend`'s slice with its first `ready` endpoints.
fn slice(name: &str, first_endpoint: usize, count: usize) -> Value {
    let endpoints: Vec<Value> = (0..count)
        .map(|j| json!({ "addresses": [pod_ip(first_endpoint + j)], "conditions": { "ready": true } }))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-1"),
            "namespace": NAMESPACE,
            "labels": { "kubernetes.io/service-name": name },
        },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
        "endpoints": endpoints,
    })
}

/// Creates every Service, MeshService and EndpointSlice, `in_flight` at a time.
async fn fill(client: &kube::Client, settings: &Settings) -> Result<(), KubeBenchError> {
    let resource = kube::discovery::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(
            mesh_kube::names::POLICY_GROUP,
            mesh_kube::names::POLICY_VERSION,
            mesh_kube::names::POLICY_KIND,
        ),
        mesh_kube::names::POLICY_PLURAL,
    );
    let mesh_services: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let frontends = settings.frontends;
    let per = settings.endpoints_per_service;
    let calls: Vec<String> = (frontends..settings.services)
        .take(settings.calls_per_frontend.max(1))
        .map(|i| service_name(i, frontends))
        .collect();
    futures_util::stream::iter(0..settings.services)
        .map(|i| {
            let (mesh_services, services, slices) =
                (mesh_services.clone(), services.clone(), slices.clone());
            let calls = calls.clone();
            async move {
                let name = service_name(i, frontends);
                let spec = if i < frontends {
                    json!({ "calls": calls })
                } else {
                    json!({})
                };
                let object: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": format!("{}/{}", mesh_kube::names::POLICY_GROUP, mesh_kube::names::POLICY_VERSION),
                    "kind": mesh_kube::names::POLICY_KIND,
                    "metadata": { "name": name, "namespace": NAMESPACE },
                    "spec": spec,
                }))
                .map_err(|e| KubeBenchError::Timeout(format!("MeshService {name}: {e}")))?;
                create_retrying(|| {
                    let (api, object) = (mesh_services.clone(), object.clone());
                    async move { api.create(&PostParams::default(), &object).await }
                })
                    .await
                    .map_err(api(format!("create MeshService {name}")))?;
                let service: Service = serde_json::from_value(json!({
                    "metadata": { "name": name, "namespace": NAMESPACE },
                    "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": 8080, "appProtocol": "http" }] },
                }))
                .map_err(|e| KubeBenchError::Timeout(format!("Service {name}: {e}")))?;
                services
                    .create(&PostParams::default(), &service)
                    .await
                    .map_err(api(format!("create Service {name}")))?;
                let slice: EndpointSlice = serde_json::from_value(slice(&name, i * per, per))
                    .map_err(|e| KubeBenchError::Timeout(format!("EndpointSlice {name}: {e}")))?;
                slices
                    .create(&PostParams::default(), &slice)
                    .await
                    .map_err(api(format!("create EndpointSlice {name}-1")))?;
                Ok::<(), KubeBenchError>(())
            }
        })
        .buffer_unordered(settings.writes_in_flight.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Retries a create while the CRD's kind is not served yet (a moment after the CRD is stored).
async fn create_retrying<F, Fut, T>(mut create: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut tries = 0;
    loop {
        match create().await {
            Err(kube::Error::Api(status)) if status.code == 404 && tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// A projected-style token for ServiceAccount `name`, audience `mesh.local`.
async fn token(client: &kube::Client, name: &str) -> Result<String, KubeBenchError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": name } }))
            .map_err(|e| KubeBenchError::Timeout(format!("ServiceAccount {name}: {e}")))?;
    accounts
        .create(&PostParams::default(), &account)
        .await
        .map_err(api(format!("create ServiceAccount {name}")))?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![mesh_inject::names::TOKEN_AUDIENCE.to_owned()]),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(api(format!("TokenRequest for {name}")))?;
    issued
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| KubeBenchError::Timeout(format!("TokenRequest for {name}: no token")))
}

/// `backend`'s endpoint count in a snapshot, if it names `backend`.
fn backend_endpoints(snapshot: &v1::Snapshot) -> Option<usize> {
    snapshot
        .destinations
        .iter()
        .find(|d| d.name == BACKEND)
        .map(|d| d.backends.iter().map(|b| b.endpoints.len()).sum())
}

/// A watcher's report: `backend`'s endpoint count in a snapshot, and when it arrived.
type Seen = (usize, Option<usize>, Instant);

/// One simulated sidecar's watch, acknowledging every snapshot.
async fn watch(
    watcher: usize,
    channel: Channel,
    instance_id: String,
    events: mpsc::UnboundedSender<Seen>,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    let request = |ack_version| v1::WatchRequest {
        instance_id: instance_id.clone(),
        ack_version,
        error: String::new(),
    };
    if tx.send(request(0)).await.is_err() {
        return Ok(());
    }
    let mut stream = v1::discovery_client::DiscoveryClient::new(channel)
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    while let Some(snapshot) = stream.message().await? {
        let _ = events.send((watcher, backend_endpoints(&snapshot), Instant::now()));
        if tx.send(request(snapshot.version)).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Waits until every watcher has seen `backend` with `endpoints` endpoints; each one's first
/// such receipt.
async fn until_all(
    events: &mut mpsc::UnboundedReceiver<Seen>,
    watchers: usize,
    endpoints: usize,
    within: Duration,
) -> HashMap<usize, Instant> {
    let deadline = Instant::now() + within;
    let mut seen = HashMap::with_capacity(watchers);
    while seen.len() < watchers {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some((watcher, Some(count), at))) if count == endpoints => {
                seen.entry(watcher).or_insert(at);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

/// Runs the benchmark once.
pub async fn run(settings: &Settings) -> Result<Report, KubeBenchError> {
    let machine = Machine::now();
    let binaries = mesh_kube_testkit::binaries::Binaries::from_cache()
        .map_err(|_| KubeBenchError::NoBinaries)?;
    let cluster = TestCluster::start(&binaries).await?;
    let kubeconfig = mesh_kube_testkit::mesh::install_control_plane_access(&cluster).await?;
    let admin = cluster.admin()?;

    let filled = Instant::now();
    fill(&admin, settings).await?;
    let fill_ms = ms(filled.elapsed());
    eprintln!("filled {} services in {fill_ms:.0} ms", settings.services);

    let dirs = tempfile::tempdir()?;
    let config = dirs.path().join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("mesh.yaml"), MESH_YAML)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = crate::control_plane::rss_kib()?;
    let started = Instant::now();
    let cp = start_control_plane(&config, dirs.path().join("state"), kubeconfig).await?;
    let deadline = started + settings.first_within;
    while cp.status().services.len() < settings.services {
        if Instant::now() > deadline {
            return Err(KubeBenchError::Timeout(format!(
                "the control plane declared {} of {} services",
                cp.status().services.len(),
                settings.services
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start_ms = ms(started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let synced = crate::control_plane::rss_kib()?;

    let roots = client::roots_from_der(&cp.trust_bundle_der())?;
    let mut workloads: Vec<Workload> = Vec::new();
    for i in 0..settings.frontends {
        let name = service_name(i, settings.frontends);
        let token = token(&admin, &name).await?;
        let anonymous = client::connect(cp.api_addr(), roots.clone(), TRUST_DOMAIN, None).await?;
        workloads.push(client::certify(anonymous, TRUST_DOMAIN, NAMESPACE, &name, &token).await?);
    }
    let per_channel = settings.streams_per_channel.max(1);
    let mut channels = Vec::new();
    for c in 0..settings.watchers.div_ceil(per_channel) {
        let workload = &workloads[c % workloads.len().max(1)];
        channels.push(
            client::connect(
                cp.api_addr(),
                roots.clone(),
                TRUST_DOMAIN,
                Some(workload.client_cert()),
            )
            .await?,
        );
    }
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    let opened = Instant::now();
    for watcher in 0..settings.watchers {
        let c = watcher / per_channel;
        let instance = format!(
            "{}-{watcher}",
            service_name(c % settings.frontends, settings.frontends)
        );
        tasks.spawn(watch(watcher, channels[c].clone(), instance, tx.clone()));
    }
    let per = settings.endpoints_per_service;
    let first = until_all(&mut events, settings.watchers, per, settings.first_within).await;
    if first.len() < settings.watchers {
        return Err(KubeBenchError::Timeout(format!(
            "{} of {} watchers got backend's {per} endpoints",
            first.len(),
            settings.watchers
        )));
    }
    let first_snapshot_ms = ms(opened.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_watchers = crate::control_plane::rss_kib()?;

    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), NAMESPACE);
    let backend_first = settings.frontends * per;
    let mut changes = Vec::new();
    let mut all = Vec::new();
    let mut missed = 0;
    for change in 1..=settings.changes {
        tokio::time::sleep(Duration::from_millis(300)).await;
        while events.try_recv().is_ok() {}
        let (count, edit) = if change % 2 == 1 {
            (per - 1, "remove an endpoint")
        } else {
            (per, "restore it")
        };
        let mut object = slices
            .get(&format!("{BACKEND}-1"))
            .await
            .map_err(api("get backend's slice"))?;
        let wanted: EndpointSlice = serde_json::from_value(slice(BACKEND, backend_first, count))
            .map_err(|e| KubeBenchError::Timeout(format!("backend's slice: {e}")))?;
        object.endpoints = wanted.endpoints;
        let written = Instant::now();
        slices
            .replace(&format!("{BACKEND}-1"), &PostParams::default(), &object)
            .await
            .map_err(api("replace backend's slice"))?;
        let seen = until_all(
            &mut events,
            settings.watchers,
            count,
            settings.change_within,
        )
        .await;
        let mut latencies: Vec<Duration> = seen
            .values()
            .map(|at| at.saturating_duration_since(written))
            .collect();
        all.extend_from_slice(&latencies);
        let record = Change {
            change,
            edit: edit.to_owned(),
            endpoints: count,
            write_to_receive_ms: Latencies::of(&mut latencies),
            missed: settings.watchers - seen.len(),
        };
        missed += record.missed;
        eprintln!(
            "change {change} ({edit}): p50 {:.0} ms, p99 {:.0} ms, missed {}",
            record.write_to_receive_ms.p50, record.write_to_receive_ms.p99, record.missed
        );
        changes.push(record);
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    drop(channels);
    cp.stop().await?;
    drop(cluster);
    let growth = |kib: u64| kib as i64 - baseline as i64;
    Ok(Report {
        settings: settings.clone(),
        machine,
        services: settings.services,
        endpoints: settings.services * per,
        fill_ms,
        start_ms,
        first_snapshot_ms,
        baseline_rss_kib: baseline,
        synced_kib: growth(synced),
        with_watchers_kib: growth(with_watchers),
        write_to_receive_ms: Latencies::of(&mut all),
        changes,
        missed,
    })
}

/// The control plane in Kubernetes mode over `config`, as the control plane's ServiceAccount.
async fn start_control_plane(
    config: &std::path::Path,
    state: PathBuf,
    kubeconfig: PathBuf,
) -> Result<ControlPlane, KubeBenchError> {
    let mut options = Options::new(config, state);
    options.kubernetes = Some(KubernetesOptions::new(Some(kubeconfig)));
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = Listeners::bind(any, any).await?;
    Ok(mesh_control_plane::start(options, listeners).await?)
}
