//! Two hosts on one machine: network namespaces joined by a veth pair, for tests of a mesh
//! whose sidecars reach each other across a network rather than over loopback.
//!
//! Needs root (to create namespaces) and `ip` from iproute2. Processes run inside a namespace
//! through `ip netns exec`, which enters it and then execs the program, so the child a test
//! holds is the program itself and [`crate::process::KillOnDrop`] stops it.
//!
//! [`Namespace`] is one namespace alone, for what happens inside a single instance's network.
//! [`enter`] runs code on a thread inside a namespace: a socket it makes stays there, so a test
//! can listen inside a namespace without a child process. [`HostsFile`] gives the programs run
//! inside a namespace their own `/etc/hosts`.
//!
//! Addresses come from 198.18.0.0/15, the range set aside for network benchmark tests, so they
//! never clash with a real network. Each namespace has its own ports, so programs inside may
//! listen on fixed ones.

use std::ffi::OsStr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

use crate::process::effective_uid;

/// Tells a test whether it can create namespaces. Not root: prints why the test skips and
/// returns `false`, unless `CI=true`, where root is expected and its absence fails the test.
pub fn available(test: &str) -> bool {
    let root = effective_uid() == Some(0);
    if root {
        return true;
    }
    let why = "network namespaces need root";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}, and under CI=true this test must run");
    }
    eprintln!("{test}: skipped: {why}");
    false
}

/// One end of the pair: a namespace, its veth interface and its address.
#[derive(Debug)]
pub struct Host {
    /// The namespace's name, as `ip netns` knows it.
    pub name: String,
    /// Its veth interface's name.
    pub interface: String,
    /// Its address on the link between the two.
    pub ip: Ipv4Addr,
}

impl Host {
    /// `program` to be run inside this namespace; add its arguments.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command(&self.name, program)
    }

    /// Runs `f` inside this namespace (see [`enter`]).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        enter(&self.name, f)
    }
}

/// One namespace with `lo` up and nothing else, deleted on drop (stop the processes running
/// inside first: declare this before them, so it drops after them).
#[derive(Debug)]
pub struct Namespace {
    /// The namespace's name, as `ip netns` knows it.
    pub name: String,
}

impl Namespace {
    /// Creates the namespace; panics with `ip`'s own message when a step fails. Its name
    /// carries the process ID and a counter, so parallel tests do not clash.
    pub fn create() -> Self {
        remove_orphans();
        // Made before the namespace exists, so that a failure part way still cleans up.
        let namespace = Self {
            name: format!("mesh-{}-solo", next_tag()),
        };
        ip(&["netns", "add", &namespace.name]);
        ip(&["-n", &namespace.name, "link", "set", "lo", "up"]);
        namespace
    }

    /// `program` to be run inside this namespace; add its arguments.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command(&self.name, program)
    }

    /// Runs `f` inside this namespace (see [`enter`]).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        enter(&self.name, f)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// Runs `f` on a thread that has joined the network namespace `name`, and returns what it
/// returns. Sockets keep the namespace they were made in, so a listener bound here serves
/// inside the namespace from any thread; the test's own threads never leave theirs.
pub fn enter<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            let namespace = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(&namespace, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("enter the network namespace {name}: {e}"));
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// `ip netns exec NAME PROGRAM`.
fn command(name: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", name]).arg(program);
    command
}

/// `<pid>x<n>`: unique among this machine's running test processes.
fn next_tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}x{n}", std::process::id())
}

/// Two namespaces, `a` (198.18.0.1/30) and `b` (198.18.0.2/30), joined by a veth pair, with
/// `lo` up in each. Dropping it deletes both, which removes the pair too; stop the processes
/// running inside first (declare this before them, so it drops after them).
#[derive(Debug)]
pub struct TwoHosts {
    /// 198.18.0.1.
    pub a: Host,
    /// 198.18.0.2.
    pub b: Host,
}

impl TwoHosts {
    /// Creates the namespaces and the link; panics with `ip`'s own message when a step fails.
    /// Names carry the process ID and a counter, so parallel tests do not clash.
    pub fn create() -> Self {
        remove_orphans();
        let tag = next_tag();
        let host = |end: &str, ip: [u8; 4]| Host {
            name: format!("mesh-{tag}-{end}"),
            // Interface names are at most 15 bytes: "mv" + pid (at most 7 digits) + ...
            interface: format!("mv{tag}{end}"),
            ip: Ipv4Addr::from(ip),
        };
        // Made before anything exists, so that a failure part way still cleans up.
        let hosts = Self {
            a: host("a", [198, 18, 0, 1]),
            b: host("b", [198, 18, 0, 2]),
        };
        let (a, b) = (&hosts.a, &hosts.b);
        ip(&["netns", "add", &a.name]);
        ip(&["netns", "add", &b.name]);
        ip(&[
            "link",
            "add",
            &a.interface,
            "netns",
            &a.name,
            "type",
            "veth",
            "peer",
            "name",
            &b.interface,
            "netns",
            &b.name,
        ]);
        for host in [a, b] {
            let cidr = format!("{}/30", host.ip);
            ip(&[
                "-n",
                &host.name,
                "addr",
                "add",
                &cidr,
                "dev",
                &host.interface,
            ]);
            ip(&["-n", &host.name, "link", "set", &host.interface, "up"]);
            ip(&["-n", &host.name, "link", "set", "lo", "up"]);
        }
        hosts
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for host in [&self.a, &self.b] {
            // Deleting a namespace that was never made fails harmlessly.
            let _ = Command::new("ip")
                .args(["netns", "delete", &host.name])
                .output();
        }
    }
}

/// Deletes the namespaces (and their `/etc/netns` files) of test processes that no longer exist
/// (killed before their guard could run), so that runs cut short do not pile up.
fn remove_orphans() {
    if let Ok(entries) = std::fs::read_dir(ETC_NETNS) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(pid) = test_pid(&name.to_string_lossy())
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `mesh-<pid>x<n>-<end>`, possibly followed by ` (id: N)`.
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(pid) = test_pid(name)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("ip").args(["netns", "delete", name]).output();
        }
    }
}

/// The process ID in a test namespace's name, `mesh-<pid>x<n>-<end>`.
fn test_pid(name: &str) -> Option<u32> {
    name.strip_prefix("mesh-")
        .and_then(|rest| rest.split_once('x'))
        .and_then(|(pid, _)| pid.parse().ok())
}

/// Where `ip netns exec NAME` finds files to mount over `/etc`: `/etc/netns/NAME/`.
const ETC_NETNS: &str = "/etc/netns";

/// `/etc/netns/<namespace>/hosts`, which `ip netns exec` mounts over `/etc/hosts` for the
/// programs it runs: the names they resolve inside the namespace, the way a transparent mesh
/// maps service names to virtual addresses. Removed, with its directory, on drop.
#[derive(Debug)]
pub struct HostsFile {
    dir: PathBuf,
}

impl HostsFile {
    /// Writes one line per `(address, name)` for `namespace`; panics naming the path if it
    /// cannot. Programs started with `ip netns exec` from now on see it.
    pub fn write(namespace: &str, entries: &[(&str, &str)]) -> Self {
        let guard = Self {
            dir: Path::new(ETC_NETNS).join(namespace),
        };
        std::fs::create_dir_all(&guard.dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", guard.dir.display()));
        let mut text = String::from("127.0.0.1 localhost\n");
        for (address, name) in entries {
            text.push_str(&format!("{address} {name}\n"));
        }
        let path = guard.dir.join("hosts");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        guard
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `ip ARGS`; panics with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip (install iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
