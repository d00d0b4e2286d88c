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

/// Runs every check against `client`'s cluster.
pub async fn run(client: &kube::Client, options: &CheckOptions) -> Report {
    let mut report = Report::default();

    let reachable_title = "the API server is reachable";
    let version_title = format!(
        "its version is {}.{} or newer",
        MIN_VERSION.0, MIN_VERSION.1
    );
    let reachable = match version::reachable(client).await {
        Ok(info) => {
            report.record(CLUSTER, reachable_title, Outcome::Passed(None));
            report.record(CLUSTER, version_title, version::supported(&info));
            true
        }
        Err(failure) => {
            report.record(CLUSTER, reachable_title, failure);
            report.record(
                CLUSTER,
                version_title,
                Outcome::Skipped("the API server is not reachable".to_owned()),
            );
            false
        }
    };
    let rights_title = "the caller may do what check needs";
    let allowed = reachable
        && report.record(
            CLUSTER,
            rights_title,
            caller::check(client, &caller::needed(&options.namespace)).await,
        );
    if !reachable {
        report.record(
            CLUSTER,
            rights_title,
            Outcome::Skipped("the API server is not reachable".to_owned()),
        );
    }
    let later = [
        (
            RESOURCES,
            format!("namespace {} exists", crate::names::NAMESPACE),
        ),
        (
            RESOURCES,
            "the control plane's ServiceAccount exists".to_owned(),
        ),
        (
            RESOURCES,
            "the control plane has the rights it needs".to_owned(),
        ),
        (RESOURCES, "the policy CRD is established".to_owned()),
        (CONTROL_PLANE, "the control plane is ready".to_owned()),
        (CONTROL_PLANE, "the webhook is registered".to_owned()),
        (
            CONTROL_PLANE,
            "CA healthy: the webhook trusts the mesh's root, not expiring within 30 days"
                .to_owned(),
        ),
        (CONTROL_PLANE, "the webhook injects pods".to_owned()),
        (PODS, "every injected pod's proxy is ready".to_owned()),
    ];
    if !allowed {
        let why = if reachable {
            "the caller lacks rights check needs"
        } else {
            "the API server is not reachable"
        };
        for (section, title) in later {
            report.record(section, title, Outcome::Skipped(why.to_owned()));
        }
        return report;
    }
    let [
        namespace_title,
        account_title,
        rights_title,
        crd_title,
        ready_title,
        registered_title,
        ca_title,
        answers_title,
        pods_title,
    ] = later.map(|(_, title)| title);

    let namespace = report.record(
        RESOURCES,
        namespace_title,
        resources::namespace(client).await,
    );
    let missing_namespace = || {
        Outcome::Skipped(format!(
            "namespace {} does not exist",
            crate::names::NAMESPACE
        ))
    };
    if namespace {
        report.record(
            RESOURCES,
            account_title,
            resources::service_account(client).await,
        );
    } else {
        report.record(RESOURCES, account_title, missing_namespace());
    }
    report.record(
        RESOURCES,
        rights_title,
        resources::control_plane_rights(client).await,
    );
    report.record(RESOURCES, crd_title, resources::policy_crd(client).await);

    let ready = if namespace {
        report.record(CONTROL_PLANE, ready_title, deployment::ready(client).await)
    } else {
        report.record(CONTROL_PLANE, ready_title, missing_namespace())
    };
    match webhook::configuration(client).await {
        Ok(config) => {
            report.record(CONTROL_PLANE, registered_title, Outcome::Passed(None));
            if namespace {
                report.record(
                    CONTROL_PLANE,
                    ca_title,
                    webhook::ca_healthy(client, &config).await,
                );
            } else {
                report.record(CONTROL_PLANE, ca_title, missing_namespace());
            }
            if ready {
                report.record(
                    CONTROL_PLANE,
                    answers_title,
                    webhook::answers(client, &options.namespace).await,
                );
            } else {
                report.record(
                    CONTROL_PLANE,
                    answers_title,
                    Outcome::Skipped("the control plane is not ready".to_owned()),
                );
            }
        }
        Err(failure) => {
            report.record(CONTROL_PLANE, registered_title, failure);
            let why = "the webhook is not registered";
            report.record(CONTROL_PLANE, ca_title, Outcome::Skipped(why.to_owned()));
            report.record(
                CONTROL_PLANE,
                answers_title,
                Outcome::Skipped(why.to_owned()),
            );
        }
    }
    report.record(PODS, pods_title, pods::proxies_ready(client).await);
    report
}
