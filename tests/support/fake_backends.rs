//! In-process fake AI providers (Ollama, OpenAI, Anthropic) speaking each API's real wire format.
//!
//! Each [`FakeBackend`] is an HTTP server on `127.0.0.1:0` that records every request it receives
//! and answers chat requests according to a [`Behaviour`]: a normal (optionally slow, chunked)
//! reply, the provider's own error JSON, a rate limit, a hang, or a stream cut off mid-way.
//! Integration tests point the real lit-mux binary at [`FakeBackend::url`] and assert on both
//! what lit-mux answered and what it sent upstream.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Which provider API a fake speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Ollama,
    OpenAi,
    Anthropic,
}

impl Wire {
    pub fn name(self) -> &'static str {
        match self {
            Wire::Ollama => "ollama",
            Wire::OpenAi => "openai",
            Wire::Anthropic => "anthropic",
        }
    }

    fn chat_path(self) -> &'static str {
        match self {
            Wire::Ollama => "/api/chat",
            Wire::OpenAi => "/v1/chat/completions",
            Wire::Anthropic => "/v1/messages",
        }
    }

    /// Health and model-list endpoints.
    fn is_listing(self, path: &str) -> bool {
        match self {
            Wire::Ollama => matches!(path, "/api/tags" | "/api/version"),
            Wire::OpenAi | Wire::Anthropic => path == "/v1/models",
        }
    }

    /// The content type of a streamed answer.
    fn stream_content_type(self) -> &'static str {
        match self {
            Wire::Ollama => "application/x-ndjson",
            Wire::OpenAi | Wire::Anthropic => "text/event-stream",
        }
    }

    /// Ollama streams unless told not to; the others only when asked.
    fn streams_by_default(self) -> bool {
        self == Wire::Ollama
    }
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query string's parameters, decoded.
    pub query: BTreeMap<String, String>,
    /// Lowercase names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// `Value::Null` when the body is empty or not JSON.
    pub body: Value,
}

/// How the fake answers chat requests.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer normally. `text` None => the reply text is `"{wire name} says: {last user message}"`;
    /// `delay` before the first byte; streamed replies are split per word (keeping spaces) with
    /// `chunk_delay` between chunks.
    Reply {
        text: Option<String>,
        delay: Duration,
        chunk_delay: Duration,
    },
    /// Answer with this HTTP status and the provider's own error JSON carrying `message`.
    Fail { status: u16, message: String },
    /// 429 with a `Retry-After: {secs}` header and the provider's rate-limit error body.
    RateLimited { retry_after_secs: u64 },
    /// Accept the request and never answer (the connection stays open, no headers are sent).
    Hang,
    /// Streaming: status 200 and the first chunk, then the connection is cut (no terminating
    /// chunk, `[DONE]` or `message_stop`). Non-streaming: the connection closes with no response.
    DropMidStream,
    /// Status 200 and the start of the answer (the first stream chunk; the first half of the
    /// JSON body when not streaming), then nothing more: the connection stays open, silent.
    Stall,
    /// Status 200 with the content type the wire uses for this answer (JSON, or its stream's
    /// type) and `body` as it is instead of the API's format: a proxy's page, a truncated answer.
    Malformed { body: String },
    /// Answer with native tool calls (after `text`, if any), in the wire's own shape: Ollama
    /// `message.tool_calls` (streamed whole in one chunk), OpenAI `tool_calls` (streamed as an
    /// opening piece and the arguments string in several pieces), Anthropic `tool_use` blocks
    /// (streamed as `input_json_delta` pieces).
    ToolCalls {
        text: Option<String>,
        calls: Vec<FakeToolCall>,
    },
    /// An answer without end: streamed, the wire's opening and then `chunk` as one text delta
    /// after another until the client goes away; not streamed, a JSON body that never closes.
    Endless { chunk: String },
}

/// A tool call a fake answers with.
#[derive(Clone, Debug)]
pub struct FakeToolCall {
    pub id: String,
    pub name: String,
    /// An object.
    pub arguments: Value,
}

