//! The demo commands: `up`, `loadgen`, `fault`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use meshctl::fault::FaultChange;
use meshctl::loadgen::LoadOptions;
use meshctl::up::{DemoConfig, JaegerSpec, Manifest, Role, UpOptions};
use tokio::signal::unix::{SignalKind, signal};

/// The runtime of a command. `up` runs in `block_on` on the main thread, which lives as long
/// as meshctl: children's parent-death signal follows the thread that spawned them.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Whether to run Jaeger beside the mesh: `--jaeger`, `--no-jaeger`, or neither.
pub(crate) struct JaegerChoice {
    /// `Some(true)`: required; `Some(false)`: not wanted; `None`: when it is built.
    pub(crate) wanted: Option<bool>,
    /// `--jaeger-bin`.
    pub(crate) bin: Option<PathBuf>,
    /// `--jaeger-query`.
    pub(crate) query: std::net::SocketAddr,
}

impl JaegerChoice {
    fn resolve(self) -> anyhow::Result<Option<JaegerSpec>> {
        if self.wanted == Some(false) {
            return Ok(None);
        }
        let bin = match self.bin {
            Some(bin) if bin.is_file() => Some(bin),
            Some(bin) => bail!("--jaeger-bin {} is not a file", bin.display()),
            None => meshctl::up::jaeger::find_binary(),
        };
        match (bin, self.wanted) {
            (Some(bin), _) => Ok(Some(JaegerSpec {
                bin,
                query: self.query,
            })),
            (None, Some(true)) => bail!(
                "--jaeger: {}; or pass --jaeger-bin",
                meshctl::up::jaeger::how_to_build()
            ),
            (None, _) => Ok(None),
        }
    }
}

pub(crate) fn up(
    config_path: &Path,
    bin_dir: Option<PathBuf>,
    load: f64,
    transparent: bool,
    jaeger: JaegerChoice,
) -> anyhow::Result<()> {
    if !(load >= 0.0 && load.is_finite()) {
        bail!("--load must be 0 or more orders per second, not {load}");
    }
    let config = DemoConfig::load(config_path).map_err(|e| match e {
        meshctl::up::DemoConfigError::Read { .. } => {
            anyhow::anyhow!("{e}\n(run meshctl from the repository root, or pass --config)")
        }
        other => other.into(),
    })?;
    let bin_dir = match bin_dir {
        Some(dir) => dir,
        None => UpOptions::default_bin_dir()?,
    };
    let mut options = UpOptions::new(bin_dir);
    options.jaeger = jaeger.resolve()?;
    options.transparent = transparent.then(meshctl::up::TransparentSpec::new);
    runtime()?.block_on(async move {
        // Installed before anything starts, so Ctrl-C during start-up also stops cleanly.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        println!(
            "starting a control plane, {} instances and a gateway from {}",
            config.instance_count(),
            config_path.display(),
        );
        let mut mesh = tokio::select! {
            biased;
            mesh = meshctl::up::up(&config, &options) => mesh?,
            _ = interrupt.recv() => bail!("interrupted during start-up; everything started was killed"),
            _ = terminate.recv() => bail!("terminated during start-up; everything started was killed"),
        };
        println!("\nThe demo mesh is running.\n");
        print!("{}", meshctl::up::report(&mesh));
        println!("\nCtrl-C stops everything.");
        let status = ProgressBar::new_spinner();
        let load_task = (load > 0.0).then(|| {
            let sidecars = mesh.instances().iter().map(|i| i.admin).collect();
            let target = Some(mesh.gateway_url());
            tokio::spawn(steady_load(target, load, sidecars, status.clone()))
        });
        loop {
            tokio::select! {
                biased;
                _ = interrupt.recv() => break,
                _ = terminate.recv() => break,
                _ = hangup.recv() => break,
                exited = mesh.next_exit() => {
                    let what = match exited.role {
                        Role::Tracing => "; spans are no longer kept",
                        Role::ControlPlane => "; sidecars keep their last configuration",
                        Role::Sidecar => "; its app is cut off from the mesh",
                        Role::App => "; callers fail over to other instances",
                        Role::Gateway => "; the shop is no longer reachable from outside the mesh",
                    };
                    status.suspend(|| eprintln!(
                        "meshctl: {} (pid {}) exited unexpectedly ({}){what}; see {}",
                        exited.name,
                        exited.pid,
                        exited.status,
                        exited.log.display()
                    ));
                }
            }
        }
        if let Some(task) = load_task {
            task.abort();
        }
        status.finish();
        println!("\nstopping: the gateway, apps, then sidecars, then the control plane...");
        let killed = mesh.stop().await;
        if killed.is_empty() {
            println!("stopped");
        } else {
            println!("stopped; killed after the timeout: {}", killed.join(", "));
        }
        Ok(())
    })
}

