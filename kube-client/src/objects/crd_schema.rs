//! The OpenAPI schema of a MeshService's spec: the control plane's service file
//! (docs/control-plane.md), field by field, less `name` (the object's name is the service's).
//! The API server prunes unknown fields and checks types; the control plane validates the
//! rest, as it does a file.

use serde_json::{Map, Value, json};

fn string() -> Value {
    json!({ "type": "string" })
}

fn integer() -> Value {
    json!({ "type": "integer" })
}

fn number() -> Value {
    json!({ "type": "number" })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

fn map_of(values: Value) -> Value {
    json!({ "type": "object", "additionalProperties": values })
}

fn object(properties: &[(&str, Value)]) -> Value {
    let properties: Map<String, Value> = properties
        .iter()
        .map(|(name, schema)| ((*name).to_owned(), schema.clone()))
        .collect();
    json!({ "type": "object", "properties": properties })
}

fn with_required(mut schema: Value, required: &[&str]) -> Value {
    schema["required"] = json!(required);
    schema
}

fn described(mut schema: Value, description: &str) -> Value {
    schema["description"] = json!(description);
    schema
}

fn duration() -> Value {
    described(
        string(),
        "A duration: a number and a unit, e.g. 250ms, 2s, 1m.",
    )
}

fn retries() -> Value {
    object(&[
        ("attempts", integer()),
        ("per_try_timeout", duration()),
        ("retry_on", array(string())),
        ("retriable_status_codes", array(integer())),
        (
            "backoff",
            object(&[("base", duration()), ("max", duration())]),
        ),
        (
            "budget",
            object(&[
                ("ratio", number()),
                ("min_per_second", integer()),
                ("window", duration()),
            ]),
        ),
        ("non_idempotent", boolean()),
        ("max_buffered_body", string()),
    ])
}

fn circuit_breaker() -> Value {
    object(&[
        ("consecutive_failures", integer()),
        ("base_ejection_time", duration()),
        ("max_ejection_time", duration()),
        ("max_ejection_percent", integer()),
        ("max_requests", integer()),
        ("max_pending", integer()),
    ])
}

fn name_value() -> Value {
    with_required(
        object(&[("type", string()), ("name", string()), ("value", string())]),
        &["name", "value"],
    )
}

fn route_match() -> Value {
    object(&[
        ("path", object(&[("type", string()), ("value", string())])),
        ("method", string()),
        ("headers", array(name_value())),
        ("queryParams", array(name_value())),
    ])
}

fn authorization() -> Value {
    let decision = described(string(), "allow or deny");
    object(&[
        ("default", decision.clone()),
        ("allow", array(string())),
        ("deny", array(string())),
        (
            "rules",
            array(object(&[
                ("name", string()),
                ("matches", array(route_match())),
                ("default", decision.clone()),
                ("allow", array(string())),
                ("deny", array(string())),
            ])),
        ),
        ("unauthenticated", decision),
    ])
}

fn rate() -> Value {
    object(&[("requests_per_second", number()), ("burst", integer())])
}

fn rate_limit() -> Value {
    object(&[
        ("requests_per_second", number()),
        ("burst", integer()),
        ("callers", map_of(rate())),
    ])
}

fn fault() -> Value {
    object(&[
        (
            "delay",
            object(&[("fixedDelay", duration()), ("percentage", number())]),
        ),
        (
            "abort",
            object(&[
                ("httpStatus", integer()),
                (
                    "grpcStatus",
                    described(
                        json!({ "x-kubernetes-int-or-string": true }),
                        "A gRPC status: its code or its name.",
                    ),
                ),
                ("percentage", number()),
            ]),
        ),
    ])
}

fn backend_ref() -> Value {
    object(&[
        ("name", string()),
        ("version", string()),
        ("weight", integer()),
    ])
}

fn path_modifier() -> Value {
    object(&[
        ("type", string()),
        ("replaceFullPath", string()),
        ("replacePrefixMatch", string()),
    ])
}

fn header_modifier() -> Value {
    let header = with_required(
        object(&[("name", string()), ("value", string())]),
        &["name", "value"],
    );
    object(&[
        ("set", array(header.clone())),
        ("add", array(header)),
        ("remove", array(string())),
    ])
}

fn filter() -> Value {
    object(&[
        ("type", string()),
        ("requestHeaderModifier", header_modifier()),
        ("responseHeaderModifier", header_modifier()),
        (
            "urlRewrite",
            object(&[("hostname", string()), ("path", path_modifier())]),
        ),
        (
            "requestRedirect",
            object(&[
                ("scheme", string()),
                ("hostname", string()),
                ("path", path_modifier()),
                ("port", integer()),
                ("statusCode", integer()),
            ]),
        ),
        (
            "requestMirror",
            object(&[("backendRef", backend_ref()), ("percent", number())]),
        ),
    ])
}

fn route() -> Value {
    object(&[
        ("name", string()),
        (
            "match",
            described(
                object(&[
                    ("methods", array(string())),
                    ("path", string()),
                    ("path_prefix", string()),
                ]),
                "The earlier form of matches.",
            ),
        ),
        ("matches", array(route_match())),
        ("filters", array(filter())),
        ("backendRefs", array(backend_ref())),
        ("timeout", duration()),
        ("retries", retries()),
        ("fault", fault()),
    ])
}

/// The spec: a service file's fields.
pub(super) fn spec() -> Value {
    described(
        object(&[
            (
                "calls",
                described(array(string()), "The services it calls."),
            ),
            ("timeout", duration()),
            ("retries", retries()),
            ("circuit_breaker", circuit_breaker()),
            ("load_balancer", string()),
            ("authorization", authorization()),
            ("rate_limit", rate_limit()),
            ("traffic_split", map_of(integer())),
            ("routes", array(route())),
            ("fault", fault()),
            (
                "protocol",
                json!({ "type": "string", "enum": ["http", "tcp"] }),
            ),
            ("listen", string()),
            (
                "port",
                json!({ "type": "integer", "minimum": 1, "maximum": 65535 }),
            ),
            ("virtual_address", string()),
        ]),
        "A service of the mesh, as a control-plane service file (docs/control-plane.md) without \
         its name, which is the object's.",
    )
}

/// The status: the standard conditions, and the generation they describe.
pub(super) fn status() -> Value {
    let condition = with_required(
        object(&[
            ("type", string()),
            (
                "status",
                json!({ "type": "string", "enum": ["True", "False", "Unknown"] }),
            ),
            (
                "observedGeneration",
                json!({ "type": "integer", "format": "int64" }),
            ),
            (
                "lastTransitionTime",
                json!({ "type": "string", "format": "date-time" }),
            ),
            ("reason", string()),
            ("message", string()),
        ]),
        &["type", "status", "lastTransitionTime", "reason", "message"],
    );
    let mut conditions = array(condition);
    conditions["x-kubernetes-list-type"] = json!("map");
    conditions["x-kubernetes-list-map-keys"] = json!(["type"]);
    object(&[
        (
            "observedGeneration",
            json!({ "type": "integer", "format": "int64" }),
        ),
        ("conditions", conditions),
    ])
}