impl Behaviour {
    /// One call, id `call_1`, no text.
    pub fn tool_call(name: &str, arguments: Value) -> Behaviour {
        Behaviour::ToolCalls {
            text: None,
            calls: vec![FakeToolCall {
                id: "call_1".to_owned(),
                name: name.to_owned(),
                arguments,
            }],
        }
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::Reply {
            text: None,
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
        }
    }
}

/// A running fake provider; it stops accepting connections when dropped.
pub struct FakeBackend {
    address: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping the sender stops the server.
    _stop: oneshot::Sender<()>,
}

struct Shared {
    wire: Wire,
    state: Mutex<FakeState>,
    aborted: AtomicUsize,
    answered: AtomicUsize,
}

struct FakeState {
    behaviour: Behaviour,
    /// One-shot behaviours, used before `behaviour`, one per chat request.
    queued: VecDeque<Behaviour>,
    models: Vec<String>,
    models_failing: bool,
    /// Anthropic's model list: the most models one page holds, whatever `limit` asks.
    models_page_size: usize,
    /// How long health and model-list requests wait before they are answered.
    listing_delay: Duration,
    /// The model chat answers say they used; `None`: the one requested.
    reported_model: Option<String>,
    requests: Vec<Recorded>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock must not hide its own failure behind ours.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl FakeBackend {
    /// Starts the fake on the current tokio runtime. Dropping the fake closes its listener;
    /// connections already open (a hung request, say) last until that runtime shuts down.
    pub async fn start(wire: Wire) -> FakeBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake backend");
        let address = listener.local_addr().expect("fake backend address");
        let (shared, stop, serve) = server(wire, listener);
        tokio::spawn(serve);
        FakeBackend {
            address,
            shared,
            _stop: stop,
        }
    }

