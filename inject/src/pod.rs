//! Injection into one pod (or pod template), and its undoing.

use serde_json::{Map, Value};

use crate::annotations::{self, Location};
use crate::error::InjectError;
use crate::names;
use crate::settings::Settings;
use crate::sidecar;

/// What [`inject_pod`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum PodOutcome {
    /// The pod with the mesh's containers, volume and annotation.
    Injected(Value),
    /// The pod carries `mesh.local/injected` already: nothing to do.
    AlreadyInjected,
    /// The pod is labelled `mesh.local/inject: disabled`.
    OptedOut,
}

/// Adds the mesh's sidecar to `pod`, a Pod or a pod template (`metadata` + `spec`). `object`
/// names it in errors (e.g. "Deployment shop/orders"). Never panics on any JSON.
pub fn inject_pod(
    pod: &Value,
    settings: &Settings,
    object: &str,
) -> Result<PodOutcome, InjectError> {
    inject_at(pod, settings, Location { object, prefix: "" })
}

/// [`inject_pod`] for a pod template found at `at.prefix` inside a larger object.
pub(crate) fn inject_at(
    pod: &Value,
    settings: &Settings,
    at: Location<'_>,
) -> Result<PodOutcome, InjectError> {
    let Value::Object(map) = pod else {
        return Err(at.bad_field("", "must be a mapping: a pod or a pod template"));
    };
    let labels = annotations::metadata_map(map, "labels", at)?;
    if annotations::label(labels, names::INJECT_LABEL, at)? == Some(names::INJECT_DISABLED) {
        return Ok(PodOutcome::OptedOut);
    }
    if is_injected(map) {
        return Ok(PodOutcome::AlreadyInjected);
    }
    let spec = match map.get("spec") {
        Some(Value::Object(spec)) => spec,
        Some(_) => return Err(at.bad_field("spec", "must be a mapping: the pod's spec")),
        None => return Err(at.bad_field("spec", "missing: a pod needs a spec")),
    };
    check_spec(spec, at)?;
    let options = annotations::read(map, spec, at)?;

    let mut injected = map.clone();
    let mut metadata = take_object(&mut injected, "metadata");
    let mut pod_annotations = take_object(&mut metadata, "annotations");
    pod_annotations.insert(
        names::INJECTED_ANNOTATION.to_owned(),
        Value::String(settings.version.clone()),
    );
    metadata.insert("annotations".to_owned(), Value::Object(pod_annotations));
    injected.insert("metadata".to_owned(), Value::Object(metadata));

    let mut spec = take_object(&mut injected, "spec");
    let mut init_containers = vec![
        sidecar::init_container(settings, &options),
        sidecar::proxy_container(settings, &options),
    ];
    if let Some(Value::Array(existing)) = spec.remove("initContainers") {
        init_containers.extend(existing);
    }
    spec.insert("initContainers".to_owned(), Value::Array(init_containers));
    let mut volumes = match spec.remove("volumes") {
        Some(Value::Array(existing)) => existing,
        _ => Vec::new(),
    };
    volumes.push(sidecar::token_volume());
    spec.insert("volumes".to_owned(), Value::Array(volumes));
    injected.insert("spec".to_owned(), Value::Object(spec));
    Ok(PodOutcome::Injected(Value::Object(injected)))
}

/// Removes what [`inject_pod`] added; a pod without `mesh.local/injected` comes back as it was.
pub fn uninject_pod(pod: &Value) -> Value {
    let mut pod = pod.clone();
    let Value::Object(map) = &mut pod else {
        return pod;
    };
    if !is_injected(map) {
        return pod;
    }
    if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
        if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
            annotations.remove(names::INJECTED_ANNOTATION);
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
        if metadata.is_empty() {
            map.remove("metadata");
        }
    }
    if let Some(Value::Object(spec)) = map.get_mut("spec") {
        remove_named(
            spec,
            "initContainers",
            &[names::INIT_CONTAINER, names::PROXY_CONTAINER],
        );
        remove_named(spec, "volumes", &[names::TOKEN_VOLUME]);
    }
    pod
}

