//! Trace context an app passes on: the headers it copies from the request it serves onto the
//! calls that request causes, so the sidecars can join their spans into one trace.

/// Headers an app copies from its inbound request onto its outbound calls: W3C Trace Context
/// (`traceparent`, `tracestate`) and both B3 encodings, single (`b3`) and multi (`x-b3-*`,
/// including `x-b3-flags`, whose debug flag the sidecar reads as sampled). Lowercase, as HTTP/2
/// requires.
pub const PROPAGATED_HEADERS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];
