//! A test cluster: etcd and kube-apiserver as child processes on loopback ports, with a
//! temporary directory for etcd's data, the certificates and both logs. Everything stops and is
//! removed when the cluster is dropped; what a killed test run left behind is removed by the
//! next cluster to start.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_testkit::process::KillOnDrop;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::binaries::Binaries;
use crate::error::ClusterError;
use crate::pki::ClusterPki;

/// How long etcd and the API server get to become ready: the API server's start hooks (RBAC
/// roles, priority levels, system namespaces) take seconds, more on a loaded machine.
const READY_PATIENCE: Duration = Duration::from_secs(60);

/// Between readiness checks.
const POLL: Duration = Duration::from_millis(100);

/// How long one readiness check may take, so a server that accepts but never answers cannot
/// stretch the wait past its patience.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin's client certificate says: `system:masters` is the group Kubernetes grants
/// every permission without any binding.
const ADMIN: (&str, &[&str]) = ("admin", &["system:masters"]);

/// Names the cluster's temporary directory: `mesh-kube-<pid>-<random>`, so a later run can tell
/// whose test process is gone.
const DIR_PREFIX: &str = "mesh-kube-";

/// The issuer (`iss`) of the service-account tokens the API server signs and accepts.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How many of a program's last log lines an error shows.
const LOG_TAIL_LINES: usize = 30;

/// A running etcd and kube-apiserver (v1.37) with RBAC on, no nodes and no controllers: objects
/// are stored, validated, admitted and authorized for real, but nothing reconciles them (a Pod
/// stays Pending, a Deployment makes no ReplicaSet).
///
/// Clients authenticate by certificates from a per-run client CA; [`TestCluster::admin`] is in
/// `system:masters`, [`TestCluster::client_as`] is anyone else.
pub struct TestCluster {
    // Fields drop in order: the API server stops before its etcd, and both before their
    // directory is removed.
    apiserver: KillOnDrop,
    etcd: KillOnDrop,
    pki: ClusterPki,
    url: String,
    dir: TempDir,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("url", &self.url)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// Starts etcd, then the API server, and waits until the API server's `/readyz` passes.
    pub async fn start(binaries: &Binaries) -> Result<Self, ClusterError> {
        // kube's TLS builds on rustls' process-wide provider; the mesh uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        remove_orphans(&std::env::temp_dir());

        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|e| ClusterError::io("create", &std::env::temp_dir(), e))?;
        let pki = ClusterPki::create(&dir.path().join("pki"))?;

        let client_port = mesh_testkit::free_port();
        let peer_port = mesh_testkit::free_port();
        let etcd_url = format!("http://{client_port}");
        let peer_url = format!("http://{peer_port}");
        let etcd = spawn(
            "etcd",
            Command::new(&binaries.etcd)
                .arg("--name=mesh-test")
                .arg(flag("--data-dir", &dir.path().join("etcd")))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=mesh-test={peer_url}"))
                // A test cluster's data dies with it: waiting for the disk only slows it down.
                .arg("--unsafe-no-fsync"),
            &dir.path().join("etcd.log"),
        )?;

