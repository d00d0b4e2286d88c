//! The commands that watch the running mesh: `stat`, `tap` and `dashboard`.

use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use meshctl::stat::{self, Report};
use tokio::signal::unix::{SignalKind, signal};

/// How often `stat --watch` refreshes.
const WATCH_EVERY: Duration = Duration::from_secs(2);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", stat::render(report));
    }
    Ok(())
}

/// One line per instance whose numbers are missing, on standard error.
fn warn_missing(report: &Report) {
    for m in &report.missing {
        eprintln!(
            "meshctl: {}: {}; its traffic is left out (check it with `meshctl status` and its sidecar's log)",
            m.instance, m.reason
        );
    }
}

pub(crate) fn stat(
    admin: SocketAddr,
    service: Option<&str>,
    window: Duration,
    watch: bool,
    json: bool,
) -> anyhow::Result<()> {
    let max = Duration::from_secs(300);
    if window < Duration::from_secs(1) || window > max {
        bail!(
            "--window must be from 1s to 5m, not {}",
            humantime::format_duration(window)
        );
    }
    runtime()?.block_on(async {
        if !watch {
            let report = stat::collect(admin, service, window).await?;
            print_report(&report, json)?;
            warn_missing(&report);
            if !report.missing.is_empty() {
                bail!(
                    "{} of the mesh's sidecars did not answer",
                    report.missing.len()
                );
            }
            return Ok(());
        }
        let mut interrupt = signal(SignalKind::interrupt())?;
        let clear = std::io::stdout().is_terminal() && !json;
        loop {
            let result = stat::collect(admin, service, window).await;
            if clear {
                print!("\x1b[H\x1b[2J");
            }
            match &result {
                Ok(report) => {
                    print_report(report, json)?;
                    warn_missing(report);
                }
                // A mesh that goes away while watched is reported, not fatal: it may come back.
                Err(e) => eprintln!("meshctl: {e}"),
            }
            if let Err(stat::ViewError::UnknownService { .. }) = result {
                result?;
            }
            std::io::stdout().flush()?;
            tokio::select! {
                _ = interrupt.recv() => return Ok(()),
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
        }
    })
}

/// What a tap task tells the printer.
enum TapMessage {
    Line(String, meshctl::tap::TapLine),
    Failed(String, meshctl::tap::TapError),
    Ended(String),
}

pub(crate) fn tap(
    admin: SocketAddr,
    service: &str,
    query: meshctl::tap::TapQuery,
    json: bool,
) -> anyhow::Result<()> {
    use meshctl::tap::TapLine;
    if let Some(path) = &query.path
        && !path.starts_with('/')
    {
        bail!("--path {path:?} must start with /");
    }
    runtime()?.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let status = stat::status(admin).await?;
        let targets = stat::targets(&status, Some(service))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<TapMessage>(1024);
        let mut open = 0;
        for target in targets {
            let Some(addr) = target.admin else {
                eprintln!(
                    "meshctl: {}: its sidecar reported no admin address; not tapped",
                    target.instance
                );
                continue;
            };
            open += 1;
            let (tx, query, name) = (tx.clone(), query.clone(), target.instance.clone());
            tokio::spawn(async move {
                let mut stream = match meshctl::tap::open(addr, &query).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        let _ = tx.send(TapMessage::Failed(name, e)).await;
                        return;
                    }
                };
                while let Some(line) = stream.next_line().await {
                    let message = match line {
                        Ok(line) => TapMessage::Line(name.clone(), line),
                        Err(e) => TapMessage::Failed(name.clone(), e),
                    };
                    if tx.send(message).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(TapMessage::Ended(name)).await;
            });
        }
        drop(tx);
        if open == 0 {
            return Err(stat::ViewError::NoInstances {
                service: service.to_owned(),
            }
            .into());
        }
        if !json {
            eprintln!(
                "tapping {service} on {open} sidecar(s); Ctrl-C stops"
            );
        }
        let mut stdout = std::io::stdout();
        loop {
            let message = tokio::select! {
                _ = interrupt.recv() => return Ok(()),
                _ = terminate.recv() => return Ok(()),
                message = rx.recv() => message,
            };
            match message {
                Some(TapMessage::Line(name, TapLine::Request(event))) => {
                    if json {
                        writeln!(stdout, "{}", serde_json::to_string(&TapJson { instance: &name, event: &event })?)?;
                    } else {
                        writeln!(stdout, "{}", meshctl::tap::render(&name, &event))?;
                    }
                    stdout.flush()?;
                }
                Some(TapMessage::Line(name, TapLine::Missed { skipped, dropped })) => eprintln!(
                    "meshctl: {name}: {skipped} requests left out over --rate, {dropped} dropped because this terminal was slower than the traffic"
                ),
                Some(TapMessage::Line(_, TapLine::Other(_))) => {}
                Some(TapMessage::Failed(name, e)) => {
                    eprintln!("meshctl: {name}: {e}; not tapped (see `meshctl status`)");
                    open -= 1;
                }
                Some(TapMessage::Ended(name)) => {
                    eprintln!("meshctl: {name}: its sidecar ended the tap (it is stopping)");
                    open -= 1;
                }
                None => open = 0,
            }
            if open == 0 {
                bail!("no sidecar of {service} can be tapped any more");
            }
        }
    })
}

/// A request with the instance whose sidecar saw it, for `-o json`.
#[derive(serde::Serialize)]
struct TapJson<'a> {
    instance: &'a str,
    #[serde(flatten)]
    event: &'a meshctl::tap::TapEvent,
}

pub(crate) fn dashboard(
    listen: SocketAddr,
    admin: SocketAddr,
    jaeger_url: Option<String>,
    run_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let jaeger_url = jaeger_url
        .or_else(|| {
            meshctl::up::Manifest::load(run_dir)
                .ok()
                .and_then(|m| m.jaeger_url)
        })
        .map(|u| u.trim_end_matches('/').to_owned());
    runtime()?.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e} (pass --listen)"))?;
        println!(
            "dashboard at http://{}/ (control plane {admin}{}); Ctrl-C stops",
            listener.local_addr()?,
            jaeger_url
                .as_deref()
                .map(|u| format!(", traces in {u}"))
                .unwrap_or_default()
        );
        let options = meshctl::dashboard::DashboardOptions { admin, jaeger_url };
        tokio::select! {
            served = meshctl::dashboard::serve(listener, options) => served?,
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        Ok(())
    })
}