    /// Starts the fake on its own thread with a one-worker runtime, for code without a runtime.
    /// Dropping the fake shuts that runtime down, cutting any open connections.
    pub fn start_blocking(wire: Wire) -> FakeBackend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake backend");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let address = listener.local_addr().expect("fake backend address");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("fake-{}-{}", wire.name(), address.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("fake backend runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("adopt listener");
                    let (shared, stop, serve) = server(wire, listener);
                    ready_tx
                        .send((shared, stop))
                        .expect("hand over the fake backend");
                    serve.await;
                });
            })
            .expect("spawn fake backend thread");
        let (shared, stop) = ready_rx.recv().expect("fake backend thread started");
        FakeBackend {
            address,
            shared,
            _stop: stop,
        }
    }

    /// What to put in lit-mux's config: `host` for Ollama, `base_url` for the others.
    pub fn url(&self) -> String {
        match self.shared.wire {
            Wire::OpenAi => format!("http://{}/v1", self.address),
            Wire::Ollama | Wire::Anthropic => format!("http://{}", self.address),
        }
    }

    /// A line under lit-mux's `backends:` naming this fake `name`, of its wire's type, with an
    /// API key where the wire takes one, default model `fake-model`, and `extra` keys (each
    /// written `, key: value`).
    pub fn config_entry(&self, name: &str, extra: &str) -> String {
        let (kind, url_key, key) = match self.shared.wire {
            Wire::Ollama => ("ollama", "host", ""),
            Wire::OpenAi => ("openai", "base_url", "api_key: sk-test-openai, "),
            Wire::Anthropic => ("anthropic", "base_url", "api_key: sk-ant-test, "),
        };
        format!(
            "  {name}: {{type: {kind}, {url_key}: '{}', {key}default_model: fake-model{extra}}}\n",
            self.url()
        )
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// How the next chat requests are answered, one behaviour each, before the standing one.
    pub fn queue(&self, behaviours: Vec<Behaviour>) {
        self.shared.state().queued.extend(behaviours);
    }

    /// How chat requests are answered from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared.state().behaviour = behaviour;
    }

    /// The models the model-list endpoint reports (default: `fake-model`).
    pub fn set_models(&self, models: Vec<String>) {
        self.shared.state().models = models;
    }

    /// Chat answers (streamed or not, tool calls included) report `model` as the model used, in
    /// the wire's own field (Ollama `model`, OpenAI `model` of the completion and every chunk,
    /// Anthropic `message.model`), whatever was requested; `None`: the requested one again.
    pub fn set_reported_model(&self, model: Option<&str>) {
        self.shared.state().reported_model = model.map(str::to_owned);
    }

    /// Anthropic's model list pages at most `size` models, so a short list takes several pages
    /// (default: 1000, the API's largest `limit`).
    pub fn set_models_page_size(&self, size: usize) {
        self.shared.state().models_page_size = size;
    }

    /// Health and model-list endpoints answer 500 while set.
    pub fn set_models_failing(&self, failing: bool) {
        self.shared.state().models_failing = failing;
    }

    /// Health and model-list endpoints answer only after `delay` (default: at once).
    pub fn set_listing_delay(&self, delay: Duration) {
        self.shared.state().listing_delay = delay;
    }

    /// The health and model-list requests so far.
    pub fn listing_requests(&self) -> Vec<Recorded> {
        let wire = self.shared.wire;
        self.requests()
            .into_iter()
            .filter(|request| request.method == "GET" && wire.is_listing(&request.path))
            .collect()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state().requests.clone()
    }

    /// Forgets the requests so far (a long benchmark would otherwise keep them all).
    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
    }

    /// The chat requests so far, in arrival order.
    pub fn chat_requests(&self) -> Vec<Recorded> {
        let chat_path = self.shared.wire.chat_path();
        self.shared
            .state()
            .requests
            .iter()
            .filter(|request| request.method == "POST" && request.path == chat_path)
            .cloned()
            .collect()
    }

    pub fn last_chat(&self) -> Recorded {
        self.chat_requests().pop().unwrap_or_else(|| {
            panic!(
                "the fake {} backend received no chat request (requests: {:?})",
                self.shared.wire.name(),
                self.requests()
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect::<Vec<_>>()
            )
        })
    }

    /// Chat requests whose client went away before the fake finished answering.
    pub fn aborted_requests(&self) -> usize {
        self.shared.aborted.load(Ordering::SeqCst)
    }

    /// Chat requests the fake finished answering: the whole answer (a streamed one's last chunk
    /// included) was handed to the connection.
    pub fn answered_requests(&self) -> usize {
        self.shared.answered.load(Ordering::SeqCst)
    }

    /// Waits until `n` chat requests were received; panics after `limit`.
    pub async fn wait_for_chats(&self, n: usize, limit: Duration) {
        let started = Instant::now();
        loop {
            let received = self.chat_requests().len();
            if received >= n {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "the fake {} backend received {received} chat request(s) within {limit:?}, \
                 expected {n}",
                self.shared.wire.name()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The shared state, the stop handle, and the future serving `listener` until the handle drops.
fn server(
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
            models_page_size: ANTHROPIC_MAX_LIMIT,
            listing_delay: Duration::ZERO,
            reported_model: None,
            requests: Vec::new(),
        }),
        aborted: AtomicUsize::new(0),
        answered: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(handle).with_state(shared.clone());
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
/// when finished.
struct AbortGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl AbortGuard {
    fn finish(&mut self) {
        if !self.finished {
            self.shared.answered.fetch_add(1, Ordering::SeqCst);
        }
        self.finished = true;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
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
        let guard = AbortGuard {
            shared: shared.clone(),
            finished: false,
        };
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
            (Wire::Ollama, "/api/version") => json!({"version": "0.12.0"}),
            (Wire::Ollama, _) => ollama_tags(&models),
            (Wire::OpenAi, _) => openai_models(&models),
            (Wire::Anthropic, _) => {
                match anthropic_models(&models, &recorded.query, models_page_size) {
                    Ok(page) => page,
                    Err(problem) => return error(wire, 400, &problem),
                }
            }
        },
    )
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

/// What every reply carries, whichever the wire.
struct Reply<'a> {
    model: &'a str,
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl Reply<'_> {
    fn openai_usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    /// The non-streamed answer.
    fn complete(&self, wire: Wire, text: &str) -> Value {
        let (model, prompt, completion) = (self.model, self.prompt_tokens, self.completion_tokens);
        match wire {
            Wire::Ollama => json!({
                "model": model, "created_at": now_rfc3339(),
                "message": {"role": "assistant", "content": text},
                "done_reason": "stop", "done": true,
                "total_duration": 123_456, "load_duration": 1000,
                "prompt_eval_count": prompt, "prompt_eval_duration": 1000,
                "eval_count": completion, "eval_duration": 1000,
            }),
            Wire::OpenAi => json!({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": unix_now(),
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "logprobs": null, "finish_reason": "stop",
                }],
                "usage": self.openai_usage(),
                "system_fingerprint": "fp_fake",
            }),
            Wire::Anthropic => json!({
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": prompt, "output_tokens": completion},
            }),
        }
    }

    /// The content type and the body chunks of the streamed answer: the preamble goes with the
    /// first text chunk, each further text chunk is its own body chunk, then the ending.
    fn stream(
        &self,
        wire: Wire,
        chunks: &[String],
        include_usage: bool,
    ) -> (&'static str, Vec<String>) {
        let (model, prompt, completion) = (self.model, self.prompt_tokens, self.completion_tokens);
        match wire {
            Wire::Ollama => {
                let line = |value: Value| format!("{value}\n");
                let created_at = now_rfc3339();
                let mut frames: Vec<String> = chunks
                    .iter()
                    .map(|chunk| {
                        line(json!({
                            "model": model, "created_at": created_at,
                            "message": {"role": "assistant", "content": chunk}, "done": false,
                        }))
                    })
                    .collect();
                // The last line is the non-streamed answer with empty content.
                frames.push(line(self.complete(wire, "")));
                ("application/x-ndjson", frames)
            }
            Wire::OpenAi => {
                let created = unix_now();
                let event = |choices: Value, usage: Option<Value>| {
                    let mut chunk = json!({
                        "id": "chatcmpl-fake", "object": "chat.completion.chunk",
                        "created": created, "model": model, "system_fingerprint": "fp_fake",
                        "choices": choices,
                    });
                    // With include_usage every chunk carries `usage`, null but in the last one.
                    if include_usage {
                        chunk["usage"] = usage.unwrap_or(Value::Null);
                    }
                    format!("data: {chunk}\n\n")
                };
                let choice = |delta: Value, finish_reason: Value| {
                    json!([{
                        "index": 0, "delta": delta, "logprobs": null,
                        "finish_reason": finish_reason,
                    }])
                };
                let mut frames: Vec<String> = chunks
                    .iter()
                    .map(|chunk| event(choice(json!({"content": chunk}), Value::Null), None))
                    .collect();
                frames[0].insert_str(
                    0,
                    &event(
                        choice(json!({"role": "assistant", "content": ""}), Value::Null),
                        None,
                    ),
                );
                let mut ending = event(choice(json!({}), json!("stop")), None);
                if include_usage {
                    ending += &event(json!([]), Some(self.openai_usage()));
                }
                ending += "data: [DONE]\n\n";
                frames.push(ending);
                ("text/event-stream", frames)
            }
            Wire::Anthropic => {
                let event = |value: Value| {
                    let name = value["type"].as_str().unwrap_or_default().to_owned();
                    format!("event: {name}\ndata: {value}\n\n")
                };
                let mut frames: Vec<String> = chunks
                    .iter()
                    .map(|chunk| {
                        event(json!({
                            "type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": chunk},
                        }))
                    })
                    .collect();
                let preamble = [
                    json!({"type": "message_start", "message": {
                        "id": "msg_fake", "type": "message", "role": "assistant",
                        "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                        "usage": {"input_tokens": prompt, "output_tokens": 1},
                    }}),
                    json!({"type": "content_block_start", "index": 0,
                           "content_block": {"type": "text", "text": ""}}),
                    json!({"type": "ping"}),
                ];
                frames[0].insert_str(0, &preamble.map(event).concat());
                frames.push(
                    [
                        json!({"type": "content_block_stop", "index": 0}),
                        json!({"type": "message_delta",
                               "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                               "usage": {"output_tokens": completion}}),
                        json!({"type": "message_stop"}),
                    ]
                    .map(event)
                    .concat(),
                );
                ("text/event-stream", frames)
            }
        }
    }
}

