//! Why injection refused an input. Every error names where: the document, the object (kind,
//! namespace and name) and the field path, so a user can find the line to fix.

/// Injection's (and uninjection's) errors. Nothing is written when one occurs.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The input is not YAML (or not JSON); the message carries line and column.
    #[error("the input is not YAML: {message}")]
    NotYaml {
        /// The parser's message, with its location.
        message: String,
    },
    /// A document of the stream is a scalar or a list, not a Kubernetes object.
    #[error("document {document} is {found}, not a Kubernetes object (a mapping with kind)")]
    NotAnObject {
        /// 1-based number of the document among the stream's non-empty ones.
        document: usize,
        /// What it is instead, e.g. "a string".
        found: &'static str,
    },
    /// An error inside one document of a stream.
    #[error("document {document}: {error}")]
    InDocument {
        /// 1-based number of the document among the stream's non-empty ones.
        document: usize,
        /// What is wrong in it (shown in the message, so not also a source).
        error: Box<InjectError>,
    },
    /// A field is missing or has the wrong shape, e.g. a Deployment without `spec.template`.
    #[error("{object}: {field}: {problem}")]
    BadField {
        /// The object, e.g. "Deployment shop/orders".
        object: String,
        /// The field's path, e.g. "spec.template.spec.containers[1]".
        field: String,
        /// What is wrong, e.g. "missing: a Deployment needs a pod template".
        problem: String,
    },
    /// The pod already uses a name or port that the mesh's sidecar needs.
    #[error("{object}: {field}: {problem}")]
    Conflict {
        /// The object, e.g. "Deployment shop/orders".
        object: String,
        /// The field's path, e.g. "spec.template.spec.containers[0].ports[1]".
        field: String,
        /// What collides, and with what.
        problem: String,
    },
    /// One of the `mesh.local/` annotations has a value injection cannot use.
    #[error("{object}: {field}: annotation {annotation}: {value:?} {problem}")]
    BadAnnotation {
        /// The object, e.g. "Deployment shop/orders".
        object: String,
        /// Where the annotations are, e.g. "spec.template.metadata.annotations".
        field: String,
        /// The annotation, e.g. "mesh.local/app-port".
        annotation: &'static str,
        /// Its value as written.
        value: String,
        /// Why it is refused.
        problem: String,
    },
    /// Neither the annotation nor a label names the pod's mesh service.
    #[error(
        "{object}: no mesh service name: set annotation mesh.local/service, or label \
         app.kubernetes.io/name or app, in {field}"
    )]
    NoServiceName {
        /// The object, e.g. "Deployment shop/orders".
        object: String,
        /// Where the pod's metadata is, e.g. "spec.template.metadata".
        field: String,
    },
    /// The output could not be written as YAML.
    #[error("cannot write the output as YAML: {message}")]
    Output {
        /// The serializer's message.
        message: String,
    },
}

impl InjectError {
    /// This error as found in document `document` of a stream.
    pub(crate) fn in_document(self, document: usize) -> Self {
        match self {
            already @ (Self::NotYaml { .. }
            | Self::NotAnObject { .. }
            | Self::InDocument { .. }
            | Self::Output { .. }) => already,
            error => Self::InDocument {
                document,
                error: Box::new(error),
            },
        }
    }
}
