//! The HTTP plumbing every networked backend shares: timeouts, error statuses turned into
//! [`BackendError`], bounded body reads, and bounded NDJSON / Server-Sent-Events decoding.
//!
//! Bounds: a JSON body is read up to [`MAX_BODY_BYTES`] (32 MiB), an error body up to
//! [`MAX_ERROR_BODY_BYTES`], a stream line up to [`MAX_LINE_BYTES`] (8 MiB); a peer that sends
//! more gets an error, never our memory. A streamed answer as a whole is held to
//! [`MAX_BODY_BYTES`] too (in `Metered`). SSE is decoded here over a bounded line reader rather
//! than with an SSE crate, because none of them bounds the length of an event.
//!
//! Connections: at most `max_connections` requests of one backend are in flight at once (reqwest
//! has no cap of its own). [`Upstream::send`] takes a slot before sending, waiting for one no
//! longer than the first-byte timeout, and the [`UpstreamResponse`] holds it until its body is
//! read or its stream ends or is dropped; a long streamed answer holds its slot exactly as long as
//! its connection. At most as many idle connections are kept for reuse.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

use super::{BackendError, TimeoutStage};
use crate::config::backends::{BackendConfig, Timeouts};

/// Largest non-streamed answer accepted; a streamed one is held to it too (see `Metered`).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Largest error body read for its message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Largest single line of a stream (one NDJSON object or one SSE field). A line carries one
/// chunk of an answer: a few tokens, or (Ollama) one whole tool call. 8 MiB is far above any
/// real chunk and keeps what one hostile line costs to a quarter of a whole answer's bound.
const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;
/// How much of a non-JSON error body is quoted in the error.
const QUOTED_ERROR_CHARS: usize = 300;

/// Picks the human message out of a provider's error body.
pub type ErrorMessageFn = fn(&serde_json::Value) -> Option<String>;

/// An HTTP client for one backend.
#[derive(Clone)]
pub struct Upstream {
    backend: String,
    client: reqwest::Client,
    timeouts: Timeouts,
    error_message: ErrorMessageFn,
    /// One permit per request in flight, `max_connections` in all.
    slots: Arc<Semaphore>,
}

/// A backend's response and the connection slot it holds until its body is read.
pub struct UpstreamResponse {
    response: reqwest::Response,
    slot: OwnedSemaphorePermit,
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when given.
    pub event: Option<String>,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

impl Upstream {
    pub fn new(
        backend: &str,
        config: &BackendConfig,
        error_message: ErrorMessageFn,
    ) -> Result<Self, BackendError> {
        let timeouts = config.timeouts;
        let client = crate::outgoing::client_builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.total)
            .pool_max_idle_per_host(config.max_connections)
            .tcp_nodelay(true)
            .user_agent(concat!("lit-mux/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| BackendError::Unreachable {
                backend: backend.to_owned(),
                message: format!("cannot build an HTTP client: {err}"),
            })?;
        Ok(Self {
            backend: backend.to_owned(),
            client,
            timeouts,
            error_message,
            slots: Arc::new(Semaphore::new(config.max_connections)),
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Takes a connection slot, sends `request` and waits for the response's headers (the wait
    /// for a slot and for the headers together bounded by the first-byte timeout); an error
    /// status becomes the matching [`BackendError`].
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<UpstreamResponse, BackendError> {
        let deadline = tokio::time::Instant::now() + self.timeouts.first_byte;
        let slot = match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await
        {
            Ok(Ok(slot)) => slot,
            // The semaphore is never closed; were it, no request could be sent.
            Ok(Err(_)) => {
                return Err(BackendError::Unreachable {
                    backend: self.backend.clone(),
                    message: "its connection slots are closed".to_owned(),
                });
            }
            Err(_) => {
                return Err(BackendError::Timeout {
                    backend: self.backend.clone(),
                    stage: TimeoutStage::ConnectionSlot,
                    secs: self.timeouts.first_byte.as_secs(),
                });
            }
        };
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Err(self.transport_error(&err)),
            Err(_) => {
                return Err(BackendError::Timeout {
                    backend: self.backend.clone(),
                    stage: TimeoutStage::FirstByte,
                    secs: self.timeouts.first_byte.as_secs(),
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(UpstreamResponse { response, slot });
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let message = self.error_body_message(response).await;
        let message = message.unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("no error message")
                .to_owned()
        });
        Err(if status.as_u16() == 429 {
            BackendError::RateLimited {
                backend: self.backend.clone(),
                message,
                retry_after,
            }
        } else {
            BackendError::Upstream {
                backend: self.backend.clone(),
                status: status.as_u16(),
                message,
            }
        })
    }

    /// Reads a whole JSON body, refusing one over [`MAX_BODY_BYTES`].
    pub async fn json<T: DeserializeOwned>(
        &self,
        response: UpstreamResponse,
    ) -> Result<T, BackendError> {
        let UpstreamResponse { response, slot } = response;
        let body = self.read_bounded(response, MAX_BODY_BYTES).await;
        drop(slot);
        let body = body?;
        serde_json::from_slice(&body).map_err(|err| self.invalid(format!("{err}")))
    }

    /// The body as lines, each at most [`MAX_LINE_BYTES`]; empty lines are kept. The slot is
    /// given back at the stream's end or first error, or when it is dropped.
    pub fn lines(
        &self,
        response: UpstreamResponse,
    ) -> BoxStream<'static, Result<String, BackendError>> {
        let UpstreamResponse { response, slot } = response;
        let upstream = self.clone();
        let bytes = response.bytes_stream().map_err(std::io::Error::other);
        let framed = FramedRead::new(
            StreamReader::new(bytes),
            LinesCodec::new_with_max_length(MAX_LINE_BYTES),
        );
        SlotHeld {
            inner: framed
                .map_err(move |err| upstream.stream_error(err))
                .boxed(),
            slot: Some(slot),
        }
        .boxed()
    }

    /// The body as NDJSON values, blank lines skipped.
    pub fn ndjson(
        &self,
        response: UpstreamResponse,
    ) -> BoxStream<'static, Result<serde_json::Value, BackendError>> {
        let upstream = self.clone();
        self.lines(response)
            .try_filter(|line| futures_util::future::ready(!line.trim().is_empty()))
            .and_then(move |line| {
                futures_util::future::ready(
                    serde_json::from_str(&line)
                        .map_err(|err| upstream.invalid(format!("bad stream line: {err}"))),
                )
            })
            .boxed()
    }

    /// The body as Server-Sent Events.
    pub fn sse(
        &self,
        response: UpstreamResponse,
    ) -> BoxStream<'static, Result<SseEvent, BackendError>> {
        let mut parser = SseParser::default();
        self.lines(response)
            .filter_map(move |line| {
                futures_util::future::ready(match line {
                    Ok(line) => parser.push(&line).map(Ok),
                    Err(err) => Some(Err(err)),
                })
            })
            .boxed()
    }

