//! The API server: reachable, and new enough for native sidecars (init containers with
//! `restartPolicy: Always`, on by default from Kubernetes 1.29).

use k8s_openapi::apimachinery::pkg::version::Info;

use super::outcome::{Outcome, bounded};

/// The oldest Kubernetes the mesh runs on.
pub const MIN_VERSION: (u32, u32) = (1, 29);

/// The server's version, or the outcome of failing to get it.
pub(super) async fn reachable(client: &kube::Client) -> Result<Info, Outcome> {
    bounded(client.apiserver_version()).await.map_err(|e| {
        Outcome::failed(
            format!("GET /version: {e}"),
            "check that the cluster is up and that --kubeconfig/--context (or KUBECONFIG) name \
             it: `kubectl version` must answer",
        )
    })
}

/// Whether `info` is at least [`MIN_VERSION`].
pub(super) fn supported(info: &Info) -> Outcome {
    let shown = info.git_version.clone();
    match parse(info) {
        Some(version) if version >= MIN_VERSION => Outcome::passed(shown),
        Some(_) => Outcome::failed(
            format!("the API server is {shown}"),
            format!(
                "upgrade the cluster to Kubernetes {}.{} or newer: injected pods run their proxy \
                 as a native sidecar (an init container with restartPolicy: Always)",
                MIN_VERSION.0, MIN_VERSION.1
            ),
        ),
        None => Outcome::failed(
            format!(
                "cannot read the API server's version (major {:?}, minor {:?}, {shown})",
                info.major, info.minor
            ),
            "check that the server is a Kubernetes API server",
        ),
    }
}

/// `(major, minor)` from the fields, whose minor may carry a suffix (`"29+"`), else from the
/// git version (`v1.29.3-gke.1`).
fn parse(info: &Info) -> Option<(u32, u32)> {
    let leading = |s: &str| -> Option<u32> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    if let (Some(major), Some(minor)) = (leading(&info.major), leading(&info.minor)) {
        return Some((major, minor));
    }
    let mut parts = info.git_version.trim_start_matches('v').split('.');
    Some((leading(parts.next()?)?, leading(parts.next()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(major: &str, minor: &str, git: &str) -> Info {
        Info {
            major: major.to_owned(),
            minor: minor.to_owned(),
            git_version: git.to_owned(),
            ..Info::default()
        }
    }

    #[test]
    fn versions_are_read_from_the_fields_or_the_git_version() {
        assert_eq!(parse(&info("1", "37", "v1.37.2")), Some((1, 37)));
        assert_eq!(parse(&info("1", "29+", "v1.29.3-gke.1")), Some((1, 29)));
        assert_eq!(parse(&info("", "", "v1.30.0")), Some((1, 30)));
        assert_eq!(parse(&info("", "", "unknown")), None);
    }

    #[test]
    fn older_than_1_29_fails_with_the_reason() {
        assert_eq!(
            supported(&info("1", "29", "v1.29.0")),
            Outcome::passed("v1.29.0")
        );
        let Outcome::Failed { reason, fix } = supported(&info("1", "28", "v1.28.9")) else {
            panic!("1.28 must fail");
        };
        assert!(reason.contains("v1.28.9"), "{reason}");
        assert!(
            fix.contains("1.29") && fix.contains("native sidecar"),
            "{fix}"
        );
    }
}
