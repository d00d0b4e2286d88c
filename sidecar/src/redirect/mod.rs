//! `sidecar redirect`: sends an unmodified app's TCP through its sidecar with nftables rules
//! in the instance's network namespace, the way an init container does before the app starts.
//!
//! Outbound, every TCP connection a process other than the sidecar opens goes to the outbound
//! listener; inbound, TCP arriving for the app's ports goes to the inbound listener. The
//! listener reads where each connection was going with `original_dst`. All rules sit in one
//! table applied in one transaction ([`ruleset`]), so applying twice leaves one copy, a failure
//! leaves nothing half made, and `--remove` deletes exactly what was installed.

mod flags;
mod nft;
mod ruleset;

pub use self::flags::{Cidr, FlagError, Options, PortRange};
pub use self::nft::NftError;
pub use self::ruleset::{Ruleset, TABLE, removal_script};

/// What `sidecar redirect` did.
#[derive(Debug)]
pub enum Done {
    /// `--dry-run`: the script that would have been applied.
    Printed(String),
    /// The table was installed (or replaced).
    Installed,
    /// The table was deleted (or was not there).
    Removed,
}

/// Why `sidecar redirect` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    /// A flag's value, checked against the others.
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// nft missing, not permitted, or refusing the script.
    #[error(transparent)]
    Nft(#[from] NftError),
}

/// Installs, prints or removes the ruleset as `options` say.
pub fn run(options: &Options) -> Result<Done, RedirectError> {
    let script = if options.remove {
        removal_script()
    } else {
        Ruleset::from_options(options)?.script()
    };
    if options.dry_run {
        return Ok(Done::Printed(script));
    }
    nft::apply(&script)?;
    Ok(if options.remove {
        Done::Removed
    } else {
        Done::Installed
    })
}