/// Places `rate` orders a second through the storefront until aborted, in windows of five
/// seconds, keeping `status` on the totals so far: what the demo looks like under traffic.
async fn steady_load(
    target: Option<String>,
    rate: f64,
    sidecars: Vec<std::net::SocketAddr>,
    status: ProgressBar,
) {
    let Some(target) = target else {
        status.set_message("load: the demo has no storefront");
        return;
    };
    status.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    status.enable_steady_tick(Duration::from_millis(200));
    status.set_message(format!(
        "load: {rate} orders/s through {target} starting..."
    ));
    let options = LoadOptions {
        target,
        rate,
        duration: Duration::from_secs(5),
        concurrency: 16,
        sidecars,
        progress: false,
    };
    let (mut ok, mut failed, mut retries) = (0u64, 0u64, 0u64);
    loop {
        match meshctl::loadgen::run(&options).await {
            Ok(window) => {
                ok += window.succeeded;
                failed += window.failed_total();
                retries += window.retries.unwrap_or(0);
                let p99 = if window.latency.is_empty() {
                    "-".to_owned()
                } else {
                    format!(
                        "{:.1}ms",
                        window.latency.value_at_quantile(0.99) as f64 / 1000.0
                    )
                };
                let failures = if window.failed.is_empty() {
                    String::new()
                } else {
                    let list: Vec<String> = window
                        .failed
                        .iter()
                        .map(|(k, n)| format!("{k}: {n}"))
                        .collect();
                    format!("  (last 5s: {})", list.join(", "))
                };
                let line = format!(
                    "load: {rate} orders/s  ok {ok}  failed {failed}  p99 {p99}  retries by the mesh {retries}{failures}"
                );
                if status.is_hidden() {
                    // Not a terminal (a log file, a pipe): one line per window instead.
                    println!("{line}");
                }
                status.set_message(line);
            }
            Err(error) => {
                status.set_message(format!("load: {error}; trying again"));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

pub(crate) fn loadgen(
    target: Option<String>,
    rate: f64,
    duration: Duration,
    concurrency: usize,
    run_dir: &Path,
) -> anyhow::Result<()> {
    let manifest = Manifest::load(run_dir);
    let target = match (target, &manifest) {
        (Some(target), _) => target,
        (None, Ok(m)) => m
            .entry_url()
            .context("the running demo has no gateway or storefront; pass --target")?,
        (None, Err(e)) => bail!("{e}\n(or name the shop's URL with --target URL)"),
    };
    let sidecars = manifest
        .as_ref()
        .map(|m| m.instances.iter().map(|i| i.admin).collect())
        .unwrap_or_default();
    let options = LoadOptions {
        target: target.clone(),
        rate,
        duration,
        concurrency,
        sidecars,
        progress: std::io::stderr().is_terminal(),
    };
    println!(
        "placing {rate}/s orders through {target}/api/orders for {}s (at most {concurrency} in flight)",
        duration.as_secs_f64()
    );
    let summary = runtime()?.block_on(meshctl::loadgen::run(&options))?;
    print!("{}", summary.render());
    if summary.succeeded == 0 {
        bail!("no order succeeded");
    }
    Ok(())
}

pub(crate) fn fault(
    service: &str,
    instance: Option<u16>,
    change: FaultChange,
    run_dir: &Path,
) -> anyhow::Result<()> {
    if let Some(rate) = change.error_rate
        && !(0.0..=1.0).contains(&rate)
    {
        bail!("--error-rate must be between 0 and 1, not {rate}");
    }
    if let Some(status) = change.error_status
        && !(500..=599).contains(&status)
    {
        bail!("--error-status must be between 500 and 599, not {status}");
    }
    let manifest = Manifest::load(run_dir)?;
    let targets: Vec<_> = manifest
        .instances_of(service)
        .filter(|i| instance.is_none_or(|n| i.index == n))
        .cloned()
        .collect();
    if targets.is_empty() {
        let services: std::collections::BTreeSet<&str> = manifest
            .instances
            .iter()
            .map(|i| i.service.as_str())
            .collect();
        match instance {
            Some(n) if services.contains(service) => {
                bail!("{service} has no instance {n} (instances are numbered from 1)")
            }
            _ => bail!(
                "no service {service:?} in the running demo (services: {})",
                services.into_iter().collect::<Vec<_>>().join(", ")
            ),
        }
    }
    runtime()?.block_on(async {
        let client = meshctl::fault::client();
        let mut failed = 0;
        for target in &targets {
            match meshctl::fault::apply(&client, target, &change).await {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("meshctl: {e}");
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            bail!(
                "{failed} of {} instances refused or did not answer",
                targets.len()
            );
        }
        Ok(())
    })
}
