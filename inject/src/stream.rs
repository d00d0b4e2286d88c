//! Injection into YAML streams as `meshctl inject` reads them: any number of documents, each a
//! Kubernetes object of any kind, `List`s included.

use std::fmt;

use serde_json::Value;

use crate::annotations::Location;
use crate::document::{self, Node};
use crate::error::InjectError;
use crate::pod::{self, PodOutcome};
use crate::settings::Settings;
use crate::workload::{self, Shape};

/// The result of [`inject_yaml`]: the output stream and what happened to each object.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    /// The injected YAML, documents separated by `---`.
    pub output: String,
    /// One entry per object, in input order (a `List`'s items after the `List`).
    pub objects: Vec<ObjectReport>,
}

/// What injection did to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectReport {
    /// 1-based number of the document among the stream's non-empty ones.
    pub document: usize,
    /// The object, e.g. "Deployment shop/orders".
    pub object: String,
    /// What was done.
    pub outcome: ObjectOutcome,
}

/// What injection did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectOutcome {
    /// The mesh's sidecar was added.
    Injected,
    /// It was injected already; left as it was.
    AlreadyInjected,
    /// Its pods are labelled `mesh.local/inject: disabled`; left as it was.
    OptedOut,
    /// It has no pods (a Service, a ConfigMap, ...); written out unchanged.
    PassedThrough,
}

impl fmt::Display for ObjectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let object = &self.object;
        match self.outcome {
            ObjectOutcome::Injected => write!(f, "{object} injected"),
            ObjectOutcome::AlreadyInjected => {
                write!(
                    f,
                    "{object} skipped: already injected (mesh.local/injected)"
                )
            }
            ObjectOutcome::OptedOut => {
                write!(
                    f,
                    "{object} skipped: its pods are labelled mesh.local/inject: disabled"
                )
            }
            ObjectOutcome::PassedThrough => write!(f, "{object} passed through: no pods"),
        }
    }
}

impl Injection {
    /// The report, one line per object, as `meshctl inject` prints it to stderr.
    pub fn report(&self) -> String {
        let mut text = String::new();
        for object in &self.objects {
            text.push_str(&object.to_string());
            text.push('\n');
        }
        text
    }
}

/// Injects every pod template of a YAML (or JSON) stream of Kubernetes objects, whether or not
/// it opted in, except pods labelled `mesh.local/inject: disabled`. Comments are not kept.
pub fn inject_yaml(text: &str, settings: &Settings) -> Result<Injection, InjectError> {
    let mut objects = Vec::new();
    let output = rewrite(text, |document, value| {
        inject_object(value, settings, "", document, &mut objects)
    })?;
    Ok(Injection { output, objects })
}

/// Removes what [`inject_yaml`] added from every object of a YAML (or JSON) stream.
pub fn uninject_yaml(text: &str) -> Result<String, InjectError> {
    rewrite(text, |_, value| Ok(uninject_object(value)))
}

/// Parses `text`, passes each document through `edit`, and writes the result in the input's
/// key order.
fn rewrite(
    text: &str,
    mut edit: impl FnMut(usize, &Value) -> Result<Value, InjectError>,
) -> Result<String, InjectError> {
    let nodes = document::parse(text).map_err(|message| InjectError::NotYaml { message })?;
    let mut output = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let number = i + 1;
        if !matches!(node, Node::Map(_)) {
            return Err(InjectError::NotAnObject {
                document: number,
                found: node.describe(),
            });
        }
        let value = node.to_json().map_err(|problem| InjectError::NotYaml {
            message: format!("document {number}: {problem}"),
        })?;
        let edited = edit(number, &value).map_err(|error| error.in_document(number))?;
        output.push(Node::from_json(&edited, Some(node)));
    }
    document::write(&output).map_err(|message| InjectError::Output { message })
}

/// Injects `object` (found at `prefix` of its document), recording each object's outcome.
fn inject_object(
    object: &Value,
    settings: &Settings,
    prefix: &str,
    document: usize,
    reports: &mut Vec<ObjectReport>,
) -> Result<Value, InjectError> {
    let name = workload::describe(object);
    let kind = object.get("kind").and_then(Value::as_str);
    let mut report = |outcome| {
        reports.push(ObjectReport {
            document,
            object: name.clone(),
            outcome,
        });
    };
    let template_path = match workload::shape(kind) {
        Shape::Other => {
            report(ObjectOutcome::PassedThrough);
            return Ok(object.clone());
        }
        Shape::List => {
            report(ObjectOutcome::PassedThrough);
            let mut list = object.clone();
            if let Some(Value::Array(items)) = list.get_mut("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    let item_prefix = format!("{prefix}items[{i}].");
                    *item = inject_object(item, settings, &item_prefix, document, reports)?;
                }
            }
            return Ok(list);
        }
        Shape::Pod => &[][..],
        Shape::Template(path) => path,
    };
    let template_prefix = workload::join(prefix, template_path);
    let at = Location {
        object: &name,
        prefix: &template_prefix,
    };
    let mut injected = object.clone();
    let Some(template) = pointer_mut(&mut injected, template_path) else {
        let kind = kind.unwrap_or("object");
        return Err(at.bad_field("", format!("missing: a {kind} needs a pod template here")));
    };
    match pod::inject_at(template, settings, at)? {
        PodOutcome::Injected(pod) => {
            *template = pod;
            report(ObjectOutcome::Injected);
            Ok(injected)
        }
        PodOutcome::AlreadyInjected => {
            report(ObjectOutcome::AlreadyInjected);
            Ok(object.clone())
        }
        PodOutcome::OptedOut => {
            report(ObjectOutcome::OptedOut);
            Ok(object.clone())
        }
    }
}

/// Uninjects `object` and, for a `List`, its items.
fn uninject_object(object: &Value) -> Value {
    let kind = object.get("kind").and_then(Value::as_str);
    let template_path = match workload::shape(kind) {
        Shape::Other => return object.clone(),
        Shape::List => {
            let mut list = object.clone();
            if let Some(Value::Array(items)) = list.get_mut("items") {
                for item in items.iter_mut() {
                    *item = uninject_object(item);
                }
            }
            return list;
        }
        Shape::Pod => &[][..],
        Shape::Template(path) => path,
    };
    let mut uninjected = object.clone();
    if let Some(template) = pointer_mut(&mut uninjected, template_path) {
        *template = pod::uninject_pod(template);
    }
    uninjected
}

/// The value at `path` (mapping keys), if each step is there and the last is not null.
fn pointer_mut<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut current = value;
    for key in path {
        current = current.get_mut(*key)?;
    }
    (!current.is_null()).then_some(current)
}
