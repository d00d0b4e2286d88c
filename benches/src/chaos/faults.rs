//! What goes wrong during the run, and when: a schedule of kills, restarts and a root CA
//! rotation, spread over the load as fractions of its duration, and policy edits written
//! evenly across it. Each step is noted with when it took effect and how long it took, so the
//! timeline shows what each fault did to the requests around it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use super::error::Error;
use super::mesh::{self, DESTINATION, Mesh, admin_json};

/// One change to the running mesh.
#[derive(Debug, Clone, Copy)]
enum Step {
    KillSidecar(usize),
    StartSidecar(usize),
    KillApp(usize),
    StartApp(usize),
    KillControlPlane,
    StartControlPlane,
    RotateRoot,
}

/// The schedule, as fractions of the load's duration. The first instance loses its sidecar,
/// the second its app, each for an eighth of the run; the control plane is down for a
/// sixteenth; the root rotates after the control plane is back, which also makes its first
/// step wait out the lease in which the registry refills.
const SCHEDULE: [(f64, Step); 7] = [
    (0.08, Step::KillSidecar(0)),
    (0.20, Step::StartSidecar(0)),
    (0.24, Step::KillApp(1)),
    (0.36, Step::StartApp(1)),
    (0.40, Step::KillControlPlane),
    (0.46, Step::StartControlPlane),
    (0.56, Step::RotateRoot),
];

/// Policy edits are written evenly between these fractions of the run.
const EDITS_FROM: f64 = 0.04;
const EDITS_TO: f64 = 0.96;

