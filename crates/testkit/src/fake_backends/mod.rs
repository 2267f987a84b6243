//! In-process fake AI providers (Ollama, OpenAI, Anthropic) speaking each API's real wire format.
//!
//! Each [`FakeBackend`] is an HTTP server on `127.0.0.1:0` that records every request it receives
//! and answers chat requests according to a [`Behaviour`]: a normal (optionally slow, chunked)
//! reply, the provider's own error JSON, a rate limit, a hang, or a stream cut off mid-way.
//! Integration tests point the real lit-mux binary at [`FakeBackend::url`] and assert on both
//! what lit-mux answered and what it sent upstream.
//!
//! The serving and the answers' timing are in `server`; what each provider's answers, errors,
//! model lists and refusals look like is in `ollama`, `openai` and `anthropic`, one file each.

mod answer;
mod anthropic;
mod history;
mod ollama;
mod openai;
mod reply;
mod server;
mod text;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;

pub use history::call_and_result;
use server::{Shared, server};

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

/// Requests whose path starts with `from` are answered with `status` (a 3xx) and a `Location` of
/// `to` followed by the rest of the path and the query: `to` an origin (`http://127.0.0.1:PORT`)
/// sends them to another server, an empty `to` to a path of this fake's own (a relative
/// `Location`). The redirected request is recorded like any other.
#[derive(Clone, Debug)]
pub struct Redirect {
    pub status: u16,
    pub from: String,
    pub to: String,
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

    /// Which requests are redirected, and where to (default: none).
    pub fn set_redirect(&self, redirect: Option<Redirect>) {
        self.shared.state().redirect = redirect;
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

    /// The most chat requests the fake was answering at once (from their arrival to the end of
    /// their answer's body, or the client going away).
    pub fn peak_chats_in_flight(&self) -> usize {
        self.shared.peak_chats_in_flight.load(Ordering::SeqCst)
    }

    /// TCP connections open to the fake now.
    pub fn open_connections(&self) -> usize {
        self.shared.connections.open.load(Ordering::SeqCst)
    }

    /// The most TCP connections that were open to the fake at once.
    pub fn peak_connections(&self) -> usize {
        self.shared.connections.peak.load(Ordering::SeqCst)
    }

    /// TCP connections the fake accepted in all.
    pub fn accepted_connections(&self) -> usize {
        self.shared.connections.accepted.load(Ordering::SeqCst)
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
