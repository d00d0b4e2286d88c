//! The Kubernetes commands: `meshctl install` and `meshctl check`.

use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use meshctl::check::Marks;
use meshctl::install::{InstallOptions, WebhookClient};

/// Prints the manifests; writes the root's certificate to `trust_anchor` if given.
pub(crate) fn install(
    options: &InstallOptions,
    webhook_url: Option<String>,
    trust_anchor: Option<&Path>,
) -> anyhow::Result<()> {
    let client = webhook_url.map_or(WebhookClient::Service, WebhookClient::Url);
    let install = meshctl::install::manifests(options, &client)?;
    let yaml = install.to_yaml()?;
    if let Some(path) = trust_anchor {
        std::fs::write(path, &install.root.cert_pem)
            .with_context(|| format!("--output-trust-anchor {}", path.display()))?;
    }
    std::io::stdout()
        .lock()
        .write_all(yaml.as_bytes())
        .context("write the manifests to stdout")?;
    Ok(())
}

/// Runs the checks and prints them; 0 when all pass, 1 when any fails or the cluster
/// cannot be asked.
pub(crate) fn check(
    target: mesh_kube::connect::Target,
    options: mesh_kube::check::CheckOptions,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("meshctl check: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(async {
        let client = mesh_kube::connect::client(&target).await?;
        Ok::<_, mesh_kube::connect::ConnectError>(mesh_kube::check::run(&client, &options).await)
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("meshctl check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let marks = if std::io::stdout().is_terminal() {
        Marks::Symbols
    } else {
        Marks::Words
    };
    print!("{}", meshctl::check::render(&report, marks));
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
