//! A sidecar pair as separate processes, built from the same target directory as the bench.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use mesh_control_plane::ca::{DEFAULT_LEAF_LIFETIME, DevCa};
use mesh_testkit::free_port;
use mesh_testkit::process::KillOnDrop;

/// Running processes: the echo app and two sidecars. Killed on drop.
pub struct Pair {
    _children: Vec<KillOnDrop>,
    /// The orders sidecar's outbound listener, where the bench sends requests.
    pub outbound: SocketAddr,
    /// Process IDs of the orders and inventory sidecars.
    pub sidecar_pids: [u32; 2],
    /// Admin listeners of the orders and inventory sidecars.
    pub admins: [SocketAddr; 2],
    _dir: tempfile::TempDir,
}

/// The directory holding the `sidecar` and `echo-app` binaries of the bench's own profile.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("bench binary has no directory")?;
    for bin in ["sidecar", "echo-app"] {
        if !dir.join(bin).exists() {
            bail!(
                "{} not found; build it first: cargo build --release -p mesh-sidecar -p mesh-testkit",
                dir.join(bin).display()
            );
        }
    }
    Ok(dir.to_owned())
}

/// Spawns `bin`, its stderr kept in `log` for error reports.
fn spawn(bin: &Path, args: &[&str], log: &Path) -> anyhow::Result<KillOnDrop> {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .map(KillOnDrop::new)
        .with_context(|| format!("spawn {}", bin.display()))
}

impl Pair {
    /// Starts the pair and waits (at most 10 s) until both sidecars are ready.
    pub async fn start() -> anyhow::Result<Self> {
        let bins = bin_dir()?;
        let sidecar = crate::datapath::sidecar_binary(&bins)?;
        let dir = tempfile::tempdir()?;
        let ca = DevCa::generate("mesh.local")?;
        ca.write_to(dir.path())?;
        let app = free_port();
        let [o_out, o_in, o_admin, i_out, i_in, i_admin] = std::array::from_fn(|_| free_port());
        let mut configs = Vec::new();
        for (service, out, inb, admin, dest) in [
            (
                "orders",
                o_out,
                o_in,
                o_admin,
                format!("{{ inventory: {{ endpoints: [\"{i_in}\"] }} }}"),
            ),
            ("inventory", i_out, i_in, i_admin, "{}".to_owned()),
        ] {
            ca.issue_service("default", service, DEFAULT_LEAF_LIFETIME)?
                .write_to(dir.path(), service)?;
            let yaml = format!(
                "service: {service}\ntrust_domain: mesh.local\napp: \"{app}\"\n\
                 listen: {{ outbound: \"{out}\", inbound: \"{inb}\", admin: \"{admin}\" }}\n\
                 tls: {{ cert: {service}.pem, key: {service}-key.pem, trust_bundle: ca.pem }}\n\
                 destinations: {dest}\n"
            );
            let path = dir.path().join(format!("{service}.yaml"));
            std::fs::write(&path, yaml)?;
            configs.push(path);
        }
        let mut children = vec![spawn(
            &bins.join("echo-app"),
            &["--name", "inventory", "--listen", &app.to_string()],
            &dir.path().join("echo-app.log"),
        )?];
        for config in &configs {
            let log = config.with_extension("log");
            let config = config.to_string_lossy();
            children.push(spawn(&sidecar, &["--config", &config], &log)?);
        }
        let sidecar_pids = [children[1].id(), children[2].id()];
        let pair = Self {
            _children: children,
            outbound: o_out,
            sidecar_pids,
            admins: [o_admin, i_admin],
            _dir: dir,
        };
        for (service, admin) in [("orders", o_admin), ("inventory", i_admin)] {
            if let Err(err) = pair.wait_ready(admin).await {
                let log = std::fs::read_to_string(pair._dir.path().join(format!("{service}.log")))
                    .unwrap_or_default();
                bail!("{service}: {err}\n{log}");
            }
        }
        Ok(pair)
    }

    async fn wait_ready(&self, admin: SocketAddr) -> anyhow::Result<()> {
        for _ in 0..200 {
            if let Ok(mut tcp) = tokio::net::TcpStream::connect(admin).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                tcp.write_all(
                    b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                )
                .await?;
                let mut rsp = String::new();
                tcp.read_to_string(&mut rsp).await?;
                if rsp.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("sidecar with admin {admin} not ready after 10s")
    }
}

/// Resident and peak resident memory of a process, in KiB, from /proc.
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status_field(&status, name)
            .with_context(|| format!("{name} missing from /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The number of field `name` (with its colon, e.g. `VmRSS:`) in the text of a
/// /proc/<pid>/status file; its unit, if any, dropped.
pub(crate) fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
