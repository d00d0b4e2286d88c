//! A backend a route sends requests or copies to: a service, or one version of it, with a
//! weight. Shared by a route's `backendRefs` and its mirrors.

use serde::{Deserialize, Serialize};

use crate::validate::{Errors, check_label};

/// Largest weight of a backend.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// A backend of a route: a service, or one version of it, and its share of requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendRef {
    /// The service.
    #[serde(rename = "name")]
    pub service: String,
    /// One version of it (from its traffic split); `None`: the service as it splits itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Share of the route's requests relative to the other backends.
    pub weight: u32,
}

// === schema ===

/// One entry of `backendRefs` (or a mirror's `backendRef`), as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRefFile {
    pub(crate) name: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) weight: Option<u32>,
}

// === validation ===

/// One backend reference at `path`.
pub fn backend_ref(file: BackendRefFile, path: &str, errors: &mut Errors) -> Option<BackendRef> {
    let at = |field: &str| format!("{path}.{field}");
    let Some(service) = file.name else {
        errors.push(at("name"), "missing: the service to send requests to");
        return None;
    };
    check_label(errors, &at("name"), &service);
    if let Some(version) = &file.version {
        check_label(errors, &at("version"), version);
    }
    let weight = file.weight.unwrap_or(1);
    if weight > MAX_WEIGHT {
        errors.push(at("weight"), format!("must be at most {MAX_WEIGHT}"));
    }
    Some(BackendRef {
        service,
        version: file.version,
        weight,
    })
}
