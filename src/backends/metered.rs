//! Chat calls counted per backend and outcome, with their duration: [`Metered`] wraps every
//! configured backend, and also holds a streamed answer to the bound of a whole one.

use std::sync::Arc;
use std::time::Instant;

use super::{
    Backend, BackendError, ChatEvent, ChatReply, ChatRequest, ChatStream, GenerationOptions,
    ModelInfo, upstream,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct CallLabels {
    backend: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

/// Chat calls per backend and outcome, and how long they took. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    calls: prometheus_client::metrics::family::Family<
        CallLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    latency: crate::telemetry::LatencyFamily<BackendLabel>,
}

impl Default for BackendMetrics {
    fn default() -> Self {
        Self {
            calls: Default::default(),
            latency: crate::telemetry::latency_family(),
        }
    }
}

impl BackendMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "backend_calls",
            "Chat calls to model backends, by backend and outcome (ok, or the kind of error)",
            self.calls.clone(),
        );
        registry.register(
            "backend_call_duration_seconds",
            "Time a chat call took, to its last byte, by backend",
            self.latency.clone(),
        );
    }

    fn record(&self, backend: &str, outcome: &'static str, started: Instant) {
        self.latency
            .get_or_create(&BackendLabel {
                backend: backend.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.calls
            .get_or_create(&CallLabels {
                backend: backend.to_owned(),
                outcome,
            })
            .inc();
    }
}

/// A backend whose chat calls are counted; listing models and health checks are not.
pub(super) struct Metered {
    name: String,
    inner: Arc<dyn Backend>,
    metrics: BackendMetrics,
}

/// Records a streamed call once: at its end, or as `cancelled` when dropped before.
struct StreamMeter {
    name: String,
    metrics: BackendMetrics,
    started: Instant,
    recorded: bool,
}

impl StreamMeter {
    fn finish(&mut self, outcome: &'static str) {
        if !self.recorded {
            self.recorded = true;
            self.metrics.record(&self.name, outcome, self.started);
        }
    }
}

impl Drop for StreamMeter {
    fn drop(&mut self) {
        self.finish("cancelled");
    }
}

impl Metered {
    pub(super) fn wrap(name: String, inner: Arc<dyn Backend>, metrics: BackendMetrics) -> Self {
        Self {
            name,
            inner,
            metrics,
        }
    }
}

#[async_trait::async_trait]
impl Backend for Metered {
    fn default_model(&self) -> &str {
        self.inner.default_model()
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatReply, BackendError> {
        let mut meter = StreamMeter {
            name: self.name.clone(),
            metrics: self.metrics.clone(),
            started: Instant::now(),
            recorded: false,
        };
        let reply = self.inner.chat(request).await;
        meter.finish(reply.as_ref().map_or_else(BackendError::kind, |_| "ok"));
        reply
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        use futures_util::StreamExt;
        let mut meter = StreamMeter {
            name: self.name.clone(),
            metrics: self.metrics.clone(),
            started: Instant::now(),
            recorded: false,
        };
        let stream = match self.inner.chat_stream(request).await {
            Ok(stream) => stream,
            Err(err) => {
                meter.finish(err.kind());
                return Err(err);
            }
        };
        // A streamed answer is held to the bound of a whole one: each line of a stream is
        // bounded where it is decoded, but a server streaming deltas without end would
        // otherwise grow the answer being assembled (and then stored) without end.
        let mut answer_bytes = 0usize;
        let backend = self.name.clone();
        Ok(stream
            .map(move |event| {
                answer_bytes = answer_bytes.saturating_add(match &event {
                    Ok(ChatEvent::Delta(text)) => text.len(),
                    Ok(ChatEvent::ToolCall(call)) => call.name.len() + call.arguments_text().len(),
                    _ => 0,
                });
                let event = if answer_bytes > upstream::MAX_BODY_BYTES {
                    Err(BackendError::InvalidResponse {
                        backend: backend.clone(),
                        message: format!(
                            "the streamed answer is over {} bytes",
                            upstream::MAX_BODY_BYTES
                        ),
                    })
                } else {
                    event
                };
                match &event {
                    Ok(ChatEvent::Done { .. }) => meter.finish("ok"),
                    Err(err) => meter.finish(err.kind()),
                    Ok(_) => {}
                }
                event
            })
            // Nothing after an error: the stream's contract, and here the end of the answer.
            .scan(false, |failed, event| {
                let end = *failed;
                *failed |= event.is_err();
                futures_util::future::ready((!end).then_some(event))
            })
            .boxed())
    }

    fn check_options(&self, options: &GenerationOptions) -> Result<(), BackendError> {
        self.inner.check_options(options)
    }

    async fn models(&self) -> Result<Vec<ModelInfo>, BackendError> {
        self.inner.models().await
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.inner.health().await
    }
}
