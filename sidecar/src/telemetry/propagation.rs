//! Trace context in headers: W3C `traceparent`/`tracestate`, and B3 accepted on input.
//!
//! W3C Trace Context is what the mesh speaks. Many apps (and Zipkin-era libraries) send B3,
//! either as one `b3` header or as `X-B3-*` headers; the sidecar continues such traces too, and
//! besides `traceparent` it writes the B3 form the request arrived with, so an app that only
//! knows B3 sees its trace continue. When a request carries both, W3C wins.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;

const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Which B3 encoding a request used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum B3 {
    /// One `b3` header.
    Single,
    /// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`, `X-B3-Flags`.
    Multi,
}

/// The trace context a request arrived with.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The parent context (empty when the request starts a trace).
    pub parent: Context,
    /// The B3 form to answer in, when the request used B3.
    pub b3: Option<B3>,
}

/// Reads the parent context from request headers.
pub fn extract(headers: &HeaderMap) -> Extracted {
    let w3c = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let b3 = b3_format(headers);
    if w3c.span().span_context().is_valid() {
        return Extracted { parent: w3c, b3 };
    }
    let parent = match b3 {
        Some(B3::Single) => headers
            .get(B3)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_single),
        Some(B3::Multi) => parse_multi(headers),
        None => None,
    }
    .map(|sc| Context::new().with_remote_span_context(sc))
    .unwrap_or_default();
    Extracted { parent, b3 }
}

/// Writes `cx`'s span as the parent for the next hop: `traceparent` (and `tracestate`), plus
/// the B3 form `b3` if the request arrived with one.
pub fn inject(cx: &Context, b3: Option<B3>, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
    // The propagator writes `tracestate` even when there is none; W3C asks not to send it empty.
    if headers.get(TRACESTATE).is_some_and(|v| v.is_empty()) {
        headers.remove(TRACESTATE);
    }
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    let sampled = if sc.is_sampled() { "1" } else { "0" };
    match b3 {
        Some(B3::Single) => {
            let value = format!("{}-{}-{sampled}", sc.trace_id(), sc.span_id());
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(B3, value);
            }
        }
        Some(B3::Multi) => {
            for (name, value) in [
                (B3_TRACE_ID, sc.trace_id().to_string()),
                (B3_SPAN_ID, sc.span_id().to_string()),
                (B3_SAMPLED, sampled.to_owned()),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
            // Our span is the parent now; the old parent and debug flag belong to the old hop.
            headers.remove(B3_PARENT_SPAN_ID);
            headers.remove(B3_FLAGS);
        }
        None => {}
    }
}

fn b3_format(headers: &HeaderMap) -> Option<B3> {
    if headers.contains_key(B3) {
        Some(B3::Single)
    } else if headers.contains_key(B3_TRACE_ID) {
        Some(B3::Multi)
    } else {
        None
    }
}

/// `{trace id}-{span id}[-{sampling}[-{parent span id}]]`; a lone sampling flag carries no
/// context.
fn parse_single(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let trace_id = parse_trace_id(parts.next()?)?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let sampled = match parts.next() {
        None => true,
        Some("1" | "d" | "true") => true,
        Some("0" | "false") => false,
        Some(_) => return None,
    };
    Some(remote(trace_id, span_id, sampled))
}

fn parse_multi(headers: &HeaderMap) -> Option<SpanContext> {
    let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let trace_id = parse_trace_id(get(&B3_TRACE_ID)?)?;
    let span_id = SpanId::from_hex(get(&B3_SPAN_ID)?).ok()?;
    let debug = get(&B3_FLAGS) == Some("1");
    let sampled = debug || !matches!(get(&B3_SAMPLED), Some("0" | "false"));
    Some(remote(trace_id, span_id, sampled))
}

/// B3 trace IDs may be 64-bit (16 hex digits); they are widened with leading zeros.
fn parse_trace_id(hex: &str) -> Option<TraceId> {
    let id = match hex.len() {
        16 => TraceId::from_hex(&format!("{hex:0>32}")),
        32 => TraceId::from_hex(hex),
        _ => return None,
    }
    .ok()?;
    (id != TraceId::INVALID).then_some(id)
}

fn remote(trace_id: TraceId, span_id: SpanId, sampled: bool) -> SpanContext {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(trace_id, span_id, flags, true, TraceState::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn context(e: &Extracted) -> SpanContext {
        e.parent.span().span_context().clone()
    }

    #[test]
    fn w3c_traceparent_is_read() {
        let e = extract(&headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]));
        let sc = context(&e);
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(e.b3, None);
    }

    #[test]
    fn b3_single_with_a_64_bit_trace_id_is_widened() {
        let e = extract(&headers(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7-1")]));
        let sc = context(&e);
        assert_eq!(
            sc.trace_id().to_string(),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert!(sc.is_sampled());
        assert_eq!(e.b3, Some(B3::Single));
    }

    #[test]
    fn b3_multi_and_its_sampling_decision_are_read() {
        let e = extract(&headers(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]));
        let sc = context(&e);
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(!sc.is_sampled());
        assert_eq!(e.b3, Some(B3::Multi));
    }

    #[test]
    fn malformed_context_starts_a_new_trace() {
        for bad in [
            ("b3", "0"),
            ("b3", "xyz-00f067aa0ba902b7"),
            ("traceparent", "00-zz-00f067aa0ba902b7-01"),
            ("x-b3-traceid", "00000000000000000000000000000000"),
        ] {
            let e = extract(&headers(&[bad, ("x-b3-spanid", "00f067aa0ba902b7")]));
            assert!(!context(&e).is_valid(), "{bad:?}");
        }
    }

    #[test]
    fn inject_writes_w3c_and_the_b3_form_that_arrived() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("1111111111111111").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sc);
        let mut h = headers(&[("x-b3-parentspanid", "2222222222222222")]);
        inject(&cx, Some(B3::Multi), &mut h);
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
        );
        assert_eq!(h["x-b3-traceid"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h["x-b3-spanid"], "1111111111111111");
        assert_eq!(h["x-b3-sampled"], "1");
        assert!(h.get("x-b3-parentspanid").is_none());
        assert!(h.get("tracestate").is_none(), "no empty tracestate");

        let mut h = HeaderMap::new();
        inject(&cx, Some(B3::Single), &mut h);
        assert_eq!(
            h["b3"],
            "4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-1"
        );
    }
}
