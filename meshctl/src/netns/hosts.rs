//! The hosts file of an instance's namespace: each service's name at its virtual address.
//!
//! `ip netns exec <ns>` bind-mounts `/etc/netns/<ns>/hosts` over `/etc/hosts` for what it runs,
//! so the app resolves `inventory` without a DNS server. The file is rewritten in place, never
//! replaced by a rename: a bind mount holds the inode it was made with, and a renamed-in file
//! would go unseen by processes already running.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// `/etc/netns/<namespace>`, which `ip netns exec` reads.
pub fn dir(namespace: &str) -> PathBuf {
    Path::new("/etc/netns").join(namespace)
}

/// The hosts file's text: localhost, then each service at its virtual address.
pub fn render(namespace: &str, services: &BTreeMap<String, String>) -> String {
    let mut out = format!(
        "# Written by meshctl run for the namespace {namespace}: the mesh's services at their\n\
         # virtual addresses, refreshed from the control plane while it runs.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n"
    );
    for (service, address) in services {
        let _ = writeln!(out, "{address}\t{service}");
    }
    out
}

/// Writes `text` over the file at `path` in place (same inode), creating it if missing.
pub fn write_in_place(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_follow_localhost() {
        let services = BTreeMap::from([
            ("inventory".to_owned(), "127.240.0.9".to_owned()),
            ("echo".to_owned(), "127.240.0.10".to_owned()),
        ]);
        let text = render("ns", &services);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "127.0.0.1\tlocalhost",
                "::1\tlocalhost ip6-localhost ip6-loopback",
                "127.240.0.10\techo",
                "127.240.0.9\tinventory",
            ]
        );
    }

    #[test]
    fn rewriting_keeps_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        write_in_place(&path, "a long first version\n").unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        write_in_place(&path, "short\n").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short\n");
    }
}
