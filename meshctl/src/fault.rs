//! `meshctl fault`: the demo apps' fault knobs (`/admin/faults`, `/admin/crash`), for every
//! instance of a service at once, so the mesh's retries, ejections and failovers can be watched.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::{Method, StatusCode};

use crate::http::{HttpClient, Response};
use crate::netns::dial;
use crate::up::Instance;

/// How long one instance may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What to do to each instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultChange {
    /// Delay before answering, milliseconds.
    pub latency_ms: Option<u64>,
    /// Share of requests answered with `error_status`, 0..=1.
    pub error_rate: Option<f64>,
    /// The status of injected errors, 500..=599.
    pub error_status: Option<u16>,
    /// Back to no fault.
    pub clear: bool,
    /// Make the app exit.
    pub crash: bool,
}

impl FaultChange {
    /// The JSON for `PUT /admin/faults`, or `None` when nothing is to be set (just show).
    pub fn body(&self) -> Option<serde_json::Value> {
        let mut body = serde_json::Map::new();
        if self.clear {
            body.insert("latency_ms".into(), 0.into());
            body.insert("error_rate".into(), 0.0.into());
            body.insert("error_status".into(), 503.into());
        }
        if let Some(v) = self.latency_ms {
            body.insert("latency_ms".into(), v.into());
        }
        if let Some(v) = self.error_rate {
            body.insert("error_rate".into(), v.into());
        }
        if let Some(v) = self.error_status {
            body.insert("error_status".into(), v.into());
        }
        (!body.is_empty()).then_some(serde_json::Value::Object(body))
    }
}

/// Why a fault could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The instance answered with an error.
    #[error("{instance} ({url}): {status}: {message}")]
    Refused {
        /// The instance.
        instance: String,
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The app's message.
        message: String,
    },
    /// Its namespace could not be entered.
    #[error("{instance}: {source}")]
    NoPath {
        /// The instance.
        instance: String,
        /// What failed.
        source: dial::DialError,
    },
    /// No answer.
    #[error("{instance}: {source}")]
    Unreachable {
        /// The instance.
        instance: String,
        /// What failed.
        source: crate::http::HttpError,
    },
}

/// One instance's faults after the change, as the app reports them.
pub fn describe(faults: &serde_json::Value) -> String {
    let latency = faults.get("latency_ms").and_then(serde_json::Value::as_u64);
    let rate = faults.get("error_rate").and_then(serde_json::Value::as_f64);
    let status = faults
        .get("error_status")
        .and_then(serde_json::Value::as_u64);
    match (latency, rate, status) {
        (Some(0), Some(0.0), _) => "no faults".into(),
        (Some(l), Some(r), Some(s)) => {
            format!("latency {l}ms, error rate {r} (answered with {s})")
        }
        _ => faults.to_string(),
    }
}

/// Applies `change` to one instance's app; returns the line to print.
pub async fn apply(
    client: &HttpClient,
    instance: &Instance,
    change: &FaultChange,
) -> Result<String, FaultError> {
    let base = instance.app_url();
    let (method, url, body) = if change.crash {
        (Method::POST, format!("{base}/admin/crash"), None)
    } else {
        match change.body() {
            Some(body) => (Method::PUT, format!("{base}/admin/faults"), Some(body)),
            None => (Method::GET, format!("{base}/admin/faults"), None),
        }
    };
    let response = match (&instance.namespace, instance.proxy_uid) {
        (Some(namespace), Some(uid)) => {
            in_namespace(instance, namespace, uid, method, &url, body.as_ref()).await?
        }
        _ => client
            .send(method, &url, body.as_ref(), &[])
            .await
            .map_err(|source| FaultError::Unreachable {
                instance: instance.name.clone(),
                source,
            })?,
    };
    if !response.status.is_success() {
        let json = response.json();
        let message = json
            .get("error")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| response.text(), str::to_owned);
        return Err(FaultError::Refused {
            instance: instance.name.clone(),
            url,
            status: response.status,
            message,
        });
    }
    Ok(if change.crash {
        format!(
            "{}: crashing (the app exits; its sidecar stays)",
            instance.name
        )
    } else {
        format!("{}: {}", instance.name, describe(&response.json()))
    })
}

/// The knob of an app in its own namespace (`meshctl up --transparent`), reached from inside
/// that namespace as its sidecar's user, the path the sidecar's own forwarding takes: from the
/// host the redirect would bring the call to the sidecar as a caller outside the mesh.
async fn in_namespace(
    instance: &Instance,
    namespace: &str,
    uid: u32,
    method: Method,
    url: &str,
    body: Option<&serde_json::Value>,
) -> Result<Response, FaultError> {
    // The app listens on its namespace's loopback; `instance.app` is where the host sees it.
    let app = SocketAddr::from((Ipv4Addr::LOCALHOST, instance.app.port()));
    let io = dial::connect_as(namespace, uid, app, TIMEOUT)
        .await
        .map_err(|source| FaultError::NoPath {
            instance: instance.name.clone(),
            source,
        })?;
    crate::http::send_on(io, method, url, body, TIMEOUT)
        .await
        .map_err(|source| FaultError::Unreachable {
            instance: instance.name.clone(),
            source,
        })
}

/// The client the fault commands use.
pub fn client() -> HttpClient {
    HttpClient::new(TIMEOUT)
}
