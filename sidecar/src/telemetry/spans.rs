//! The sidecar's own span for each request it proxies.
//!
//! With an OTLP endpoint the OpenTelemetry SDK makes and records the span. Without one nothing
//! would ever read a recorded span, yet the trace must still go on: the next hop needs a span ID
//! that is this sidecar's, the caller's trace ID, and the sampling decision. So without an
//! endpoint the sidecar makes only that identity, deciding `sampled` by the same rule as the
//! SDK's parent-based ratio sampler: a parent's decision is kept, and a new trace is sampled
//! when its trace ID falls under the ratio, so every hop of one trace decides alike. This saves
//! the span's allocations and attribute strings on every request.

use opentelemetry::Context;
use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry_sdk::trace::SdkTracer;

/// Starts request spans; cheap to clone.
#[derive(Clone, Debug)]
pub struct Spans {
    tracer: SdkTracer,
    /// Whether spans go anywhere (an exporter is set).
    recording: bool,
    /// The ratio of new traces to sample, as configured.
    sampling: f64,
}

impl Spans {
    pub(crate) fn new(tracer: SdkTracer, recording: bool, sampling: f64) -> Self {
        Self {
            tracer,
            recording,
            sampling,
        }
    }

    /// `parent` with a new span of this sidecar as its current span. `name` is called only
    /// when the span is recorded.
    pub fn start(
        &self,
        parent: &Context,
        kind: SpanKind,
        name: impl FnOnce() -> String,
    ) -> Context {
        if self.recording {
            let span = self
                .tracer
                .build_with_context(SpanBuilder::from_name(name()).with_kind(kind), parent);
            return parent.with_span(span);
        }
        let parent_span = parent.span();
        let parent_sc = parent_span.span_context();
        let (trace_id, sampled, state) = if parent_sc.is_valid() {
            (
                parent_sc.trace_id(),
                parent_sc.is_sampled(),
                parent_sc.trace_state().clone(),
            )
        } else {
            let trace_id = new_trace_id();
            (
                trace_id,
                ratio_samples(self.sampling, trace_id),
                TraceState::NONE,
            )
        };
        let flags = if sampled {
            parent_sc.trace_flags().with_sampled(true)
        } else {
            TraceFlags::default()
        };
        let sc = SpanContext::new(trace_id, new_span_id(), flags, false, state);
        // A span that only carries its identity: it records nothing and ending it is a no-op.
        parent.with_remote_span_context(sc)
    }
}

/// Whether a trace without a parent decision is sampled at `ratio`: when the trace ID's low 63
/// bits, read as a number, fall under `ratio` × 2^63. The SDK's ratio sampler decides by the
/// same rule, so a sidecar that records and one that does not agree on every trace.
fn ratio_samples(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

fn new_trace_id() -> TraceId {
    // Zero is the invalid ID.
    TraceId::from_bytes(fastrand::u128(1..).to_be_bytes())
}

fn new_span_id() -> SpanId {
    SpanId::from_bytes(fastrand::u64(1..).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanKind, TraceContextExt};
    use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SdkTracerProvider, ShouldSample};

    fn spans(recording: bool, sampling: f64) -> Spans {
        let provider = SdkTracerProvider::builder().build();
        use opentelemetry::trace::TracerProvider as _;
        Spans::new(provider.tracer("test"), recording, sampling)
    }

    fn remote_parent(sampled: bool, state: TraceState) -> Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags,
            true,
            state,
        );
        Context::new().with_remote_span_context(sc)
    }

    #[test]
    fn without_export_a_child_continues_the_parents_trace_and_decision() {
        let state = TraceState::from_key_value([("vendor", "x")]).unwrap();
        for sampled in [true, false] {
            let parent = remote_parent(sampled, state.clone());
            let cx = spans(false, 0.0).start(&parent, SpanKind::Client, || unreachable!());
            let span = cx.span();
            let (child, parent) = (span.span_context(), parent.span().span_context().clone());
            assert!(child.is_valid());
            assert!(!span.is_recording());
            assert_eq!(child.trace_id(), parent.trace_id());
            assert_ne!(child.span_id(), parent.span_id());
            assert_eq!(
                child.is_sampled(),
                sampled,
                "sampling 0 must not override a parent"
            );
            assert_eq!(child.trace_state(), &state);
        }
    }

    #[test]
    fn without_export_a_new_trace_follows_the_ratio() {
        let root = Context::new();
        let always = spans(false, 1.0).start(&root, SpanKind::Client, String::new);
        let never = spans(false, 0.0).start(&root, SpanKind::Client, String::new);
        assert!(always.span().span_context().is_sampled());
        assert!(!never.span().span_context().is_sampled());
        assert_ne!(
            always.span().span_context().trace_id(),
            never.span().span_context().trace_id()
        );
    }

    /// The rule must match the SDK's, or sidecars with and without export would split traces.
    #[test]
    fn ratio_decision_matches_the_sdk_sampler() {
        for ratio in [0.0, 0.01, 0.25, 0.5, 0.9, 1.0] {
            let sdk = Sampler::TraceIdRatioBased(ratio);
            let mut sampled = 0;
            for _ in 0..2000 {
                let id = new_trace_id();
                let theirs = sdk
                    .should_sample(
                        None,
                        id,
                        "x",
                        &SpanKind::Client,
                        &Vec::<KeyValue>::new(),
                        &[],
                    )
                    .decision;
                let ours = ratio_samples(ratio, id);
                assert_eq!(
                    ours,
                    theirs == SamplingDecision::RecordAndSample,
                    "ratio {ratio}, trace {id}"
                );
                sampled += usize::from(ours);
            }
            let share = sampled as f64 / 2000.0;
            assert!(
                (share - ratio).abs() < 0.06,
                "ratio {ratio} sampled {share}"
            );
        }
    }

    #[test]
    fn with_export_the_span_records() {
        let cx = spans(true, 1.0).start(&Context::new(), SpanKind::Server, || "GET x".into());
        assert!(cx.span().is_recording());
        assert!(cx.span().span_context().is_sampled());
    }
}
