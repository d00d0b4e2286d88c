//! Runs `nft -f -` with a script on its standard input: one transaction, applied whole or not
//! at all. The two failures a person can fix (nft missing, no permission) get their own
//! errors, which say what to do.

use std::io::{self, Write};
use std::process::{Command, ExitStatus, Stdio};

/// Why the script was not applied. In every case the namespace's rules are as they were.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// No `nft` on PATH.
    #[error(
        "`nft` was not found on PATH: install nftables (Debian and Ubuntu: apt-get install \
         nftables) or add the directory that holds nft to PATH; nothing was changed"
    )]
    NotFound,
    /// The kernel refused: no CAP_NET_ADMIN in this network namespace.
    #[error(
        "nft: operation not permitted: changing the network namespace's rules needs root or the \
         NET_ADMIN capability (run as root, or give the container or init container NET_ADMIN); \
         nothing was changed"
    )]
    NotPermitted,
    /// nft could not be started or fed.
    #[error("cannot run nft: {0}")]
    Run(#[source] io::Error),
    /// nft refused the script.
    #[error("nft refused the ruleset ({status}); nothing was changed: {stderr}")]
    Refused {
        /// nft's exit status.
        status: ExitStatus,
        /// What nft said.
        stderr: String,
    },
}

/// Applies `script` with `nft -f -`.
pub(super) fn apply(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => NftError::NotFound,
            _ => NftError::Run(err),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // nft may exit before reading it all (no permission): its status says why, so a
        // broken pipe here is left for the status to explain.
        let written = stdin.write_all(script.as_bytes());
        drop(stdin);
        if let Err(err) = written
            && err.kind() != io::ErrorKind::BrokenPipe
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NftError::Run(err));
        }
    }
    let output = child.wait_with_output().map_err(NftError::Run)?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if stderr.contains("Operation not permitted") {
        return Err(NftError::NotPermitted);
    }
    Err(NftError::Refused {
        status: output.status,
        stderr,
    })
}
