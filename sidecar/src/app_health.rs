//! Whether the local app answers: the sidecar probes it, and an instance whose app is down is
//! taken out of its callers' endpoints until the app answers again.
//!
//! Without probing, an instance whose app has died stays registered while its sidecar lives:
//! callers find out one failed request at a time, until outlier ejection takes it out of each
//! caller's pool separately. With `app_health` set, the sidecar probes the app every `interval`
//! (an HTTP GET of `path`, or a TCP connect without one). After `unhealthy_after` failures in a
//! row the app is down: `/ready` answers 503 naming the failure, and with a control plane the
//! next heartbeat, sent at once, says so, and every caller's snapshot loses the instance. After
//! `healthy_after` successes it is up again. Until its first success the app counts as down, so
//! callers are never sent to an instance whose app has not started.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{AppHealthConfig, Config};

/// What the last probes found: `None` while the app is up, or why it is down.
pub(crate) type AppStatus = Option<Arc<str>>;

/// Starts probing the app when `config` asks for it (without probes the app counts as up);
/// probing stops when the guard is dropped.
pub(crate) fn start(
    config: &Config,
    healthy_gauge: Gauge,
) -> (Option<watch::Receiver<AppStatus>>, DropGuard) {
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    let status = match &config.app_health {
        Some(health) => Some(spawn(health.clone(), config.app, healthy_gauge, stop)),
        None => {
            healthy_gauge.set(1);
            None
        }
    };
    (status, guard)
}

/// Starts probing `app`; the receiver follows the app's status until `stop`.
fn spawn(
    config: AppHealthConfig,
    app: SocketAddr,
    healthy_gauge: Gauge,
    stop: CancellationToken,
) -> watch::Receiver<AppStatus> {
    let (tx, rx) = watch::channel(Some(Arc::from("not probed yet")));
    healthy_gauge.set(0);
    tokio::spawn(async move {
        let mut tracker = Tracker::new(&config);
        let mut ticks = tokio::time::interval(config.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            let outcome = probe(&config, app).await;
            let failure = outcome.as_ref().err().cloned();
            let Some(status) = tracker.observe(outcome) else {
                // Still down: say why as of the latest probe (at first, instead of "not
                // probed yet").
                if let (true, Some(reason)) = (tracker.down, failure) {
                    tx.send_if_modified(|status| {
                        let stale = status.as_deref() != Some(reason.as_str());
                        if stale {
                            *status = Some(reason.into());
                        }
                        stale
                    });
                }
                continue;
            };
            match &status {
                None => tracing::info!(%app, "the app answers its health probe again"),
                Some(reason) => {
                    tracing::warn!(%app, %reason, "the app is down: callers stop being sent here");
                }
            }
            healthy_gauge.set(i64::from(status.is_none()));
            tx.send_replace(status);
        }
    });
    rx
}

/// Counts probe results in a row and says when the app's status changes.
#[derive(Debug)]
struct Tracker {
    unhealthy_after: u32,
    healthy_after: u32,
    /// The status now; down until the first success.
    down: bool,
    /// Results in a row that disagree with `down`.
    streak: u32,
}

impl Tracker {
    fn new(config: &AppHealthConfig) -> Self {
        Self {
            unhealthy_after: config.unhealthy_after,
            healthy_after: config.healthy_after,
            down: true,
            streak: 0,
        }
    }

    /// Takes one probe's result; returns the new status when it changed.
    fn observe(&mut self, outcome: Result<(), String>) -> Option<AppStatus> {
        let agrees = outcome.is_err() == self.down;
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.down {
            self.healthy_after
        } else {
            self.unhealthy_after
        };
        if self.streak < needed {
            return None;
        }
        self.down = !self.down;
        self.streak = 0;
        Some(outcome.err().map(Arc::from))
    }
}

/// One probe: `Ok` when the app answered as healthy, or what went wrong.
async fn probe(config: &AppHealthConfig, app: SocketAddr) -> Result<(), String> {
    let attempt = async {
        let tcp = TcpStream::connect(app)
            .await
            .map_err(|e| format!("connect to {app}: {e}"))?;
        let Some(path) = &config.path else {
            return Ok(());
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP to {app}: {e}"))?;
        let connection = tokio::spawn(connection);
        let req = Request::get(path.as_str())
            .header(http::header::HOST, app.to_string())
            .header(http::header::USER_AGENT, "mesh-sidecar-health")
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| format!("health request for {path:?}: {e}"))?;
        let status = sender
            .send_request(req)
            .await
            .map(|rsp| rsp.status())
            .map_err(|e| format!("GET {path}: {e}"));
        connection.abort();
        healthy_status(status?, path)
    };
    match tokio::time::timeout(config.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(config.timeout)
        )),
    }
}

fn healthy_status(status: StatusCode, path: &str) -> Result<(), String> {
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tracker(unhealthy_after: u32, healthy_after: u32) -> Tracker {
        Tracker::new(&AppHealthConfig {
            path: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after,
            healthy_after,
        })
    }

    fn fail() -> Result<(), String> {
        Err("refused".into())
    }

    #[test]
    fn down_until_the_first_successes_then_down_after_failures_in_a_row() {
        let mut t = tracker(3, 2);
        assert_eq!(t.observe(fail()), None, "down from the start, no change");
        assert_eq!(t.observe(Ok(())), None, "one success of two");
        assert_eq!(t.observe(fail()), None, "the streak is broken");
        assert_eq!(t.observe(Ok(())), None);
        assert_eq!(t.observe(Ok(())), Some(None), "two in a row: up");
        assert_eq!(t.observe(fail()), None);
        assert_eq!(t.observe(fail()), None);
        assert_eq!(t.observe(Ok(())), None, "a success resets the failures");
        assert_eq!(t.observe(fail()), None);
        assert_eq!(t.observe(fail()), None);
        assert_eq!(
            t.observe(fail()),
            Some(Some(Arc::from("refused"))),
            "three in a row: down, with the last reason"
        );
    }

    #[test]
    fn redirects_count_as_healthy_and_errors_name_the_status() {
        assert!(healthy_status(StatusCode::NO_CONTENT, "/h").is_ok());
        assert!(healthy_status(StatusCode::FOUND, "/h").is_ok());
        assert_eq!(
            healthy_status(StatusCode::SERVICE_UNAVAILABLE, "/h").unwrap_err(),
            "GET /h answered 503 Service Unavailable"
        );
    }
}