/// The provider's error body for `status`.
fn error(wire: Wire, status: u16, message: &str) -> Response {
    let body = match wire {
        Wire::Ollama => json!({"error": message}),
        Wire::OpenAi => {
            let (kind, code) = match status {
                401 => ("invalid_request_error", json!("invalid_api_key")),
                429 => ("requests", json!("rate_limit_exceeded")),
                500.. => ("server_error", Value::Null),
                _ => ("invalid_request_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Wire::Anthropic => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    json_response(status, body)
}

fn rate_limited(wire: Wire) -> Response {
    let message = match wire {
        Wire::Ollama => "too many requests, please retry later",
        Wire::OpenAi => "Rate limit reached for requests. Please try again later.",
        Wire::Anthropic => {
            "Number of requests has exceeded your rate limit. Please try again later."
        }
    };
    error(wire, 429, message)
}

fn not_found_message(wire: Wire, method: &Method, path: &str) -> String {
    match wire {
        Wire::Ollama => "404 page not found".to_owned(),
        Wire::OpenAi => format!("Invalid URL ({method} {path})"),
        Wire::Anthropic => "Not Found".to_owned(),
    }
}

fn json_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).expect("valid HTTP status");
    (status, axum::Json(body)).into_response()
}

fn ollama_tags(models: &[String]) -> Value {
    let models: Vec<Value> = models
        .iter()
        .map(|name| {
            json!({
                "name": name, "model": name, "modified_at": "2026-11-01T10:00:00Z",
                "size": 3_825_819_519_u64,
                "digest": "365c0bd3c000a25d28ddbf732fe1c6add414de7275464c4e4d1c3b5fcb5d8ad1",
                "details": {
                    "format": "gguf", "family": "llama",
                    "parameter_size": "8B", "quantization_level": "Q4_0",
                },
            })
        })
        .collect();
    json!({"models": models})
}

fn openai_models(models: &[String]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(
            |id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}),
        )
        .collect();
    json!({"object": "list", "data": data})
}

