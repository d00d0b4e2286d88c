//! What an instance's set-up made, undone in reverse order.
//!
//! Each step of the set-up pushes its undo as soon as it succeeds, so a failure part way, an
//! interruption, or the normal end all remove exactly what exists. Undoing is best effort and
//! never stops early: a step that fails is reported and the rest still run.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use crate::netns::bridge::Bridge;
use crate::netns::ip;

/// One thing to undo.
#[derive(Debug)]
pub enum Undo {
    /// Give the address back to the bridge (which goes with the last member).
    Address(Bridge, Ipv4Addr),
    /// Delete a network namespace (its end of the veth pair goes with it).
    Namespace(String),
    /// Delete a link of the host (the host end of a veth pair).
    Link(String),
    /// Remove a directory and everything in it.
    Dir(PathBuf),
    /// Run `sidecar redirect --remove` in a namespace.
    Redirect {
        /// The namespace.
        namespace: String,
        /// The sidecar binary.
        sidecar: PathBuf,
    },
}

/// The undo list; dropping it undoes whatever is left.
#[derive(Debug, Default)]
pub struct Teardown {
    steps: Vec<Undo>,
}

impl Teardown {
    /// Records an undo step for something just made.
    pub fn push(&mut self, undo: Undo) {
        self.steps.push(undo);
    }

    /// Undoes everything, last made first; returns what failed.
    pub fn run(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some(step) = self.steps.pop() {
            if let Err(e) = undo(&step) {
                failed.push(e);
            }
        }
        failed
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        for failure in self.run() {
            eprintln!("meshctl: clean-up: {failure}");
        }
    }
}

fn undo(step: &Undo) -> Result<(), String> {
    match step {
        Undo::Address(bridge, addr) => bridge
            .leave(*addr)
            .map_err(|e| format!("release {addr} on {}: {e}", bridge.name)),
        Undo::Namespace(name) => ip::ip(&["netns", "delete", name])
            .map(drop)
            .map_err(|e| e.to_string()),
        Undo::Link(name) => {
            // Gone already when its peer's namespace was deleted.
            if ip::link_exists(name) {
                ip::ip(&["link", "delete", name])
                    .map(drop)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Undo::Dir(path) => match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("remove {}: {e}", path.display())),
        },
        Undo::Redirect { namespace, sidecar } => {
            let out = Command::new("ip")
                .args(["netns", "exec", namespace])
                .arg(sidecar)
                .args(["redirect", "--remove"])
                .output()
                .map_err(|e| format!("sidecar redirect --remove in {namespace}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "sidecar redirect --remove in {namespace}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
    }
}
