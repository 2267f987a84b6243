//! The fake's HTTP side: it records every request, then answers a chat request as its
//! [`Behaviour`] says (in time, in chunks, cut off, stalled, endless) and a listing request with
//! the models it holds, in the wire format its [`Wire`] names.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::oneshot;

use super::answer::Reply;
use super::reply::{error, json_response, not_found_message, rate_limited, tool_call_answer};
use super::text::{all_message_text, count_words, last_user_text};
use super::{Behaviour, Recorded, Redirect, Wire, anthropic, ollama, openai};

pub(super) struct Shared {
    pub(super) wire: Wire,
    state: Mutex<FakeState>,
    pub(super) aborted: AtomicUsize,
    pub(super) answered: AtomicUsize,
    pub(super) connections: ConnectionCount,
    /// Chat answers in progress now, and the most at once.
    pub(super) chats_in_flight: AtomicUsize,
    pub(super) peak_chats_in_flight: AtomicUsize,
}

/// TCP connections to the fake: open now, the most open at once, and accepted in all.
#[derive(Default)]
pub(super) struct ConnectionCount {
    pub(super) open: AtomicUsize,
    pub(super) peak: AtomicUsize,
    pub(super) accepted: AtomicUsize,
}

/// The listener of the fake, counting its connections in [`ConnectionCount`].
struct CountingListener {
    inner: tokio::net::TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for CountingListener {
    type Io = CountedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, address) = axum::serve::Listener::accept(&mut self.inner).await;
        let count = &self.shared.connections;
        count.accepted.fetch_add(1, Ordering::SeqCst);
        let open = count.open.fetch_add(1, Ordering::SeqCst) + 1;
        count.peak.fetch_max(open, Ordering::SeqCst);
        (
            CountedStream {
                stream,
                shared: self.shared.clone(),
            },
            address,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that counts itself closed when dropped.
struct CountedStream {
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.shared.connections.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

pub(super) struct FakeState {
    pub(super) behaviour: Behaviour,
    /// One-shot behaviours, used before `behaviour`, one per chat request.
    pub(super) queued: VecDeque<Behaviour>,
    pub(super) models: Vec<String>,
    pub(super) models_failing: bool,
    /// Anthropic's model list: the most models one page holds, whatever `limit` asks.
    pub(super) models_page_size: usize,
    /// How long health and model-list requests wait before they are answered.
    pub(super) listing_delay: Duration,
    /// The model chat answers say they used; `None`: the one requested.
    pub(super) reported_model: Option<String>,
    pub(super) redirect: Option<Redirect>,
    pub(super) requests: Vec<Recorded>,
}

impl Shared {
    pub(super) fn state(&self) -> MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock must not hide its own failure behind ours.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The shared state, the stop handle, and the future serving `listener` until the handle drops.
pub(super) fn server(
    wire: Wire,
    listener: tokio::net::TcpListener,
) -> (
    Arc<Shared>,
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let shared = Arc::new(Shared {
        wire,
        state: Mutex::new(FakeState {
            behaviour: Behaviour::default(),
            queued: VecDeque::new(),
            models: vec!["fake-model".to_owned()],
            models_failing: false,
            models_page_size: anthropic::MAX_LIMIT,
            listing_delay: Duration::ZERO,
            reported_model: None,
            redirect: None,
            requests: Vec::new(),
        }),
        aborted: AtomicUsize::new(0),
        answered: AtomicUsize::new(0),
        connections: ConnectionCount::default(),
        chats_in_flight: AtomicUsize::new(0),
        peak_chats_in_flight: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(handle).with_state(shared.clone());
    let listener = CountingListener {
        inner: listener,
        shared: shared.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let serve = async move {
        tokio::select! {
            result = axum::serve(listener, app) => result.expect("fake backend server"),
            _ = stopped => {}
        }
    };
    (shared, stop, serve)
}

/// Counts a chat request as aborted when dropped before [`finish`](Self::finish): the handler
/// future or the response body stream was dropped because the client went away; as answered
/// when finished. While it lives, the chat counts as in flight.
struct AbortGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl AbortGuard {
    fn new(shared: Arc<Shared>) -> Self {
        let in_flight = shared.chats_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared
            .peak_chats_in_flight
            .fetch_max(in_flight, Ordering::SeqCst);
        Self {
            shared,
            finished: false,
        }
    }

    fn finish(&mut self) {
        if !self.finished {
            self.shared.answered.fetch_add(1, Ordering::SeqCst);
        }
        self.finished = true;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        self.shared.chats_in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.shared.aborted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let query = axum::extract::Query::<BTreeMap<String, String>>::try_from_uri(&parts.uri)
        .map(|query| query.0)
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    let wire = shared.wire;
    let is_chat = parts.method == Method::POST && recorded.path == wire.chat_path();
    let (behaviour, models, models_failing, models_page_size, listing_delay, reported_model) = {
        let mut state = shared.state();
        state.requests.push(recorded.clone());
        if let Some(redirect) = &state.redirect
            && let Some(rest) = recorded.path.strip_prefix(redirect.from.as_str())
        {
            let query = parts
                .uri
                .query()
                .map(|query| format!("?{query}"))
                .unwrap_or_default();
            return redirected(redirect.status, &format!("{}{rest}{query}", redirect.to));
        }
        let queued = if is_chat {
            state.queued.pop_front()
        } else {
            None
        };
        (
            queued.unwrap_or_else(|| state.behaviour.clone()),
            state.models.clone(),
            state.models_failing,
            state.models_page_size,
            state.listing_delay,
            state.reported_model.clone(),
        )
    };

    if wire == Wire::Anthropic && !recorded.headers.contains_key("x-api-key") {
        return error(wire, 401, "x-api-key header is required");
    }
    let method = &parts.method;
    let path = recorded.path.as_str();
    if is_chat {
        if let Err(problem) = validate_chat(wire, &recorded.body) {
            return error(wire, 400, &problem);
        }
        let guard = AbortGuard::new(shared.clone());
        let model = reported_model
            .or_else(|| recorded.body["model"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "fake-model".to_owned());
        return chat(wire, &recorded.body, &model, behaviour, guard).await;
    }
    if *method != Method::GET || !wire.is_listing(path) {
        return error(wire, 404, &not_found_message(wire, method, path));
    }
    tokio::time::sleep(listing_delay).await;
    if models_failing {
        return error(wire, 500, "fake backend: model listing is failing");
    }
    json_response(
        200,
        match (wire, path) {
            (Wire::Ollama, "/api/version") => ollama::version(),
            (Wire::Ollama, _) => ollama::tags(&models),
            (Wire::OpenAi, _) => openai::models(&models),
            (Wire::Anthropic, _) => {
                match anthropic::models(&models, &recorded.query, models_page_size) {
                    Ok(page) => page,
                    Err(problem) => return error(wire, 400, &problem),
                }
            }
        },
    )
}

/// A redirect with an empty body.
fn redirected(status: u16, location: &str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::FOUND);
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Answers a chat request; `model` is the model the answer says it used.
async fn chat(
    wire: Wire,
    body: &Value,
    model: &str,
    behaviour: Behaviour,
    mut guard: AbortGuard,
) -> Response {
    let stream = body["stream"]
        .as_bool()
        .unwrap_or(wire.streams_by_default());
    let (text, delay, chunk_delay, ending) = match behaviour {
        Behaviour::Reply {
            text,
            delay,
            chunk_delay,
        } => {
            let text =
                text.unwrap_or_else(|| format!("{} says: {}", wire.name(), last_user_text(body)));
            (text, delay, chunk_delay, Ending::Complete)
        }
        Behaviour::DropMidStream => (
            format!("{} was cut off mid-stream", wire.name()),
            Duration::ZERO,
            Duration::ZERO,
            Ending::Cut,
        ),
        Behaviour::Stall => (
            format!("{} stalls in the middle of this answer", wire.name()),
            Duration::ZERO,
            Duration::ZERO,
            Ending::Stall,
        ),
        Behaviour::Malformed { body: garbage } => {
            guard.finish();
            let content_type = if stream {
                wire.stream_content_type()
            } else {
                "application/json"
            };
            let mut response = Response::new(Body::from(garbage));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            return response;
        }
        Behaviour::Fail { status, message } => {
            guard.finish();
            return error(wire, status, &message);
        }
        Behaviour::RateLimited { retry_after_secs } => {
            guard.finish();
            let mut response = rate_limited(wire);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return response;
        }
        Behaviour::Hang => {
            // The guard counts the abort when hyper drops this future as the client goes away.
            return std::future::pending().await;
        }
        Behaviour::ToolCalls { text, calls } => {
            guard.finish();
            return tool_call_answer(wire, body, model, text.as_deref(), &calls, stream);
        }
        Behaviour::Endless { chunk } => (chunk, Duration::ZERO, Duration::ZERO, Ending::Endless),
    };
    pause(delay).await;
    let reply = Reply {
        model,
        prompt_tokens: count_words(&all_message_text(body)).max(1),
        completion_tokens: count_words(&text),
    };
    if !stream {
        return match ending {
            Ending::Complete => {
                guard.finish();
                json_response(200, reply.complete(wire, &text))
            }
            Ending::Cut => {
                guard.finish();
                // Hyper aborts the connection when the body fails before anything was flushed.
                let failed = futures_util::stream::once(async { Err::<String, _>(cut_off()) });
                Response::new(Body::from_stream(failed))
            }
            Ending::Endless => {
                let opening = futures_util::stream::once(async { Ok("{\"text\": \"".to_owned()) });
                let endless =
                    futures_util::stream::repeat_with(move || Ok::<_, io::Error>(text.clone()));
                let mut response = Response::new(Body::from_stream(opening.chain(endless)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Ending::Stall => {
                let complete = reply.complete(wire, &text).to_string();
                let half = complete.as_bytes()[..complete.len() / 2].to_vec();
                // The guard lives as long as the body: dropped unfinished, it counts the abort.
                let silent = futures_util::stream::once(async { Ok::<_, io::Error>(half) })
                    .chain(futures_util::stream::pending())
                    .map(move |chunk| {
                        let _alive = &guard;
                        chunk
                    });
                let mut response = Response::new(Body::from_stream(silent));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
        };
    }
    let mut chunks: Vec<String> = if ending == Ending::Endless {
        vec![text.clone()]
    } else {
        text.split_inclusive(' ').map(str::to_owned).collect()
    };
    if chunks.is_empty() {
        chunks.push(String::new());
    }
    let include_usage = body["stream_options"]["include_usage"] == true;
    let (content_type, frames) = reply.stream(wire, &chunks, include_usage);
    let mut body_chunks = VecDeque::from(frames);
    let mut repeated = None;
    if ending == Ending::Endless {
        // Up to the first delta (the one frame carrying the text), which then repeats.
        let delta = body_chunks
            .iter()
            .position(|frame| frame.contains(text.as_str()))
            .expect("a stream carries its text");
        body_chunks.truncate(delta + 1);
        repeated = body_chunks.back().cloned();
    } else if ending != Ending::Complete {
        body_chunks.truncate(1);
    }
    let feed = Feed {
        chunks: body_chunks,
        repeated,
        chunk_delay,
        ending,
        guard,
        started: false,
    };
    let mut response = Response::new(Body::from_stream(futures_util::stream::unfold(
        Some(feed),
        next_chunk,
    )));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// How an answer that started well goes on after its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// It ends as the API ends it.
    Complete,
    /// The connection is cut.
    Cut,
    /// Nothing more is sent; the connection stays open.
    Stall,
    /// The last chunk is sent again and again.
    Endless,
}

/// The state of a streamed response body.
struct Feed {
    chunks: VecDeque<String>,
    /// For `Endless`, the chunk sent once the others are out.
    repeated: Option<String>,
    chunk_delay: Duration,
    /// What happens after the last chunk: for `Cut`, the body fails and hyper cuts the connection.
    ending: Ending,
    guard: AbortGuard,
    started: bool,
}

/// Waits `delay`; not at all for none. (`tokio::time::sleep(ZERO)` waits for the timer's next
/// millisecond tick: it made every answer of the fake ~1 ms slower than an echo-speed backend.)
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

async fn next_chunk(feed: Option<Feed>) -> Option<(io::Result<String>, Option<Feed>)> {
    let mut feed = feed?;
    if feed.started && (!feed.chunks.is_empty() || feed.ending == Ending::Cut) {
        pause(feed.chunk_delay).await;
    }
    feed.started = true;
    if let Some(chunk) = feed.chunks.pop_front() {
        return Some((Ok(chunk), Some(feed)));
    }
    match feed.ending {
        Ending::Complete => {
            feed.guard.finish();
            None
        }
        Ending::Cut => {
            feed.guard.finish();
            // Hyper flushes what it has only when the body is pending: failing straight after
            // the last chunk would discard that chunk unsent.
            tokio::task::yield_now().await;
            Some((Err(cut_off()), None))
        }
        // The unfinished guard counts the abort when the client goes away and hyper drops us.
        Ending::Stall => std::future::pending().await,
        Ending::Endless => {
            let chunk = feed.repeated.clone()?;
            Some((Ok(chunk), Some(feed)))
        }
    }
}

fn cut_off() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "fake backend cut the connection",
    )
}

/// Refuses what the real API refuses about tools, with its 400.
fn validate_chat(wire: Wire, body: &Value) -> Result<(), String> {
    match wire {
        Wire::Ollama => ollama::validate(body),
        Wire::OpenAi => openai::validate(body),
        Wire::Anthropic => anthropic::validate(body),
    }
}