/// The largest `limit` Anthropic's model list takes (its default is 20).
const ANTHROPIC_MAX_LIMIT: usize = 1000;

/// One page of Anthropic's model list as the API pages it: `limit` models (1 to 1000, default
/// 20; at most `page_size`) after the model `after_id` names (an unknown one: an empty page).
fn anthropic_models(
    models: &[String],
    query: &BTreeMap<String, String>,
    page_size: usize,
) -> Result<Value, String> {
    let limit = match query.get("limit") {
        None => 20,
        Some(raw) => match raw.parse::<usize>() {
            Ok(limit) if (1..=ANTHROPIC_MAX_LIMIT).contains(&limit) => limit,
            _ => return Err(format!("limit: must be between 1 and 1000, got {raw:?}")),
        },
    };
    let start = match query.get("after_id") {
        None => 0,
        Some(after) => models
            .iter()
            .position(|id| id == after)
            .map_or(models.len(), |at| at + 1),
    };
    let end = models.len().min(start + limit.min(page_size));
    let page = &models[start..end];
    let data: Vec<Value> = page
        .iter()
        .map(|id| {
            json!({
                "type": "model", "id": id, "display_name": display_name(id),
                "created_at": "2026-01-01T00:00:00Z",
            })
        })
        .collect();
    Ok(json!({
        "data": data, "has_more": end < models.len(),
        "first_id": page.first(), "last_id": page.last(),
    }))
}

/// `fake-model` → `Fake Model`.
fn display_name(id: &str) -> String {
    id.split('-')
        .map(|word| {
            let mut letters = word.chars();
            letters
                .next()
                .map(|first| first.to_uppercase().chain(letters).collect())
                .unwrap_or_default()
        })
        .collect::<Vec<String>>()
        .join(" ")
}

