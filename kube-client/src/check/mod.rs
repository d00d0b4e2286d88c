//! The checks of `meshctl check`, in order, each skipped with a reason when a check it needs
//! failed: the API server; the caller's rights; the control plane's namespace, ServiceAccount,
//! rights and CRD; its Deployment; the webhook's registration, CA and answer; injected pods.
//!
//! - `outcome`: results and the bounds on each cluster call; `review`: access reviews;
//! - one module per subject: `version`, `caller`, `resources`, `deployment`, `webhook`, `pods`.

mod caller;
mod deployment;
mod outcome;
mod pods;
mod resources;
mod review;
mod version;
mod webhook;

pub use self::caller::needed as caller_rights;
pub use self::outcome::{CALL_PATIENCE, CheckResult, Outcome, Report};
pub use self::version::MIN_VERSION;
pub use self::webhook::ROOT_MARGIN;

/// The API server and the caller.
const CLUSTER: &str = "the cluster";
/// What install made for the control plane.
const RESOURCES: &str = "the control plane's resources";
/// The running control plane and its webhook.
const CONTROL_PLANE: &str = "the control plane";
/// The workloads.
const PODS: &str = "injected pods";

/// What to check beyond the mesh's fixed names.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// The namespace of the webhook's dry-run pod.
    pub namespace: String,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            namespace: "default".to_owned(),
        }
    }
}

const REACHABLE: &str = "the API server is reachable";
const CALLER: &str = "the caller may do what check needs";
const NAMESPACE: &str = "namespace mesh-system exists";
const ACCOUNT: &str = "the control plane's ServiceAccount exists";
const RIGHTS: &str = "the control plane has the rights it needs";
const CRD: &str = "the policy CRD is established";
const READY: &str = "the control plane is ready";
const REGISTERED: &str = "the webhook is registered";
const CA: &str = "CA healthy: the webhook trusts the mesh's root, not expiring within 30 days";
const INJECTS: &str = "the webhook injects pods";
const PROXIES: &str = "every injected pod's proxy is ready";

/// The checks after the caller's rights, all skipped when those fail.
const AFTER_CALLER: [(&str, &str); 9] = [
    (RESOURCES, NAMESPACE),
    (RESOURCES, ACCOUNT),
    (RESOURCES, RIGHTS),
    (RESOURCES, CRD),
    (CONTROL_PLANE, READY),
    (CONTROL_PLANE, REGISTERED),
    (CONTROL_PLANE, CA),
    (CONTROL_PLANE, INJECTS),
    (PODS, PROXIES),
];

/// Runs every check against `client`'s cluster.
pub async fn run(client: &kube::Client, options: &CheckOptions) -> Report {
    let mut report = Report::default();
    let version = format!(
        "its version is {}.{} or newer",
        MIN_VERSION.0, MIN_VERSION.1
    );
    let skipped = |why: &str| Outcome::Skipped(why.to_owned());

    let allowed = match version::reachable(client).await {
        Ok(info) => {
            report.record(CLUSTER, REACHABLE, Outcome::Passed(None));
            report.record(CLUSTER, version, version::supported(&info));
            let rights = caller::needed(&options.namespace);
            report.record(CLUSTER, CALLER, caller::check(client, &rights).await)
        }
        Err(failure) => {
            let why = "the API server is not reachable";
            report.record(CLUSTER, REACHABLE, failure);
            report.record(CLUSTER, version, skipped(why));
            report.record(CLUSTER, CALLER, skipped(why));
            for (section, title) in AFTER_CALLER {
                report.record(section, title, skipped(why));
            }
            return report;
        }
    };
    if !allowed {
        for (section, title) in AFTER_CALLER {
            report.record(
                section,
                title,
                skipped("the caller lacks rights check needs"),
            );
        }
        return report;
    }

    let namespace = report.record(RESOURCES, NAMESPACE, resources::namespace(client).await);
    let no_namespace = "namespace mesh-system does not exist";
    let account = if namespace {
        resources::service_account(client).await
    } else {
        skipped(no_namespace)
    };
    report.record(RESOURCES, ACCOUNT, account);
    report.record(
        RESOURCES,
        RIGHTS,
        resources::control_plane_rights(client).await,
    );
    report.record(RESOURCES, CRD, resources::policy_crd(client).await);

    let ready = if namespace {
        deployment::ready(client).await
    } else {
        skipped(no_namespace)
    };
    let ready = report.record(CONTROL_PLANE, READY, ready);
    match webhook::configuration(client).await {
        Ok(config) => {
            report.record(CONTROL_PLANE, REGISTERED, Outcome::Passed(None));
            let ca = if namespace {
                webhook::ca_healthy(client, &config).await
            } else {
                skipped(no_namespace)
            };
            report.record(CONTROL_PLANE, CA, ca);
            let injects = if ready {
                webhook::answers(client, &options.namespace).await
            } else {
                skipped("the control plane is not ready")
            };
            report.record(CONTROL_PLANE, INJECTS, injects);
        }
        Err(failure) => {
            let why = "the webhook is not registered";
            report.record(CONTROL_PLANE, REGISTERED, failure);
            report.record(CONTROL_PLANE, CA, skipped(why));
            report.record(CONTROL_PLANE, INJECTS, skipped(why));
        }
    }
    report.record(PODS, PROXIES, pods::proxies_ready(client).await);
    report
}
