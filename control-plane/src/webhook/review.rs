//! AdmissionReview `admission.k8s.io/v1`: the few fields the webhook reads and writes, and the
//! answer to one review. The API server sends the pod being created; the answer lets it
//! through unchanged, with a JSONPatch that injects it, or refuses it with a message that
//! `kubectl` shows.

use base64::Engine;
use mesh_inject::{PodOutcome, Settings};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only review version the webhook speaks (its configuration lists no other).
pub(crate) const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";
/// The status code of a refused pod: its spec cannot be injected as it stands.
const REFUSED_CODE: u16 = 422;

/// Why a request body is not a review the webhook can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadReview {
    /// Not JSON, or not shaped like an AdmissionReview.
    #[error("not an AdmissionReview {API_VERSION}: {0}")]
    Json(#[from] serde_json::Error),
    /// Another version or kind.
    #[error("apiVersion {api_version:?} kind {kind:?}: only {KIND} {API_VERSION} is served")]
    Version {
        /// The body's `apiVersion`.
        api_version: String,
        /// The body's `kind`.
        kind: String,
    },
    /// No `request`, or one without a `uid` to answer to.
    #[error("AdmissionReview without request.uid: nothing to answer")]
    NoRequest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    #[serde(default)]
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    object: Value,
}

#[derive(Default, Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewAnswer<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: Response<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
}

#[derive(Serialize)]
struct Status {
    code: u16,
    reason: &'static str,
    message: String,
}

/// What the webhook did with a review.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A pod, patched to carry the mesh.
    Injected,
    /// Let through unchanged: already injected, opted out, or not a pod being created.
    Skipped,
    /// A pod that cannot be injected: refused, with this message.
    Refused(String),
}

impl Outcome {
    /// The `outcome` label of the webhook's request counter.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Skipped => "skipped",
            Self::Refused(_) => "refused",
        }
    }
}

/// An answer to send (JSON) and what it decided.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The AdmissionReview response, JSON.
    pub(crate) body: Vec<u8>,
    /// What it decided.
    pub(crate) outcome: Outcome,
    /// The pod, as `Pod namespace/name`, for the log.
    pub(crate) object: String,
}

/// Answers one review: a pod being created is injected with `settings`; anything else passes.
pub(crate) fn answer(body: &[u8], settings: &Settings) -> Result<Answer, BadReview> {
    let review: Review = serde_json::from_slice(body)?;
    if review.api_version != API_VERSION || review.kind != KIND {
        return Err(BadReview::Version {
            api_version: review.api_version,
            kind: review.kind,
        });
    }
    let request = review.request.ok_or(BadReview::NoRequest)?;
    if request.uid.is_empty() {
        return Err(BadReview::NoRequest);
    }
    let object = object_name(&request);
    let creates_pod = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.operation == "CREATE"
        && request
            .sub_resource
            .as_deref()
            .unwrap_or_default()
            .is_empty();
    let (outcome, patch) = if creates_pod {
        match mesh_inject::inject_pod(&request.object, settings, &object) {
            Ok(PodOutcome::Injected(injected)) => {
                let patch = json_patch::diff(&request.object, &injected);
                let patch = serde_json::to_vec(&patch)?;
                (
                    Outcome::Injected,
                    Some(base64::engine::general_purpose::STANDARD.encode(patch)),
                )
            }
            Ok(PodOutcome::AlreadyInjected | PodOutcome::OptedOut) => (Outcome::Skipped, None),
            Err(e) => (Outcome::Refused(e.to_string()), None),
        }
    } else {
        (Outcome::Skipped, None)
    };
    let status = match &outcome {
        Outcome::Refused(message) => Some(Status {
            code: REFUSED_CODE,
            reason: "Invalid",
            // The error names the pod and the field already.
            message: format!("cannot add the mesh sidecar: {message}"),
        }),
        Outcome::Injected | Outcome::Skipped => None,
    };
    let body = serde_json::to_vec(&ReviewAnswer {
        api_version: API_VERSION,
        kind: KIND,
        response: Response {
            uid: &request.uid,
            allowed: !matches!(outcome, Outcome::Refused(_)),
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            status,
        },
    })?;
    Ok(Answer {
        body,
        outcome,
        object,
    })
}

