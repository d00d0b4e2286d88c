//! Processes `meshctl run` starts inside an instance's namespace, as a given user.
//!
//! Each is `ip netns exec <ns> setpriv --reuid U --regid G --clear-groups --pdeathsig TERM --
//! PROGRAM ...`: `ip` enters the namespace (and bind-mounts its hosts file), `setpriv` drops to
//! the user and asks the kernel to send SIGTERM if meshctl dies, and each execs the next, so
//! the pid held is the program's.

use std::ffi::OsStr;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A command that runs `program` in `namespace` as `uid`/`gid`; add its arguments.
pub fn in_namespace(namespace: &str, uid: u32, gid: u32, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace, "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--pdeathsig", "TERM", "--"])
        .arg(program)
        .kill_on_drop(true);
    command
}

/// Sends `signal` to `child` unless it has exited (its pid may be reused then).
pub fn signal(child: &mut Child, signal: Signal) {
    if matches!(child.try_wait(), Ok(None))
        && let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok())
    {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Sends `first`, waits `patience` for `child` to exit, then kills it; always reaps it.
pub async fn stop(child: &mut Child, first: Signal, patience: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child, first);
    if let Ok(Ok(status)) = tokio::time::timeout(patience, child.wait()).await {
        return Some(status);
    }
    let _ = child.start_kill();
    tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .ok()
        .and_then(Result::ok)
}

/// The shell's convention: the exit code, or 128 + the signal that ended the process.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
