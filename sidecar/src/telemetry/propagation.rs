//! Trace context in headers: W3C `traceparent`/`tracestate`, and B3 accepted on input.
//!
//! W3C Trace Context is what the mesh speaks; its `traceparent` is read and written here
//! (every request carries one, so it is parsed and formatted without allocating), while
//! `tracestate` is parsed by OpenTelemetry. Many apps (and Zipkin-era libraries) send B3,
//! either as one `b3` header or as `X-B3-*` headers; the sidecar continues such traces too, and
//! besides `traceparent` it writes the B3 form the request arrived with, so an app that only
//! knows B3 sees its trace continue. When a request carries both, W3C wins.

use std::str::FromStr;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// `00-{32 hex trace id}-{16 hex parent id}-{2 hex flags}`.
const TRACEPARENT_LEN: usize = 55;
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
    let b3 = b3_format(headers);
    let w3c = headers
        .get(TRACEPARENT)
        .and_then(|v| parse_traceparent(v.as_bytes()));
    if let Some((trace_id, span_id, flags)) = w3c {
        let sc = SpanContext::new(trace_id, span_id, flags, true, tracestate(headers));
        return Extracted {
            parent: Context::new().with_remote_span_context(sc),
            b3,
        };
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
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    if let Ok(value) = HeaderValue::from_bytes(&format_traceparent(sc)) {
        headers.insert(TRACEPARENT, value);
    }
    // The next hop gets this trace's state, or none: W3C asks not to send it empty.
    let state = (*sc.trace_state() != TraceState::NONE)
        .then(|| sc.trace_state().header())
        .filter(|h| !h.is_empty())
        .and_then(|h| HeaderValue::from_str(&h).ok());
    match state {
        Some(state) => {
            headers.insert(TRACESTATE, state);
        }
        None => {
            headers.remove(TRACESTATE);
        }
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

/// A `traceparent` value by the W3C rules: version `ff` is invalid, version `00` is exactly 55
/// characters, a later version may append `-`-separated fields (ignored); hex is lowercase;
/// all-zero IDs are invalid. Only the sampled flag is kept.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    let value = value.trim_ascii();
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    match hex_byte(&value[0..2])? {
        0xff => return None,
        0x00 if value.len() != TRACEPARENT_LEN => return None,
        _ if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    hex_decode(&value[3..35], &mut trace)?;
    hex_decode(&value[36..52], &mut span)?;
    let flags = TraceFlags::new(hex_byte(&value[53..55])?) & TraceFlags::SAMPLED;
    let (trace_id, span_id) = (TraceId::from_bytes(trace), SpanId::from_bytes(span));
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID)
        .then_some((trace_id, span_id, flags))
}

/// `00-{trace id}-{span id}-{flags}` for `sc`, in lowercase hex.
fn format_traceparent(sc: &SpanContext) -> [u8; TRACEPARENT_LEN] {
    let mut out = [b'-'; TRACEPARENT_LEN];
    out[0..2].copy_from_slice(b"00");
    hex_encode(&sc.trace_id().to_bytes(), &mut out[3..35]);
    hex_encode(&sc.span_id().to_bytes(), &mut out[36..52]);
    hex_encode(
        &[(sc.trace_flags() & TraceFlags::SAMPLED).to_u8()],
        &mut out[53..55],
    );
    out
}

/// Every `tracestate` line, joined as one list; none (or an invalid one) is no state.
fn tracestate(headers: &HeaderMap) -> TraceState {
    let mut lines = headers.get_all(TRACESTATE).iter();
    let Some(first) = lines.next() else {
        return TraceState::NONE;
    };
    let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for line in lines {
        joined.push(',');
        joined.push_str(&String::from_utf8_lossy(line.as_bytes()));
    }
    TraceState::from_str(&joined).unwrap_or_default()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    Some((hex_digit(pair[0])? << 4) | hex_digit(pair[1])?)
}

fn hex_decode(hex: &[u8], out: &mut [u8]) -> Option<()> {
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

fn hex_encode(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
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
    let span_id = parse_span_id(parts.next()?)?;
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
    let span_id = parse_span_id(get(&B3_SPAN_ID)?)?;
    let debug = get(&B3_FLAGS) == Some("1");
    let sampled = debug || !matches!(get(&B3_SAMPLED), Some("0" | "false"));
    Some(remote(trace_id, span_id, sampled))
}

/// A B3 trace ID: 32 lowercase hex digits, or 16 (64-bit), widened with leading zeros. Only
/// hex digits: an integer parser would also take a sign, or fewer digits.
fn parse_trace_id(hex: &str) -> Option<TraceId> {
    let mut bytes = [0u8; 16];
    match hex.len() {
        16 => hex_decode(hex.as_bytes(), &mut bytes[8..])?,
        32 => hex_decode(hex.as_bytes(), &mut bytes)?,
        _ => return None,
    }
    let id = TraceId::from_bytes(bytes);
    (id != TraceId::INVALID).then_some(id)
}

/// A B3 span ID: exactly 16 lowercase hex digits.
fn parse_span_id(hex: &str) -> Option<SpanId> {
    let mut bytes = [0u8; 8];
    if hex.len() != 16 {
        return None;
    }
    hex_decode(hex.as_bytes(), &mut bytes)?;
    let id = SpanId::from_bytes(bytes);
    (id != SpanId::INVALID).then_some(id)
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

    /// B3 IDs are hex digits of their exact length: a short span ID, a sign or an uppercase
    /// digit is no context, not an ID an integer parser made of it.
    #[test]
    fn b3_ids_are_lowercase_hex_of_their_exact_length() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let span = "00f067aa0ba902b7";
        let bad_ids = [
            (id.to_owned(), "00f00".to_owned()),
            (id.to_owned(), format!("+{}", &span[1..])),
            (id.to_owned(), span.to_uppercase()),
            (id.to_owned(), "0".repeat(16)),
            (format!("+{}", &id[1..]), span.to_owned()),
            (id[..20].to_owned(), span.to_owned()),
            (id.to_uppercase(), span.to_owned()),
        ];
        for (trace, span) in bad_ids {
            let single = format!("{trace}-{span}-1");
            let e = extract(&headers(&[("b3", &single)]));
            assert!(!context(&e).is_valid(), "b3: {single:?}");
            let e = extract(&headers(&[
                ("x-b3-traceid", &trace),
                ("x-b3-spanid", &span),
            ]));
            assert!(!context(&e).is_valid(), "x-b3: {trace:?} {span:?}");
        }
        let e = extract(&headers(&[
            ("x-b3-traceid", &id[16..]),
            ("x-b3-spanid", span),
        ]));
        let sc = context(&e);
        assert_eq!(sc.trace_id().to_string(), format!("{:0>32}", &id[16..]));
        assert_eq!(sc.span_id().to_string(), span);
    }

    #[test]
    fn traceparent_follows_the_w3c_rules() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let span = "00f067aa0ba902b7";
        let valid = [
            (format!("00-{id}-{span}-01"), true),
            (format!("00-{id}-{span}-00"), false),
            (format!("00-{id}-{span}-09"), true),
            (format!(" 00-{id}-{span}-01 "), true),
            (format!("01-{id}-{span}-01"), true),
            (format!("01-{id}-{span}-01-what-the-future-brings"), true),
        ];
        for (value, sampled) in valid {
            let e = extract(&headers(&[("traceparent", &value)]));
            let sc = context(&e);
            assert!(sc.is_valid(), "{value:?} is valid");
            assert_eq!(sc.trace_id().to_string(), id, "{value:?}");
            assert_eq!(sc.span_id().to_string(), span, "{value:?}");
            assert_eq!(sc.is_sampled(), sampled, "{value:?}");
            assert_eq!(
                sc.trace_flags().to_u8() & !1,
                0,
                "only the sampled flag is kept"
            );
        }
        let invalid = [
            format!("ff-{id}-{span}-01"),
            format!("00-{id}-{span}-01-"),
            format!("00-{id}-{span}-01-00"),
            format!("01-{id}-{span}-01x"),
            format!("00-{}-{span}-01", id.to_uppercase()),
            format!("00-{id}-{}-01", span.to_uppercase()),
            format!("00-{id}-{span}-0A"),
            format!("00-{}-{span}-01", "0".repeat(32)),
            format!("00-{id}-{}-01", "0".repeat(16)),
            format!("00-{id}-{span}-1"),
            format!("00-{id}{span}-01"),
            format!("0-{id}-{span}-01"),
            format!("00_{id}_{span}_01"),
            format!("00-{}-{span}-01", &id[..31]),
            String::new(),
        ];
        for value in invalid {
            let e = extract(&headers(&[("traceparent", &value)]));
            assert!(!context(&e).is_valid(), "{value:?} is invalid");
        }
    }

    #[test]
    fn tracestate_lines_are_joined_and_kept_with_a_valid_parent() {
        let e = extract(&headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "a=1,b=2"),
            ("tracestate", "c=3"),
        ]));
        let sc = context(&e);
        assert_eq!(sc.trace_state().header(), "a=1,b=2,c=3");
        let mut h = HeaderMap::new();
        inject(&e.parent, None, &mut h);
        assert_eq!(h["tracestate"], "a=1,b=2,c=3");

        let e = extract(&headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "not a list entry"),
        ]));
        assert_eq!(context(&e).trace_state(), &TraceState::NONE);
        let mut h = headers(&[("tracestate", "stale=1")]);
        inject(&e.parent, None, &mut h);
        assert!(
            h.get("tracestate").is_none(),
            "the app's stale state is dropped"
        );
    }

    /// Reading and writing agree with OpenTelemetry's propagator on well-formed values.
    #[test]
    fn traceparent_round_trips_like_the_opentelemetry_propagator() {
        use opentelemetry::propagation::TextMapPropagator;
        use opentelemetry_http::{HeaderExtractor, HeaderInjector};
        use opentelemetry_sdk::propagation::TraceContextPropagator;
        let otel = TraceContextPropagator::new();
        for i in 0..500u32 {
            let flags = TraceFlags::new((i % 4) as u8);
            let sc = SpanContext::new(
                TraceId::from_bytes(fastrand::u128(1..).to_be_bytes()),
                SpanId::from_bytes(fastrand::u64(1..).to_be_bytes()),
                flags,
                false,
                TraceState::NONE,
            );
            let cx = Context::new().with_remote_span_context(sc);
            let (mut ours, mut theirs) = (HeaderMap::new(), HeaderMap::new());
            inject(&cx, None, &mut ours);
            otel.inject_context(&cx, &mut HeaderInjector(&mut theirs));
            assert_eq!(ours["traceparent"], theirs["traceparent"]);

            let read = context(&extract(&ours));
            let their_read = otel.extract(&HeaderExtractor(&ours));
            let their_read = their_read.span().span_context().clone();
            assert_eq!(
                (read.trace_id(), read.span_id(), read.trace_flags()),
                (
                    their_read.trace_id(),
                    their_read.span_id(),
                    their_read.trace_flags()
                )
            );
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
