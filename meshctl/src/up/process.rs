//! Child processes of a demo run: started with their output in a log file, stopped with
//! SIGTERM then SIGKILL, always reaped.
//!
//! If meshctl itself dies abruptly, its children should not outlive it. `unsafe` is forbidden
//! here, so `prctl(PR_SET_PDEATHSIG)` cannot be called between fork and exec; instead each child
//! is started through util-linux's `setpriv --pdeathsig TERM` when that exists (it sets the
//! flag and then execs the binary, so the pid is the binary's). The kernel sends the signal
//! when the *thread* that spawned the child ends, so `up` must run on a thread that outlives
//! the mesh: the thread of `block_on` or a runtime worker, never a `spawn_blocking` thread
//! (those end when idle). With setpriv each child also gets its own process group, so a
//! Ctrl-C in the terminal reaches meshctl alone and the stop order holds. Without setpriv,
//! children stay in meshctl's process group: a terminal hang-up or `kill -- -<pgid>` still
//! reaches them all.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// What a child is, which decides when it is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The trace collector (Jaeger): started first and stopped last, so it receives the spans
    /// sidecars flush as they stop.
    Tracing,
    /// The control plane: stopped after the sidecars.
    ControlPlane,
    /// A sidecar: stopped after the apps.
    Sidecar,
    /// An app: stopped right after the gateway.
    App,
    /// The gateway: stopped first, so no outside request comes in while the mesh stops.
    Gateway,
}

/// A child process of the run.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) pid: u32,
    pub(crate) log: PathBuf,
    child: Child,
    /// Set once the exit was seen (and the child reaped).
    pub(crate) exit: Option<ExitStatus>,
}

/// Where setpriv may be.
const SETPRIV: [&str; 2] = ["/usr/bin/setpriv", "/bin/setpriv"];

fn setpriv() -> Option<&'static str> {
    SETPRIV.into_iter().find(|p| Path::new(p).is_file())
}

impl Proc {
    /// Starts `bin args` with stdin closed and stdout and stderr appended to `log`.
    pub(crate) fn spawn(
        name: &str,
        role: Role,
        bin: &Path,
        args: &[std::ffi::OsString],
        log: &Path,
    ) -> std::io::Result<Self> {
        let out = File::create(log)?;
        let err = out.try_clone()?;
        let mut command = match setpriv() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "TERM", "--"]).arg(bin);
                // Its own process group: Ctrl-C in the terminal reaches meshctl alone, which
                // then stops apps, sidecars and the control plane in that order. The death
                // signal still ends the child if meshctl dies.
                c.process_group(0);
                c
            }
            None => Command::new(bin),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the child exited before its pid was read"))?;
        Ok(Self {
            name: name.to_owned(),
            role,
            pid,
            log: log.to_owned(),
            child,
            exit: None,
        })
    }

    /// The exit status if the child has exited (reaping it), without waiting.
    pub(crate) fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some(status);
        }
        self.exit
    }

    /// Sends `signal` unless the child is known to have exited (its pid may be reused then).
    pub(crate) fn signal(&mut self, signal: Signal) {
        if self.poll_exit().is_none()
            && let Ok(pid) = i32::try_from(self.pid)
        {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Waits until `deadline` for the child to exit; then kills it. Always reaps it.
    /// Returns whether it had to be killed.
    pub(crate) async fn wait_or_kill(&mut self, deadline: tokio::time::Instant) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match tokio::time::timeout_at(deadline, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.exit = Some(status);
                false
            }
            _ => {
                let _ = self.child.start_kill();
                if let Ok(Ok(status)) =
                    tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await
                {
                    self.exit = Some(status);
                }
                true
            }
        }
    }

    /// SIGKILL and reap without awaiting: for `Drop`, which cannot.
    pub(crate) fn kill_now(&mut self) {
        if self.poll_exit().is_none() {
            let _ = self.child.start_kill();
        }
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
