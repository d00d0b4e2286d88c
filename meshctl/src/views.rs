//! The commands that watch the running mesh: `stat` (and `tap`).

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