        let secure_port = mesh_testkit::free_port().port();
        let apiserver = spawn(
            "kube-apiserver",
            Command::new(&binaries.apiserver)
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={secure_port}"))
                .arg(flag("--tls-cert-file", &pki.serving.cert))
                .arg(flag("--tls-private-key-file", &pki.serving.key))
                .arg(flag("--client-ca-file", &pki.client_ca_file))
                .arg("--authorization-mode=Node,RBAC")
                .arg(format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"))
                .arg(flag(
                    "--service-account-key-file",
                    &pki.service_account_public,
                ))
                .arg(flag(
                    "--service-account-signing-key-file",
                    &pki.service_account_key,
                ))
                // Only the API allocates from it; no traffic ever goes there.
                .arg("--service-cluster-ip-range=10.96.0.0/12")
                // The `kubernetes` Service's endpoints would be the loopback advertise address,
                // which Endpoints validation rejects; nothing here needs them.
                .arg("--endpoint-reconciler-type=none")
                .arg("--profiling=false"),
            &dir.path().join("kube-apiserver.log"),
        )?;

        let mut cluster = Self {
            apiserver,
            etcd,
            pki,
            url: format!("https://127.0.0.1:{secure_port}"),
            dir,
        };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The serving CA's certificate (PEM), the one root a client must trust.
    pub fn ca_file(&self) -> &Path {
        &self.pki.serving_ca
    }

    /// The directory holding etcd's data, the certificates and the two logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The key the API server signs service-account tokens with (ECDSA P-256, PKCS#8 PEM):
    /// a test signs tokens of its own with it, such as an expired one the TokenRequest API
    /// would never issue. Their issuer is [`SERVICE_ACCOUNT_ISSUER`].
    pub fn service_account_signing_key(&self) -> &Path {
        &self.pki.service_account_key
    }

    /// The process IDs of etcd and the API server.
    pub fn pids(&self) -> (u32, u32) {
        (self.etcd.id(), self.apiserver.id())
    }

    /// A client authenticated as `admin` in `system:masters`, allowed everything.
    pub fn admin(&self) -> Result<kube::Client, ClusterError> {
        self.client_as(ADMIN.0, ADMIN.1)
    }

    /// A client authenticated as `user` in `groups` by a fresh client certificate (CN = user,
    /// O = each group). RBAC gives it nothing until a binding names it or a group.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> Result<kube::Client, ClusterError> {
        let error = |source| ClusterError::Client {
            user: user.to_owned(),
            source,
        };
        let pair = self.pki.client(user, groups)?;
        let url = self.url.parse().map_err(|source| ClusterError::Url {
            url: self.url.clone(),
            source,
        })?;
        let mut config = kube::Config::new(url);
        config.root_cert_file = Some(self.pki.serving_ca.clone());
        config.auth_info.client_certificate = Some(pair.cert.display().to_string());
        config.auth_info.client_key = Some(pair.key.display().to_string());
        kube::Client::try_from(config).map_err(error)
    }

