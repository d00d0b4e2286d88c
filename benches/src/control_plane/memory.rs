//! This process's memory and file descriptors, from /proc.
//!
//! The control plane runs in this process, so its memory is read as growth of the process's
//! resident set over a baseline taken just before; that growth also holds the simulated
//! sidecars' side of every stream (see the report's method note).

use std::path::PathBuf;

use super::BenchError;

/// Resident set now and its high-water mark, in KiB.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rss {
    pub(crate) now_kib: u64,
    pub(crate) peak_kib: u64,
}

/// Reads VmRSS and VmHWM of this process.
pub(crate) fn rss() -> Result<Rss, BenchError> {
    let path = PathBuf::from("/proc/self/status");
    let status = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        what: "read /proc/self/status",
        source,
    })?;
    let field = |name: &str| {
        crate::pair::status_field(&status, name)
            .ok_or(BenchError::Proc(name.trim_end_matches(':').to_owned()))
    };
    Ok(Rss {
        now_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so a later peak belongs to what ran since.
/// Returns whether the kernel accepted it.
pub(crate) fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Open file descriptors of this process.
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Raises the soft open-file limit to at least `need` (up to the hard limit): each channel is a
/// socket on both ends, in one process. Returns the soft limit in force afterwards.
pub(crate) fn raise_nofile(need: u64) -> Result<u64, BenchError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(BenchError::Rlimit)?;
    if soft >= need {
        return Ok(soft);
    }
    let wanted = need.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).map_err(BenchError::Rlimit)?;
    Ok(wanted)
}
