//! `meshctl`: the operator's command line for the mesh.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use meshctl::certs::{DEFAULT_LEAF_LIFETIME, DevCa};

#[derive(Parser)]
#[command(name = "meshctl", version, about = "Operate the service mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a development CA and one certificate per service.
    ///
    /// Writes DIR/ca.pem (the trust bundle), DIR/ca-key.pem, and for each service
    /// DIR/<service>.pem and DIR/<service>-key.pem with the URI SAN
    /// spiffe://<trust-domain>/ns/<namespace>/sa/<service>. An existing CA in DIR is reused, so
    /// services can be added later.
    DevCerts {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Trust domain of the SPIFFE IDs.
        #[arg(long, default_value = "mesh.local")]
        trust_domain: String,
        /// Namespace of the SPIFFE IDs.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Leaf lifetime, e.g. `24h` or `365d`.
        #[arg(long, value_parser = parse_lifetime)]
        lifetime: Option<Duration>,
        /// Services to issue certificates for.
        #[arg(required = true)]
        services: Vec<String>,
    },
}

fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid lifetime {s:?}"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid lifetime {s:?}: use a number with s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(n * secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::DevCerts {
            out,
            trust_domain,
            namespace,
            lifetime,
            services,
        } => dev_certs(
            &out,
            &trust_domain,
            &namespace,
            lifetime.unwrap_or(DEFAULT_LEAF_LIFETIME),
            &services,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("meshctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dev_certs(
    out: &std::path::Path,
    trust_domain: &str,
    namespace: &str,
    lifetime: Duration,
    services: &[String],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let ca = DevCa::load_or_generate(out, trust_domain)?;
    ca.write_to(out)?;
    println!("trust bundle  {}", out.join("ca.pem").display());
    for service in services {
        let leaf = ca.issue_service(namespace, service, lifetime)?;
        let (cert, _key) = leaf.write_to(out, service)?;
        println!(
            "{:<13} {} ({})",
            service,
            cert.display(),
            ca.spiffe_id(namespace, service)?
        );
    }
    Ok(())
}