/// `Pod namespace/name`; a pod named by `generateName` has no name yet, so that prefix and `*`.
fn object_name(request: &Request) -> String {
    let metadata = &request.object["metadata"];
    let namespace = request
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .or_else(|| metadata["namespace"].as_str())
        .unwrap_or("default");
    let name = match request.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => name.to_owned(),
        None => match (metadata["name"].as_str(), metadata["generateName"].as_str()) {
            (Some(name), _) if !name.is_empty() => name.to_owned(),
            (_, Some(prefix)) => format!("{prefix}*"),
            _ => "(unnamed)".to_owned(),
        },
    };
    let kind = if request.kind.kind.is_empty() {
        "object"
    } else {
        &request.kind.kind
    };
    format!("{kind} {namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        static ANCHOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let anchor = ANCHOR.get_or_init(|| {
            crate::ca::DevCa::generate("mesh.local")
                .unwrap()
                .cert_pem()
                .to_owned()
        });
        Settings::new("mesh.local", anchor.as_str())
    }

    fn review(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": API_VERSION,
            "kind": "AdmissionReview",
            "request": {
                "uid": "0b4f6a8e-1d2c-4c1e-9a53-3b1f8f2a1c11",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "object": object,
            }
        }))
        .unwrap()
    }

    fn pod(labels: Value, ports: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "orders-", "namespace": "shop", "labels": labels},
            "spec": {"containers": [{"name": "orders", "image": "orders:1", "ports": ports}]},
        })
    }

    fn answer_for(object: Value) -> Answer {
        answer(&review(object), &settings()).unwrap()
    }

    fn response_of(answer: &Answer) -> Value {
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["apiVersion"], API_VERSION);
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(
            body["response"]["uid"],
            "0b4f6a8e-1d2c-4c1e-9a53-3b1f8f2a1c11"
        );
        body["response"].clone()
    }

    #[test]
    fn a_pod_gets_a_patch_that_makes_it_the_injected_pod() {
        let original = pod(json!({"app": "orders"}), json!([{"containerPort": 8080}]));
        let injected = answer_for(original.clone());
        assert_eq!(injected.outcome, Outcome::Injected);
        assert_eq!(injected.object, "Pod shop/orders-*");
        let response = response_of(&injected);
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        let PodOutcome::Injected(expected) =
            mesh_inject::inject_pod(&original, &settings(), "Pod shop/orders-*").unwrap()
        else {
            panic!("not injected");
        };
        assert_eq!(patched, expected);
        // The patch of an injected pod is nothing: it passes unchanged.
        let again = answer_for(patched);
        assert_eq!(again.outcome, Outcome::Skipped);
        assert!(response_of(&again).get("patch").is_none());
    }

    #[test]
    fn an_opted_out_pod_passes_unchanged() {
        let skipped = answer_for(pod(
            json!({"app": "orders", "mesh.local/inject": "disabled"}),
            json!([]),
        ));
        assert_eq!(skipped.outcome, Outcome::Skipped);
        let response = response_of(&skipped);
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none());
    }

    #[test]
    fn a_pod_that_cannot_be_injected_is_refused_with_the_reason() {
        let refused = answer_for(pod(
            json!({"app": "orders"}),
            json!([{"containerPort": 15006}]),
        ));
        let Outcome::Refused(message) = &refused.outcome else {
            panic!("{:?}", refused.outcome);
        };
        assert!(message.contains("15006"), "{message}");
        let response = response_of(&refused);
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 422);
        let shown = response["status"]["message"].as_str().unwrap();
        assert!(shown.contains("Pod shop/orders-*"), "{shown}");
        assert!(shown.contains("15006"), "{shown}");
    }

    #[test]
    fn other_operations_and_kinds_pass_unchanged() {
        let mut update: Value = serde_json::from_slice(&review(pod(json!({}), json!([])))).unwrap();
        update["request"]["operation"] = json!("UPDATE");
        let mut binding = update.clone();
        binding["request"]["operation"] = json!("CREATE");
        binding["request"]["subResource"] = json!("binding");
        let mut deployment = binding.clone();
        deployment["request"]["subResource"] = Value::Null;
        deployment["request"]["kind"] =
            json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        for body in [update, binding, deployment] {
            let passed = answer(&serde_json::to_vec(&body).unwrap(), &settings()).unwrap();
            assert_eq!(passed.outcome, Outcome::Skipped);
            assert_eq!(response_of(&passed)["allowed"], true);
        }
    }

    #[test]
    fn what_is_not_a_review_is_named() {
        let cases: [(&[u8], &str); 5] = [
            (b"garbage", "not an AdmissionReview"),
            (b"{\"apiVersion\": 3}", "not an AdmissionReview"),
            (
                b"{\"apiVersion\": \"admission.k8s.io/v1beta1\", \"kind\": \"AdmissionReview\"}",
                "v1beta1",
            ),
            (
                b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": \"AdmissionReview\"}",
                "request.uid",
            ),
            (
                b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": \"AdmissionReview\", \"request\": {\"uid\": \"\"}}",
                "request.uid",
            ),
        ];
        for (body, expected) in cases {
            let err = answer(body, &settings()).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