    /// Writes a kubeconfig for `user` in `groups` (a fresh client certificate, as
    /// [`TestCluster::client_as`] makes) into the cluster's directory, for programs that take a
    /// `--kubeconfig`: one cluster, one user, one context named `user`, current. The file goes
    /// when the cluster does.
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str]) -> Result<PathBuf, ClusterError> {
        let pair = self.pki.client(user, groups)?;
        let stem: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = self.dir.path().join(format!("kubeconfig-{stem}"));
        // JSON is YAML: every kubeconfig reader takes it.
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "test",
                "cluster": {
                    "server": self.url,
                    "certificate-authority": self.pki.serving_ca.display().to_string(),
                },
            }],
            "users": [{
                "name": user,
                "user": {
                    "client-certificate": pair.cert.display().to_string(),
                    "client-key": pair.key.display().to_string(),
                },
            }],
            "contexts": [{ "name": user, "context": { "cluster": "test", "user": user } }],
            "current-context": user,
        });
        std::fs::write(&path, config.to_string())
            .map_err(|e| ClusterError::io("write", &path, e))?;
        Ok(path)
    }

    /// A kubeconfig for the admin (`system:masters`), as [`TestCluster::kubeconfig_as`].
    pub fn admin_kubeconfig(&self) -> Result<PathBuf, ClusterError> {
        self.kubeconfig_as(ADMIN.0, ADMIN.1)
    }

    /// Polls `/readyz` as the admin until it answers `ok`; fails early, with its log, when
    /// either program exits.
    async fn wait_ready(&mut self) -> Result<(), ClusterError> {
        let client = self.admin()?;
        let started = tokio::time::Instant::now();
        loop {
            for (program, child) in [
                ("etcd", &mut self.etcd),
                ("kube-apiserver", &mut self.apiserver),
            ] {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(ClusterError::Exited {
                        program,
                        status,
                        log: log_tail(&self.dir.path().join(format!("{program}.log"))),
                    });
                }
            }
            let last = match http::Request::get("/readyz").body(Vec::new()) {
                Ok(request) => {
                    match tokio::time::timeout(POLL_TIMEOUT, client.request_text(request)).await {
                        Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
                        Ok(Ok(body)) => body,
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("no answer within {POLL_TIMEOUT:?}"),
                    }
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= READY_PATIENCE {
                return Err(ClusterError::NotReady {
                    program: "kube-apiserver",
                    waited: READY_PATIENCE,
                    last,
                    log: log_tail(&self.dir.path().join("kube-apiserver.log")),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `--name=path`.
fn flag(name: &str, path: &Path) -> String {
    format!("{name}={}", path.display())
}

/// Runs `command` with its output going to `log`, in charge of a [`KillOnDrop`].
fn spawn(
    program: &'static str,
    command: &mut Command,
    log: &Path,
) -> Result<KillOnDrop, ClusterError> {
    let out = File::create(log).map_err(|e| ClusterError::io("create", log, e))?;
    let err = out
        .try_clone()
        .map_err(|e| ClusterError::io("open", log, e))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| ClusterError::Spawn { program, source })?;
    Ok(KillOnDrop::new(child))
}

/// The last lines of a log, for an error message.
fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}

/// Kills the processes and removes the directories of clusters whose test process no longer
/// exists (killed before its cluster could drop), so runs cut short do not pile up.
fn remove_orphans(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name.to_string_lossy()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        for process in processes_using(&dir) {
            let _ = kill(process, Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The test process's ID in a cluster directory's name, `mesh-kube-<pid>-<random>`.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(DIR_PREFIX)?
        .split_once('-')?
        .0
        .parse()
        .ok()
}

/// Processes whose command line names a path under `dir` (etcd's data dir, the API server's
/// certificates).
fn processes_using(dir: &Path) -> Vec<Pid> {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
                .unwrap_or(false)
        })
        .map(Pid::from_raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_cluster_directories() {
        assert_eq!(owner_pid("mesh-kube-4242-AbC123"), Some(4242));
        assert_eq!(owner_pid("mesh-kube-x-AbC123"), None);
        assert_eq!(owner_pid("mesh-4242x1-a"), None);
        assert_eq!(owner_pid("other"), None);
    }

    #[test]
    fn a_dead_owners_directory_is_removed_and_a_live_ones_kept() {
        let temp = tempfile::tempdir().expect("temp dir");
        // PIDs above the kernel's maximum (4194304) never exist.
        let dead = temp.path().join("mesh-kube-4999999-dead");
        let live = temp
            .path()
            .join(format!("{DIR_PREFIX}{}-live", std::process::id()));
        for dir in [&dead, &live] {
            std::fs::create_dir_all(dir.join("etcd")).expect("make dir");
        }
        remove_orphans(temp.path());
        assert!(!dead.exists(), "the dead owner's directory is gone");
        assert!(live.exists(), "this process's directory stays");
    }

    #[test]
    fn a_process_left_using_a_dead_owners_directory_is_killed() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dead = temp.path().join("mesh-kube-4999999-dead");
        std::fs::create_dir_all(&dead).expect("make dir");
        let log = dead.join("etcd.log");
        std::fs::write(&log, "").expect("make log");
        // Stands in for an etcd whose test was killed: it runs until killed, naming the
        // directory on its command line.
        let mut orphan = KillOnDrop::new(
            Command::new("tail")
                .arg("-f")
                .arg(&log)
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn tail"),
        );
        // Until it has exec'd, the child's command line is still the test's.
        let pid = Pid::from_raw(i32::try_from(orphan.id()).expect("pid"));
        for _ in 0..250 {
            if processes_using(&dead).contains(&pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        remove_orphans(temp.path());
        let mut status = None;
        for _ in 0..250 {
            status = orphan.try_wait().expect("poll the process");
            if status.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = status.expect("the orphan exits within 5 s");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "killed"
        );
        assert!(!dead.exists());
    }
}
