//! Span export over OTLP from a bounded queue that never holds up a request.
//!
//! Ending a span only tries to put it in a queue of `max_queue` spans; when the queue is full the
//! span is dropped and counted. One task drains the queue in batches (up to 512 spans, or what
//! arrived within a second) and hands each batch to the OTLP exporter with a time limit. A
//! collector that is down or slow therefore costs spans, counted in
//! `mesh_spans_dropped_total{reason}`, and never a request.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Largest batch handed to the exporter.
const MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for company.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Limit on one export call.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of the export pipeline.
#[derive(Clone, Debug, Default)]
pub struct ExportMetrics {
    /// Spans waiting in the queue.
    pub queued: Gauge,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: Counter,
    /// Spans dropped because the exporter failed or timed out.
    pub dropped_export_failed: Counter,
    /// Spans the exporter accepted.
    pub exported: Counter,
}

/// The span processor: puts sampled spans in the bounded queue.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    metrics: ExportMetrics,
}

// === impl QueueProcessor ===

impl QueueProcessor {
    /// A processor with a queue of `max_queue` spans, and the task that exports them.
    pub(crate) fn start<E>(
        exporter: E,
        resource: Resource,
        max_queue: usize,
        metrics: ExportMetrics,
    ) -> (Self, JoinHandle<()>)
    where
        E: SpanExporter + 'static,
    {
        let (tx, rx) = mpsc::channel(max_queue.max(1));
        let task = tokio::spawn(drain(rx, exporter, resource, metrics.clone()));
        (Self { queue: tx, metrics }, task)
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.queue.try_send(span) {
            Ok(()) => {
                self.metrics.queued.inc();
            }
            Err(_) => {
                self.metrics.dropped_queue_full.inc();
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // The drain task exports continuously; shutdown waits for it.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Exports batches until every sender is gone, then returns.
async fn drain<E: SpanExporter>(
    mut queue: mpsc::Receiver<SpanData>,
    mut exporter: E,
    resource: Resource,
    metrics: ExportMetrics,
) {
    exporter.set_resource(&resource);
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::sleep(BATCH_DELAY);
        tokio::pin!(deadline);
        while batch.len() < MAX_BATCH {
            tokio::select! {
                next = queue.recv() => match next {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        let n = batch.len() as u64;
        metrics.queued.dec_by(n as i64);
        match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
            Ok(Ok(())) => {
                metrics.exported.inc_by(n);
            }
            Ok(Err(error)) => {
                metrics.dropped_export_failed.inc_by(n);
                tracing::debug!(%error, spans = n, "span export failed");
            }
            Err(_) => {
                metrics.dropped_export_failed.inc_by(n);
                tracing::debug!(spans = n, "span export timed out");
            }
        }
    }
    let _ = exporter.shutdown();
}
