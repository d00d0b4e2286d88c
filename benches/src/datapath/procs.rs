//! Child processes that die with the harness, and what /proc says about them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_testkit::process::KillOnDrop;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Error;
use super::dial::connect_in;

/// Linux reports utime and stime in USER_HZ ticks, which is 100 on every mainstream
/// architecture (it is fixed at compile time of the kernel ABI, unlike CONFIG_HZ).
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// A spawned process with its name and log, killed and reaped on drop, so that an error or a
/// panic in the harness leaves nothing running.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    child: KillOnDrop,
    pub(crate) log: PathBuf,
}

impl Proc {
    /// Spawns `command` with stdout and stderr in `log`.
    pub(crate) fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self, Error> {
        let file = std::fs::File::create(log).map_err(|e| Error::io(log.display(), e))?;
        let err = file.try_clone().map_err(|e| Error::io(log.display(), e))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::Spawn {
                name: name.to_owned(),
                source: e,
            })?;
        Ok(Self {
            name: name.to_owned(),
            child: KillOnDrop::new(child),
            log: log.to_owned(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails when the process has already exited (a bad config, a port in use).
    pub(crate) fn check_alive(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log_tail(),
            }),
            Err(e) => Err(Error::io(&self.name, e)),
        }
    }

    /// Polls `GET path` on `admin` until it answers 200, for at most `limit`.
    pub(crate) async fn wait_ready(
        &mut self,
        admin: SocketAddr,
        path: &str,
        limit: Duration,
    ) -> Result<(), Error> {
        self.wait_ready_in(None, admin, path, limit).await
    }

    /// [`Proc::wait_ready`] for a process in the network namespace `namespace`, where `admin`
    /// is reachable only from inside.
    pub(crate) async fn wait_ready_in(
        &mut self,
        namespace: Option<&str>,
        admin: SocketAddr,
        path: &str,
        limit: Duration,
    ) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            self.check_alive()?;
            if http_get_ok(namespace, admin, path).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::NotReady {
            name: self.name.clone(),
            log: self.log_tail(),
        })
    }
}

/// One `GET` with `Connection: close`, from `namespace`; true on a 200 answer.
pub(crate) async fn http_get_ok(namespace: Option<&str>, addr: SocketAddr, path: &str) -> bool {
    let attempt = async {
        let mut tcp = connect_in(namespace, addr).await?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut rsp = Vec::new();
        tcp.read_to_end(&mut rsp).await?;
        Ok::<_, std::io::Error>(rsp.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}

/// User plus system CPU time of a process so far, in ticks (threads included).
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| Error::io(format!("/proc/{pid}/stat"), e))?;
    // The command name may hold spaces and parentheses; fields are counted after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| Error::Proc(format!("/proc/{pid}/stat has no ')'")))?;
    // After ')' come field 3 (state) onwards; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, Error> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Proc(format!("/proc/{pid}/stat field {n} missing")))
    };
    Ok(field(14)? + field(15)?)
}

/// Busy and total CPU ticks of the whole machine, from the first line of /proc/stat, so the
/// report can say how much CPU other processes took during the measurement.
pub(crate) fn machine_ticks() -> Result<(u64, u64), Error> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| Error::io("/proc/stat", e))?;
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let get = |i: usize| values.get(i).copied().unwrap_or(0);
    let idle = get(3) + get(4);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    Ok((busy, busy + idle))
}

/// Peak resident memory (VmHWM) of a process, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Result<u64, Error> {
    crate::pair::memory_kib(pid)
        .map(|(_, peak)| peak)
        .map_err(|e| Error::Proc(e.to_string()))
}

/// Resident memory of a process now, split as /proc/<pid>/status does: anonymous (its heap and
/// stacks, its own) and file-backed (mostly its binary's pages, shared with every other process
/// running the same binary), in KiB.
pub(crate) fn rss_split_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name| crate::pair::status_field(&status, name);
    Some((field("RssAnon:")?, field("RssFile:")?))
}

/// The `Threads:` line of /proc/<pid>/status.
pub(crate) fn thread_count(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    crate::pair::status_field(&status, "Threads:")
}