/// A message's text: a plain string, or the text blocks of a content array joined.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|block| block["type"] == "text")
            .filter_map(|block| block["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .map(|message| content_text(&message["content"]))
        .unwrap_or_default()
}

fn all_message_text(body: &Value) -> String {
    let messages = body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let texts: Vec<String> = messages
        .iter()
        .map(|m| content_text(&m["content"]))
        .collect();
    texts.join(" ")
}

fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn now_rfc3339() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// An answer holding tool calls, streamed or not, in `wire`'s shape.
fn tool_call_answer(
    wire: Wire,
    body: &Value,
    model: &str,
    text: Option<&str>,
    calls: &[FakeToolCall],
    stream: bool,
) -> Response {
    let text = text.unwrap_or("");
    let (prompt, completion) = (count_words(&all_message_text(body)).max(1), 7);
    let (content_type, frames): (&str, Vec<String>) = match (wire, stream) {
        (Wire::Ollama, false) => {
            return json_response(200, ollama_tool_message(model, text, calls, true));
        }
        (Wire::Ollama, true) => {
            let mut frames = Vec::new();
            if !text.is_empty() {
                frames.push(json!({"model": model, "created_at": now_rfc3339(),
                    "message": {"role": "assistant", "content": text}, "done": false}));
            }
            frames.push(ollama_tool_message(model, "", calls, false));
            frames.push(json!({"model": model, "created_at": now_rfc3339(),
                "message": {"role": "assistant", "content": ""}, "done": true,
                "done_reason": "stop", "prompt_eval_count": prompt, "eval_count": completion}));
            (
                "application/x-ndjson",
                frames.iter().map(|f| format!("{f}\n")).collect(),
            )
        }
        (Wire::OpenAi, false) => {
            let tool_calls: Vec<Value> = calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.to_string()}})
                })
                .collect();
            return json_response(
                200,
                json!({
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": unix_now(),
                    "model": model,
                    "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                        "message": {"role": "assistant",
                            "content": if text.is_empty() { Value::Null } else { json!(text) },
                            "tool_calls": tool_calls, "refusal": null}}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion},
                }),
            );
        }
        (Wire::OpenAi, true) => {
            let include_usage = body["stream_options"]["include_usage"] == true;
            let created = unix_now();
            let chunk = |delta: Value, finish: Value| {
                let mut chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                    "created": created, "model": model, "system_fingerprint": "fp_fake",
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
                if include_usage {
                    chunk["usage"] = Value::Null;
                }
                format!("data: {chunk}\n\n")
            };
            let mut frames = vec![chunk(
                json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }}),
                Value::Null,
            )];
            for (index, call) in calls.iter().enumerate() {
                frames.push(chunk(
                    json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}}]}),
                    Value::Null,
                ));
                for piece in pieces(&call.arguments.to_string(), 5) {
                    frames.push(chunk(
                        json!({"tool_calls": [{"index": index,
                        "function": {"arguments": piece}}]}),
                        Value::Null,
                    ));
                }
            }
            let mut ending = chunk(json!({}), json!("tool_calls"));
            if include_usage {
                let usage = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                    "created": created, "model": model, "choices": [],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion}});
                ending += &format!("data: {usage}\n\n");
            }
            ending += "data: [DONE]\n\n";
            frames.push(ending);
            ("text/event-stream", frames)
        }
        (Wire::Anthropic, false) => {
            let mut content = Vec::new();
            if !text.is_empty() {
                content.push(json!({"type": "text", "text": text}));
            }
            content.extend(calls.iter().map(
                |c| json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}),
            ));
            return json_response(
                200,
                json!({
                    "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                    "content": content, "stop_reason": "tool_use", "stop_sequence": null,
                    "usage": {"input_tokens": prompt, "output_tokens": completion},
                }),
            );
        }
        (Wire::Anthropic, true) => {
            let event = |value: Value| {
                let name = value["type"].as_str().unwrap_or_default().to_owned();
                format!("event: {name}\ndata: {value}\n\n")
            };
            let mut frames = vec![event(json!({"type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": prompt, "output_tokens": 1}}}))];
            let mut index = 0;
            if !text.is_empty() {
                frames.push(event(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
                frames.push(event(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})));
                frames.push(event(json!({"type": "content_block_stop", "index": 0})));
                index = 1;
            }
            for call in calls {
                frames.push(event(json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}})));
                for piece in pieces(&call.arguments.to_string(), 5) {
                    frames.push(event(json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece}})));
                }
                frames.push(event(json!({"type": "content_block_stop", "index": index})));
                index += 1;
            }
            frames.push(event(json!({"type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": completion}})));
            frames.push(event(json!({"type": "message_stop"})));
            ("text/event-stream", frames)
        }
    };
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(
        frames.into_iter().map(Ok::<_, io::Error>),
    )));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn ollama_tool_message(model: &str, text: &str, calls: &[FakeToolCall], done: bool) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(index, c)| json!({"id": c.id, "function": {"index": index, "name": c.name, "arguments": c.arguments}}))
        .collect();
    let mut message = json!({"model": model, "created_at": now_rfc3339(),
        "message": {"role": "assistant", "content": text, "tool_calls": tool_calls}, "done": done});
    if done {
        message["done_reason"] = json!("stop");
        message["prompt_eval_count"] = json!(1);
        message["eval_count"] = json!(7);
    }
    message
}

