//! W3C `traceparent`/`tracestate` and B3 (single and multi header) trace context, read from a
//! request's headers and written back for the next hop.
//!
//! Input: header lines, `name: value`, one per line. The IDs of a context that was read are
//! hex digits the headers carry (a 64-bit B3 trace ID widened with zeros), and the context
//! survives being written and read again unchanged.

#![no_main]

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mesh_sidecar::telemetry::propagation::{extract, inject};
use opentelemetry::trace::TraceContextExt;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let read = extract(&headers);
    let span = read.parent.span();
    let context = span.span_context();
    if context.is_valid() {
        let text = String::from_utf8_lossy(data).to_ascii_lowercase();
        let trace = context.trace_id().to_string();
        let short = trace.strip_prefix("0000000000000000").unwrap_or(&trace);
        assert!(
            text.contains(short),
            "trace ID {trace} is not in the headers"
        );
        let span = context.span_id().to_string();
        assert!(text.contains(&span), "span ID {span} is not in the headers");
    }
    let mut next = HeaderMap::new();
    inject(&read.parent, read.b3, &mut next);
    if !context.is_valid() {
        assert!(next.is_empty(), "no context, nothing written: {next:?}");
        return;
    }
    let again = extract(&next);
    let again_span = again.parent.span();
    let again = again_span.span_context();
    assert_eq!(again.trace_id(), context.trace_id());
    assert_eq!(again.span_id(), context.span_id());
    assert_eq!(again.is_sampled(), context.is_sampled());
    assert_eq!(again.trace_state(), context.trace_state());
});