/// A fault or a step of one, as it happened.
#[derive(Debug, Clone)]
pub struct Event {
    /// When it began, since the load started.
    pub at: Duration,
    /// How long it took (a restart until ready, a CA step until the control plane agreed).
    pub took: Duration,
    pub what: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl Event {
    /// When it took effect.
    pub fn done(&self) -> Duration {
        self.at + self.took
    }
}

/// Runs the schedule against `mesh`, from `start` over `duration`. Steps of the root rotation
/// may go on after the load ends, until `deadline`.
pub(crate) async fn run_schedule(
    mesh: &mut Mesh,
    start: Instant,
    duration: Duration,
    deadline: Instant,
) -> Vec<Event> {
    let mut events = Vec::new();
    for (fraction, step) in SCHEDULE {
        tokio::time::sleep_until(start + duration.mul_f64(fraction)).await;
        let began = Instant::now();
        let (what, result) = match step {
            Step::KillSidecar(i) => {
                mesh.kill_sidecar(i);
                (
                    format!("SIGKILL {}'s sidecar", mesh.instance_name(i)),
                    Ok(()),
                )
            }
            Step::StartSidecar(i) => (
                format!("restart {}'s sidecar (until /ready)", mesh.instance_name(i)),
                mesh.start_sidecar(i).await,
            ),
            Step::KillApp(i) => {
                mesh.kill_app(i);
                (
                    format!(
                        "SIGKILL {}'s app (its sidecar runs on)",
                        mesh.instance_name(i)
                    ),
                    Ok(()),
                )
            }
            Step::StartApp(i) => (
                format!("restart {}'s app", mesh.instance_name(i)),
                mesh.start_app(i).await,
            ),
            Step::KillControlPlane => {
                mesh.kill_control_plane();
                ("SIGKILL the control plane".to_owned(), Ok(()))
            }
            Step::StartControlPlane => (
                "restart the control plane, same state directory (until /ready)".to_owned(),
                mesh.start_control_plane().await,
            ),
            Step::RotateRoot => {
                // Several steps, each noted on its own.
                rotate_root(mesh, start, deadline, &mut events).await;
                continue;
            }
        };
        events.push(Event {
            at: began.duration_since(start),
            took: began.elapsed(),
            what,
            error: result.err().map(|e| e.to_string()),
        });
    }
    events
}

/// The three steps of docs/control-plane.md through the admin API with the admin token: add
/// a root, issue from it once every sidecar trusts it, wait until every certificate comes
/// from it, remove the old root. A step the control plane refuses (409 until it is safe) is
/// tried again every 100 ms until `deadline`.
async fn rotate_root(mesh: &Mesh, start: Instant, deadline: Instant, events: &mut Vec<Event>) {
    let admin = mesh.cp_admin();
    let token = match mesh.admin_token() {
        Ok(token) => token,
        Err(e) => {
            events.push(Event {
                at: start.elapsed(),
                took: Duration::ZERO,
                what: "rotate the root CA".to_owned(),
                error: Some(e.to_string()),
            });
            return;
        }
    };
    let token = Some(token.as_str());
    let mut old = String::new();
    let mut new = String::new();

    let began = Instant::now();
    let added = async {
        let status = admin_json(admin, Method::GET, "/status", None).await?;
        old = text(&status["signer"], "/status signer")?;
        let added = admin_json(admin, Method::POST, "/ca/roots", token).await?;
        new = text(&added["id"], "POST /ca/roots id")?;
        Ok::<_, Error>(())
    }
    .await;
    let failed = added.is_err();
    events.push(Event {
        at: began.duration_since(start),
        took: began.elapsed(),
        what: format!("CA: add a new root {new} beside {old}"),
        error: added.err().map(|e| e.to_string()),
    });
    if failed {
        return;
    }

    let signer_path = format!("/ca/signer/{new}");
    let step = retry_until(deadline, || {
        admin_json(admin, Method::POST, &signer_path, token)
    })
    .await;
    if !note(
        events,
        start,
        format!("CA: issue from {new} (refused until every sidecar trusts it)"),
        step,
    ) {
        return;
    }

    let new_root = new.as_str();
    let step = retry_until(deadline, || async move {
        let status = admin_json(admin, Method::GET, "/status", None).await?;
        let issuers: Vec<String> = status["services"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(_, s)| s["instances"].as_array().cloned().unwrap_or_default())
            .map(|i| i["issuer_id"].as_str().unwrap_or("?").to_owned())
            .collect();
        if !issuers.is_empty() && issuers.iter().all(|i| i == new_root) {
            Ok(())
        } else {
            Err(Error::Admin(format!(
                "issuers of live instances: {issuers:?}"
            )))
        }
    })
    .await;
    if !note(
        events,
        start,
        format!("CA: every live sidecar renewed from {new}"),
        step,
    ) {
        return;
    }

    let remove_path = format!("/ca/roots/{old}");
    let step = retry_until(deadline, || {
        admin_json(admin, Method::DELETE, &remove_path, token)
    })
    .await;
    note(
        events,
        start,
        format!("CA: remove the old root {old} (connections it authenticated close)"),
        step,
    );
}

/// `f` until it succeeds or `deadline` passes: when it began, and the last error.
async fn retry_until<T, F, Fut>(deadline: Instant, mut f: F) -> (Instant, Result<(), Error>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let began = Instant::now();
    loop {
        match f().await {
            Ok(_) => return (began, Ok(())),
            Err(e) if Instant::now() >= deadline => return (began, Err(e)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Notes a step; whether it succeeded.
fn note(
    events: &mut Vec<Event>,
    start: Instant,
    what: String,
    (began, result): (Instant, Result<(), Error>),
) -> bool {
    let ok = result.is_ok();
    events.push(Event {
        at: began.duration_since(start),
        took: began.elapsed(),
        what,
        error: result.err().map(|e| e.to_string()),
    });
    ok
}

fn text(value: &serde_json::Value, what: &str) -> Result<String, Error> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Admin(format!("{what}: missing")))
}

/// What the policy edits did.
#[derive(Debug, Clone)]
pub struct PolicyEdits {
    pub written: u32,
    pub first_at: Option<Duration>,
    pub last_at: Option<Duration>,
    /// Write errors (the file system, not the control plane).
    pub errors: Vec<String>,
    /// Whether the caller's sidecar ended up with the last edit's policy.
    pub last_in_force: Option<bool>,
}

/// Writes `edits` versions of the destination's policy file (see [`mesh::destination_policy`])
/// evenly over the run, each atomically (a new file renamed over the old one, as editors and
/// configuration tools do).
pub(crate) async fn edit_policy(
    services: PathBuf,
    retry_on: &[String],
    edits: u32,
    start: Instant,
    duration: Duration,
) -> PolicyEdits {
    let mut out = PolicyEdits {
        written: 0,
        first_at: None,
        last_at: None,
        errors: Vec::new(),
        last_in_force: None,
    };
    for edit in 1..=edits {
        let fraction = EDITS_FROM
            + (EDITS_TO - EDITS_FROM) * f64::from(edit - 1) / f64::from(edits.max(2) - 1);
        tokio::time::sleep_until(start + duration.mul_f64(fraction)).await;
        match write_atomically(&services, &mesh::destination_policy(edit, retry_on)) {
            Ok(()) => {
                out.written += 1;
                let at = start.elapsed();
                out.first_at.get_or_insert(at);
                out.last_at = Some(at);
            }
            Err(e) => out.errors.push(format!("edit {edit}: {e}")),
        }
    }
    out
}

fn write_atomically(services: &Path, yaml: &str) -> std::io::Result<()> {
    let tmp = services.join(format!(".{DESTINATION}.yaml.tmp"));
    std::fs::write(&tmp, yaml)?;
    std::fs::rename(&tmp, services.join(format!("{DESTINATION}.yaml")))
}

/// Waits (at most `limit`) until the caller's snapshot has edit `edit`'s timeout.
pub(crate) async fn wait_for_edit(mesh: &Mesh, edit: u32, limit: Duration) -> bool {
    let ms = mesh::edit_timeout_ms(edit);
    // As the sidecar writes durations (humantime): "2s 100ms", or "2s".
    let expected = if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s {}ms", ms / 1000, ms % 1000)
    };
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(snapshot) = mesh.caller_snapshot().await
            && snapshot["destinations"][DESTINATION]["policy"]["timeout"] == expected.as_str()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