/// `text` cut every `size` characters, as providers stream arguments.
fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size)
        .map(|piece| piece.iter().collect())
        .collect()
}

/// Refuses what the real API refuses about tools, with its 400.
fn validate_chat(wire: Wire, body: &Value) -> Result<(), String> {
    let empty = Vec::new();
    let messages = body["messages"].as_array().unwrap_or(&empty);
    let tools = body["tools"].as_array().unwrap_or(&empty);
    let name_ok = |name: &str, max: usize| {
        !name.is_empty()
            && name.len() <= max
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    match wire {
        Wire::OpenAi => {
            for tool in tools {
                let name = tool["function"]["name"].as_str().unwrap_or("");
                if !name_ok(name, 64) {
                    return Err(format!(
                        "Invalid 'tools[].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'. Got {name:?}"
                    ));
                }
            }
            let mut open: Vec<String> = Vec::new();
            for (at, message) in messages.iter().enumerate() {
                if message["role"] == "tool" {
                    let id = message["tool_call_id"].as_str().unwrap_or("");
                    let Some(position) = open.iter().position(|o| o == id) else {
                        return Err(format!(
                            "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'. (messages[{at}], tool_call_id {id:?})"
                        ));
                    };
                    open.remove(position);
                    continue;
                }
                if !open.is_empty() {
                    return Err(format!(
                        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                        open.join(", ")
                    ));
                }
                if let Some(calls) = message["tool_calls"].as_array() {
                    for call in calls {
                        if !call["function"]["arguments"].is_string() {
                            return Err(format!(
                                "messages[{at}].tool_calls[].function.arguments must be a string"
                            ));
                        }
                        open.push(call["id"].as_str().unwrap_or("").to_owned());
                    }
                }
            }
            if !open.is_empty() {
                return Err(format!(
                    "The following tool_call_ids did not have response messages: {}",
                    open.join(", ")
                ));
            }
        }
        Wire::Anthropic => {
            for tool in tools {
                let name = tool["name"].as_str().unwrap_or("");
                if !name_ok(name, 128) {
                    return Err(format!(
                        "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$' (got {name:?})"
                    ));
                }
            }
            let mut expected_role = "user";
            let mut pending: Vec<String> = Vec::new();
            for (at, message) in messages.iter().enumerate() {
                let role = message["role"].as_str().unwrap_or("");
                if role != expected_role {
                    return Err(format!(
                        "messages: roles must alternate between \"user\" and \"assistant\", starting with \"user\" (messages.{at} is {role:?})"
                    ));
                }
                let blocks = message["content"].as_array().cloned().unwrap_or_default();
                let results: Vec<String> = blocks
                    .iter()
                    .filter(|b| b["type"] == "tool_result")
                    .map(|b| b["tool_use_id"].as_str().unwrap_or("").to_owned())
                    .collect();
                let uses: Vec<String> = blocks
                    .iter()
                    .filter(|b| b["type"] == "tool_use")
                    .map(|b| b["id"].as_str().unwrap_or("").to_owned())
                    .collect();
                if (!results.is_empty() || !uses.is_empty()) && tools.is_empty() {
                    return Err("Requests which include `tool_use` or `tool_result` blocks must define tools.".to_owned());
                }
                for id in &results {
                    if !pending.contains(id) {
                        return Err(format!(
                            "messages.{at}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        ));
                    }
                }
                if let Some(missing) = pending.iter().find(|id| !results.contains(id)) {
                    return Err(format!(
                        "messages.{at}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}"
                    ));
                }
                pending = uses;
                expected_role = if role == "user" { "assistant" } else { "user" };
            }
        }
        Wire::Ollama => {
            for message in messages {
                for call in message["tool_calls"].as_array().unwrap_or(&empty) {
                    if !call["function"]["arguments"].is_object() {
                        return Err("json: cannot unmarshal string into Go struct field .messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments".to_owned());
                    }
                }
            }
        }
    }
    Ok(())
}

/// The call `call_id` and its result as `request` carries them: (name, arguments, result text,
/// is_error when the wire says). Panics when the call is missing or its result does not follow it.
pub fn call_and_result(
    wire: Wire,
    request: &Recorded,
    call_id: &str,
) -> (String, Value, String, Option<bool>) {
    let messages = request.body["messages"].as_array().unwrap();
    match wire {
        Wire::OpenAi | Wire::Ollama => {
            let (at, call) = messages
                .iter()
                .enumerate()
                .find_map(|(at, m)| {
                    let calls = m["tool_calls"].as_array()?;
                    calls
                        .iter()
                        .find(|c| wire == Wire::Ollama || c["id"] == call_id)
                        .map(|c| (at, c.clone()))
                })
                .unwrap_or_else(|| panic!("no assistant tool call in {messages:?}"));
            assert_eq!(messages[at]["role"], "assistant");
            let arguments = match wire {
                // OpenAI carries arguments as a JSON string, Ollama as an object.
                Wire::OpenAi => {
                    serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap()
                }
                _ => call["function"]["arguments"].clone(),
            };
            let result = &messages[at + 1];
            assert_eq!(
                result["role"], "tool",
                "the result follows its call: {messages:?}"
            );
            if wire == Wire::OpenAi {
                assert_eq!(result["tool_call_id"], call_id);
            } else {
                assert_eq!(result["tool_name"], call["function"]["name"]);
            }
            (
                call["function"]["name"].as_str().unwrap().to_owned(),
                arguments,
                result["content"].as_str().unwrap().to_owned(),
                None,
            )
        }
        Wire::Anthropic => {
            let (at, block) = messages
                .iter()
                .enumerate()
                .find_map(|(at, m)| {
                    let blocks = m["content"].as_array()?;
                    blocks
                        .iter()
                        .find(|b| b["type"] == "tool_use" && b["id"] == call_id)
                        .map(|b| (at, b.clone()))
                })
                .unwrap_or_else(|| panic!("no tool_use block in {messages:?}"));
            assert_eq!(messages[at]["role"], "assistant");
            let next = &messages[at + 1];
            assert_eq!(next["role"], "user");
            let result = next["content"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["type"] == "tool_result" && b["tool_use_id"] == call_id)
                .unwrap_or_else(|| panic!("no tool_result in {next}"))
                .clone();
            let text = match &result["content"] {
                Value::String(text) => text.clone(),
                blocks => blocks[0]["text"].as_str().unwrap().to_owned(),
            };
            (
                block["name"].as_str().unwrap().to_owned(),
                block["input"].clone(),
                text,
                result["is_error"].as_bool(),
            )
        }
    }
}
