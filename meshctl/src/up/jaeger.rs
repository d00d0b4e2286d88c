//! Jaeger beside the demo mesh: where `scripts/build-jaeger.sh` puts the binary, and the
//! configuration `meshctl up` runs it with (in-memory storage, an OTLP receiver on the demo's
//! tracing endpoint, the query API and UI on their own port).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::config::TracingSpec;

/// The Go module version of github.com/jaegertracing/jaeger that `scripts/build-jaeger.sh`
/// builds (Jaeger v2.13.0).
pub const JAEGER_VERSION: &str = "v1.76.0";

/// Where Jaeger's query API and UI listen unless told otherwise.
pub const DEFAULT_QUERY: &str = "127.0.0.1:16686";

/// A Jaeger to run beside the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JaegerSpec {
    /// The `jaeger` binary.
    pub bin: PathBuf,
    /// Where its query API (`/api/traces`) and UI listen.
    pub query: SocketAddr,
}

impl JaegerSpec {
    /// The URL of its UI and query API.
    pub fn url(&self) -> String {
        format!("http://{}", self.query)
    }
}

/// The directory `scripts/build-jaeger.sh` builds into:
/// `${MESH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mesh}/jaeger-<version>`.
pub fn cache_dir(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let cache = set("MESH_CACHE_DIR")
        .or_else(|| set("XDG_CACHE_HOME").map(|d| d.join("mesh")))
        .or_else(|| set("HOME").map(|d| d.join(".cache").join("mesh")))?;
    Some(cache.join(format!("jaeger-{JAEGER_VERSION}")))
}

/// The built `jaeger` binary, if `scripts/build-jaeger.sh` has run.
pub fn find_binary() -> Option<PathBuf> {
    let bin = cache_dir(|name| std::env::var(name).ok())?.join("jaeger");
    bin.is_file().then_some(bin)
}

/// What to tell a user who has no Jaeger binary.
pub fn how_to_build() -> String {
    let dir = cache_dir(|name| std::env::var(name).ok())
        .map_or_else(|| "the cache".to_owned(), |d| d.display().to_string());
    format!(
        "Jaeger is not built: scripts/build-jaeger.sh builds it into {dir} (needs Go and \
         minutes), then meshctl up starts it"
    )
}

/// Why Jaeger cannot listen where the mesh exports spans.
#[derive(Debug, thiserror::Error)]
#[error(
    "tracing.otlp_endpoint {endpoint:?} is not http://<ip>:<port>, so Jaeger cannot listen there \
     (fix demo.yaml or pass --no-jaeger)"
)]
pub struct EndpointError {
    /// The endpoint.
    pub endpoint: String,
}

/// The socket address of an OTLP endpoint URL such as `http://127.0.0.1:4317`.
pub fn otlp_listen(tracing: &TracingSpec) -> Result<SocketAddr, EndpointError> {
    tracing
        .otlp_endpoint
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .and_then(|rest| rest.parse().ok())
        .ok_or_else(|| EndpointError {
            endpoint: tracing.otlp_endpoint.clone(),
        })
}

/// Jaeger's configuration: OTLP in (gRPC or HTTP, as the sidecars send it) on `otlp`, traces
/// kept in memory, the query API and UI on `query`, its own metrics and traces off (its
/// query service would otherwise export spans to 127.0.0.1:4317 and wait 10 s for that on
/// exit), and its query gRPC on a port the kernel picks, so nothing collides with another
/// Jaeger.
pub fn config(tracing: &TracingSpec, otlp: SocketAddr, query: SocketAddr) -> String {
    let receiver = if tracing.protocol == "http/protobuf" {
        "http"
    } else {
        "grpc"
    };
    format!(
        "# Written by `meshctl up`; rewritten on every run.\n\
         service:\n  \
           extensions: [jaeger_storage, jaeger_query]\n  \
           pipelines:\n    \
             traces:\n      \
               receivers: [otlp]\n      \
               processors: [batch]\n      \
               exporters: [jaeger_storage_exporter]\n  \
           telemetry:\n    \
             metrics:\n      \
               level: none\n\
         extensions:\n  \
           jaeger_query:\n    \
             enable_tracing: false\n    \
             storage:\n      \
               traces: memory\n    \
             http:\n      \
               endpoint: \"{query}\"\n    \
             grpc:\n      \
               endpoint: \"{grpc}\"\n  \
           jaeger_storage:\n    \
             backends:\n      \
               memory:\n        \
                 memory:\n          \
                   max_traces: 100000\n\
         receivers:\n  \
           otlp:\n    \
             protocols:\n      \
               {receiver}:\n        \
                 endpoint: \"{otlp}\"\n\
         processors:\n  \
           batch:\n    \
             timeout: 200ms\n\
         exporters:\n  \
           jaeger_storage_exporter:\n    \
             trace_storage: memory\n",
        grpc = SocketAddr::new(query.ip(), 0),
    )
}

/// The file Jaeger's configuration is written to in a run directory.
pub fn config_path(run_dir: &Path) -> PathBuf {
    run_dir.join("jaeger.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_follows_the_xdg_convention() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let dir = |vars| cache_dir(env(vars)).unwrap();
        assert_eq!(
            dir(&[("HOME", "/home/u")]),
            Path::new("/home/u/.cache/mesh/jaeger-v1.76.0")
        );
        assert_eq!(
            dir(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/c")]),
            Path::new("/c/mesh/jaeger-v1.76.0")
        );
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "/c"), ("MESH_CACHE_DIR", "/m")]),
            Path::new("/m/jaeger-v1.76.0")
        );
        assert_eq!(cache_dir(env(&[])), None);
    }

    #[test]
    fn jaeger_listens_where_sidecars_export() {
        let spec = |endpoint: &str, protocol: &str| TracingSpec {
            otlp_endpoint: endpoint.into(),
            protocol: protocol.into(),
        };
        let grpc = spec("http://127.0.0.1:4317/", "grpc");
        let otlp = otlp_listen(&grpc).unwrap();
        assert_eq!(otlp.to_string(), "127.0.0.1:4317");
        let text = config(&grpc, otlp, "127.0.0.1:16686".parse().unwrap());
        assert!(
            text.contains("grpc:\n        endpoint: \"127.0.0.1:4317\""),
            "{text}"
        );
        assert!(text.contains("endpoint: \"127.0.0.1:16686\""), "{text}");
        let http = spec("http://127.0.0.1:4318", "http/protobuf");
        let text = config(&http, otlp_listen(&http).unwrap(), otlp);
        assert!(
            text.contains("http:\n        endpoint: \"127.0.0.1:4318\""),
            "{text}"
        );
        assert!(otlp_listen(&spec("collector:4317", "grpc")).is_err());
    }
}