    /// The error for a stream that ended before its last event.
    pub fn cut_off(&self) -> BackendError {
        self.invalid("the answer ended before it was complete".to_owned())
    }

    pub fn invalid(&self, message: String) -> BackendError {
        BackendError::InvalidResponse {
            backend: self.backend.clone(),
            message,
        }
    }

    fn transport_error(&self, err: &reqwest::Error) -> BackendError {
        if let Some(refused) = crate::outgoing::RedirectRefused::in_error(err) {
            return BackendError::Upstream {
                backend: self.backend.clone(),
                status: refused.status,
                message: refused.to_string(),
            };
        }
        if err.is_timeout() {
            // reqwest's own timeout is the total one; the connect one surfaces as a connect error.
            let (stage, secs) = if err.is_connect() {
                (TimeoutStage::Connect, self.timeouts.connect.as_secs())
            } else {
                (TimeoutStage::Total, self.timeouts.total.as_secs())
            };
            return BackendError::Timeout {
                backend: self.backend.clone(),
                stage,
                secs,
            };
        }
        BackendError::Unreachable {
            backend: self.backend.clone(),
            message: error_chain(err),
        }
    }

    fn stream_error(&self, err: LinesCodecError) -> BackendError {
        match err {
            LinesCodecError::MaxLineLengthExceeded => self.invalid(format!(
                "a stream line is over {} MiB ({MAX_LINE_BYTES} bytes)",
                MAX_LINE_BYTES / (1024 * 1024)
            )),
            LinesCodecError::Io(io) => {
                let timed_out = io
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
                    .is_some_and(reqwest::Error::is_timeout);
                if timed_out {
                    BackendError::Timeout {
                        backend: self.backend.clone(),
                        stage: TimeoutStage::Total,
                        secs: self.timeouts.total.as_secs(),
                    }
                } else {
                    self.invalid(format!("the answer was cut off: {}", io_chain(&io)))
                }
            }
        }
    }

    async fn read_bounded(
        &self,
        response: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, BackendError> {
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(self.invalid(format!("the answer is over {limit} bytes")));
        }
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|err| {
                if err.is_timeout() {
                    self.transport_error(&err)
                } else {
                    self.invalid(format!("the answer was cut off: {}", error_chain(&err)))
                }
            })?;
            if body.len() + chunk.len() > limit {
                return Err(self.invalid(format!("the answer is over {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The provider's message from an error body, or the start of the body when it is not the
    /// provider's JSON.
    async fn error_body_message(&self, response: reqwest::Response) -> Option<String> {
        let body = self
            .read_bounded(response, MAX_ERROR_BODY_BYTES)
            .await
            .ok()?;
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body)
            && let Some(message) = (self.error_message)(&json)
        {
            return Some(message);
        }
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        (!text.is_empty()).then(|| text.chars().take(QUOTED_ERROR_CHARS).collect())
    }
}

/// A stream of a response's lines holding its connection slot until the last line or the first
/// error (after which the connection is done with), or until dropped.
struct SlotHeld {
    inner: BoxStream<'static, Result<String, BackendError>>,
    slot: Option<OwnedSemaphorePermit>,
}

impl Stream for SlotHeld {
    type Item = Result<String, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(None | Some(Err(_))) = &item {
            self.slot = None;
        }
        item
    }
}

/// An error with its causes, `outer: inner: innermost` (reqwest's own text hides the cause).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn io_chain(err: &std::io::Error) -> String {
    match err.get_ref() {
        Some(inner) => error_chain(inner),
        None => err.to_string(),
    }
}

/// Turns lines into events as the SSE specification says: fields accumulate until a blank line;
/// comments (`:`) and unknown fields are ignored.
#[derive(Default)]
struct SseParser {
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    fn push(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            return data.map(|data| SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_fields_accumulate_until_a_blank_line() {
        let mut parser = SseParser::default();
        let lines = [
            ": keep-alive",
            "event: message_start",
            "data: {\"a\":",
            "data:1}",
            "",
            "",
            "data: [DONE]",
            "",
        ];
        let events: Vec<SseEvent> = lines.iter().filter_map(|l| parser.push(l)).collect();
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("message_start".to_owned()),
                    data: "{\"a\":\n1}".to_owned()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".to_owned()
                }
            ]
        );
    }
}
