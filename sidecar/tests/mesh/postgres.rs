//! PostgreSQL behind a sidecar pair: a real database server (Debian's `postgresql`), reached
//! by `psql` through a `protocol: tcp` destination, across the mesh's mTLS.
//!
//! PostgreSQL refuses to run as root, so as root (CI) the cluster belongs to the `postgres`
//! user the package creates, and its processes are started as that user with `setpriv`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mesh_testkit::process::{KillOnDrop, Signal, effective_uid};
use mesh_testkit::{TestMesh, eventually, free_port};
use tokio::net::TcpStream;

use crate::tcp::service_pair;

const PATIENCE: Duration = Duration::from_secs(30);

/// A private PostgreSQL cluster on a port of its own, removed with its directory.
struct Postgres {
    // Dropped first: the server stops before its directory is removed. Killed, its backends
    // end on their own; `stop` shuts it down cleanly, so they are reaped by the server.
    server: KillOnDrop,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

/// The directory of `initdb` and `postgres`: on the `PATH`, or Debian's versioned directory.
impl Postgres {
    /// A fast shutdown (SIGINT): the server ends its backends, reaps them and exits.
    async fn stop(mut self) {
        self.server.signal(Signal::SIGINT);
        self.server.exit_within(PATIENCE).await;
    }
}

fn server_bindir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// `program` with `args`, as the `postgres` user when we are root.
fn as_cluster_owner(program: &Path, args: &[&str], root: bool) -> Command {
    let mut cmd;
    if root {
        cmd = Command::new("setpriv");
        cmd.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"])
            .arg(program);
    } else {
        cmd = Command::new(program);
    }
    cmd.args(args);
    cmd
}

fn succeeded(what: &str, out: std::io::Result<Output>) {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// Creates and starts a cluster, and waits until it accepts connections; `None` (the test
    /// skips) when PostgreSQL is not installed outside CI.
    async fn start() -> Option<Self> {
        let Some(bin) = server_bindir() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL (initdb, postgres) is required in CI"
            );
            eprintln!("skipping: PostgreSQL's initdb not found; .ci/run installs postgresql");
            return None;
        };
        let root = effective_uid() == Some(0);
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        if root {
            let uid = user_id("postgres");
            for path in [dir.path(), &data] {
                std::os::unix::fs::chown(path, Some(uid.0), Some(uid.1)).expect("chown");
            }
        }
        let data_arg = data.to_str().expect("utf-8 path");
        let socket_dir = dir.path().to_str().expect("utf-8 path");
        succeeded(
            "initdb",
            as_cluster_owner(
                &bin.join("initdb"),
                &[
                    "-D",
                    data_arg,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                ],
                root,
            )
            .output(),
        );
        let addr = free_port();
        let port = addr.port().to_string();
        let server = as_cluster_owner(
            &bin.join("postgres"),
            &[
                "-D",
                data_arg,
                "-p",
                &port,
                "-k",
                socket_dir,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ],
            root,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start postgres");
        let server = KillOnDrop::new(server);
        eventually("postgres to accept connections", PATIENCE, || async move {
            TcpStream::connect(addr).await
        })
        .await;
        Some(Self {
            server,
            _dir: dir,
            addr,
        })
    }
}

/// The uid and gid of `user`, from `id`.
fn user_id(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, user]).output().expect("id");
        assert!(out.status.success(), "no user {user}: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// `psql -c sql` against `listen`, unaligned and without headers.
fn psql(listen: SocketAddr, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &listen.port().to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-At", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn psql_queries_postgres_through_the_pair() {
    let Some(postgres) = Postgres::start().await else {
        return;
    };
    let mesh = TestMesh::new();
    let (_orders, _server, listen) =
        service_pair(&mesh, "postgres", "orders", postgres.addr, "").await;

    let one = tokio::task::spawn_blocking(move || psql(listen, "select 1"));
    assert_eq!(one.await.unwrap(), "1");
    // A statement that writes, and a reply far larger than one TLS record or HTTP/2 frame.
    let big = tokio::task::spawn_blocking(move || {
        psql(
            listen,
            "create table notes (body text); \
             insert into notes select repeat('x', 1000) from generate_series(1, 2000); \
             select count(*), sum(length(body)) from notes",
        )
    });
    assert_eq!(
        big.await.unwrap(),
        "CREATE TABLE\nINSERT 0 2000\n2000|2000000"
    );
    postgres.stop().await;
}
