//! Child processes of a test: whatever the test spawns is gone when it ends, however it ends.

use std::ops::{Deref, DerefMut};
use std::process::{Child, ExitStatus};
use std::time::Duration;

pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// A spawned process, killed and reaped on drop, so that a failed assertion or an early return
/// leaves nothing running. Derefs to the [`Child`] for its pid, pipes and `try_wait`.
#[derive(Debug)]
pub struct KillOnDrop(Child);

impl KillOnDrop {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// Sends `signal` (SIGTERM to ask for a drain, SIGINT for Ctrl-C).
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.0.id()).expect("pid fits in i32"));
        nix::sys::signal::kill(pid, signal)
            .unwrap_or_else(|e| panic!("send {signal} to {pid}: {e}"));
    }

    /// Waits (polling, so the runtime keeps running) for the process to exit; panics after
    /// `patience`.
    pub async fn exit_within(&mut self, patience: Duration) -> ExitStatus {
        crate::wait::eventually("the process to exit", patience, || {
            let exited = self.0.try_wait().expect("poll the child's status");
            async move { exited }
        })
        .await
    }
}

impl Deref for KillOnDrop {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The effective user ID, from `/proc/self/status` (`Uid: real effective saved fs`).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}
