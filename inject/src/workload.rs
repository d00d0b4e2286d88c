//! Where the pod template of each kind of Kubernetes object is, and how objects are named in
//! messages and reports.

use serde_json::Value;

/// How injection treats an object, by its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The object is a pod template itself.
    Pod,
    /// The object holds a pod template at this path.
    Template(&'static [&'static str]),
    /// A `List`: its `items` are objects.
    List,
    /// Anything else passes through.
    Other,
}

const SPEC_TEMPLATE: &[&str] = &["spec", "template"];
const CRON_JOB_TEMPLATE: &[&str] = &["spec", "jobTemplate", "spec", "template"];

/// The shape of an object of `kind`.
pub(crate) fn shape(kind: Option<&str>) -> Shape {
    match kind {
        Some("Pod") => Shape::Pod,
        Some(
            "Deployment"
            | "StatefulSet"
            | "DaemonSet"
            | "ReplicaSet"
            | "ReplicationController"
            | "Job",
        ) => Shape::Template(SPEC_TEMPLATE),
        Some("CronJob") => Shape::Template(CRON_JOB_TEMPLATE),
        Some("List") => Shape::List,
        _ => Shape::Other,
    }
}

/// `Kind namespace/name`, as messages and reports name an object.
pub(crate) fn describe(object: &Value) -> String {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object without kind");
    let metadata = object.get("metadata");
    let text = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str);
    let name = match (text("name"), text("generateName")) {
        (Some(name), _) => name.to_owned(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => "(no name)".to_owned(),
    };
    match text("namespace") {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The dotted path of `path` under `prefix`, e.g. `items[2].spec.template.`.
pub(crate) fn join(prefix: &str, path: &[&str]) -> String {
    let mut joined = prefix.to_owned();
    for part in path {
        joined.push_str(part);
        joined.push('.');
    }
    joined
}