fn is_injected(pod: &Map<String, Value>) -> bool {
    pod.get("metadata")
        .and_then(|metadata| metadata.get("annotations"))
        .and_then(|annotations| annotations.get(names::INJECTED_ANNOTATION))
        .is_some()
}

/// Drops the items of `spec[key]` named in `names`, and the key when nothing is left.
fn remove_named(spec: &mut Map<String, Value>, key: &str, names: &[&str]) {
    if let Some(Value::Array(items)) = spec.get_mut(key) {
        items.retain(|item| {
            !item
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|name| names.contains(&name))
        });
        if items.is_empty() {
            spec.remove(key);
        }
    }
}

/// `map[key]` taken out as a mapping; a new one if it is missing or null (checked before).
fn take_object(map: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match map.remove(key) {
        Some(Value::Object(object)) => object,
        _ => Map::new(),
    }
}

/// Refuses pods the sidecar cannot join: the host's network, or a name or port the mesh's.
fn check_spec(spec: &Map<String, Value>, at: Location<'_>) -> Result<(), InjectError> {
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        return Err(at.bad_field(
            "spec.hostNetwork",
            "true: the pod shares the node's network, which the mesh's redirect would take \
             over; such a pod cannot be injected (label it mesh.local/inject: disabled)",
        ));
    }
    match spec.get("containers") {
        Some(Value::Array(containers)) if !containers.is_empty() => {}
        Some(Value::Array(_)) => {
            return Err(at.bad_field("spec.containers", "empty: a pod needs a container"));
        }
        Some(_) => return Err(at.bad_field("spec.containers", "must be a list of containers")),
        None => return Err(at.bad_field("spec.containers", "missing: a pod needs a container")),
    }
    let conflict = |field: String, problem: String| InjectError::Conflict {
        object: at.object.to_owned(),
        field: at.field(&field),
        problem,
    };
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let containers = match spec.get(list) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(containers)) => containers,
            Some(_) => {
                return Err(at.bad_field(&format!("spec.{list}"), "must be a list of containers"));
            }
        };
        for (i, container) in containers.iter().enumerate() {
            let Value::Object(container) = container else {
                return Err(at.bad_field(&format!("spec.{list}[{i}]"), "must be a mapping"));
            };
            if let Some(name) = container.get("name").and_then(Value::as_str)
                && (name == names::INIT_CONTAINER || name == names::PROXY_CONTAINER)
            {
                return Err(conflict(
                    format!("spec.{list}[{i}].name"),
                    format!("{name:?} is the name of the mesh's own container: rename this one"),
                ));
            }
            let ports = match container.get("ports") {
                None | Some(Value::Null) => continue,
                Some(Value::Array(ports)) => ports,
                Some(_) => {
                    return Err(at.bad_field(
                        &format!("spec.{list}[{i}].ports"),
                        "must be a list of ports",
                    ));
                }
            };
            for (j, port) in ports.iter().enumerate() {
                let number = port.get("containerPort").and_then(Value::as_u64);
                if let Some(number) =
                    number.filter(|n| names::MESH_PORTS.iter().any(|p| u64::from(*p) == *n))
                {
                    return Err(conflict(
                        format!("spec.{list}[{i}].ports[{j}]"),
                        format!(
                            "containerPort {number} is the mesh sidecar's (it uses 15000, 15001 \
                             and 15006): move the app to another port"
                        ),
                    ));
                }
            }
        }
    }
    match spec.get("volumes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(volumes)) => {
            for (i, volume) in volumes.iter().enumerate() {
                if volume.get("name").and_then(Value::as_str) == Some(names::TOKEN_VOLUME) {
                    return Err(conflict(
                        format!("spec.volumes[{i}].name"),
                        format!(
                            "{:?} is the name of the mesh's own volume: rename this one",
                            names::TOKEN_VOLUME
                        ),
                    ));
                }
            }
        }
        Some(_) => return Err(at.bad_field("spec.volumes", "must be a list of volumes")),
    }
    if let Some(existing) = spec.get("initContainers")
        && !matches!(existing, Value::Array(_) | Value::Null)
    {
        return Err(at.bad_field("spec.initContainers", "must be a list of containers"));
    }
    Ok(())
}
