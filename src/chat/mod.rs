//! Sessions and messaging: creating sessions, sending a message to one backend with the whole
//! conversation, and broadcasting one message to several backends at once. This is the domain
//! layer: it speaks in sessions, messages and backend calls, returns its own errors
//! ([`ChatError`], [`completion::CompletionError`]) and knows nothing of HTTP.
//!
//! Invariants: the user's message is stored before any backend is called, marked `pending`
//! until its answer is stored (in the answer's own commit), so a failure never loses it (it is
//! marked failed instead, unless a tool loop stored steps answering it: those are marked
//! incomplete and it stays in the context), and an answer cut off by lit-mux — the client
//! leaving, the server stopping at the end of its shutdown grace period, or killed (found
//! `pending` at the next start) — leaves it `interrupted`, never without a status; every answer
//! is stored before it is returned; a stream cut off by the server's stopping ends with an
//! `error` event saying so; in a broadcast, every backend is called concurrently and one failing
//! never fails the others, the answers that completed are kept, and the backends that did not
//! answer are recorded on the user's message (failed, or interrupted: cut off), which is marked
//! interrupted when any was cut off, else failed when none answered.
//!
//! Where things are: [`turn`] (one message to one backend), [`broadcast`], [`tool_loop`] (the
//! rounds of a reply, streamed or not), [`tools`] (resolving and running one call), [`steps`]
//! (storing a loop's steps), [`events`] (what a streamed reply emits), [`context`] (what a
//! model is sent), [`scanner`] (prompt-mode calls in streamed text), [`completion`] (the
//! OpenAI-compatible front door).

pub mod broadcast;
pub mod completion;
pub mod context;
pub mod events;
pub mod scanner;
pub mod steps;
pub mod tool_loop;
pub mod tools;
pub mod turn;

use serde_json::{Map, Value};

use crate::backends::{
    Backend, BackendError, BackendLookupError, BackendRegistry, ChatRequest, GenerationOptions,
    InvalidOption,
};
use crate::mcp::hub::McpHub;
use crate::store::{Message, Session, SharedStore, Store, StoreError};

pub use broadcast::{BroadcastOutcome, BroadcastResponse};
pub use events::ReplyEvent;

/// Largest page of sessions or messages one request may ask for.
pub const MAX_PAGE: i64 = 1000;
/// Why what a client left behind is incomplete.
pub(crate) const CLIENT_LEFT: &str = "the client disconnected before the answer was complete";
/// Why what the server's stopping cut off is incomplete.
pub(crate) const SHUTTING_DOWN: &str =
    "the server is shutting down: the answer was interrupted before it was complete";

/// Why an answer under way was cut off by lit-mux itself rather than by its backend: its
/// question is marked `interrupted`, not `failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interruption {
    /// The client went away.
    ClientLeft,
    /// The server is stopping: the shutdown grace period ended with the answer still running.
    ShuttingDown,
}

impl Interruption {
    /// A stable code for clients (the `code` of an `error` event or an OpenAI error).
    pub fn code(self) -> &'static str {
        match self {
            Self::ClientLeft => "client_disconnected",
            Self::ShuttingDown => "server_shutting_down",
        }
    }
}

impl std::fmt::Display for Interruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ClientLeft => CLIENT_LEFT,
            Self::ShuttingDown => SHUTTING_DOWN,
        })
    }
}

/// Runs a reply's `work`, a panic in it becoming a failure of `backend`'s reply, so that what
/// the reply leaves is marked as after any other failure (not left as if still running).
pub(crate) async fn unless_panicked<T, E: From<BackendError>>(
    backend: &str,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use futures_util::FutureExt;
    // After a panic, the callers only read what cannot be left half-changed: the turn's ids and
    // user message, and the stored answer last recorded (replaced whole).
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            tracing::error!(backend, panic = %what, "a reply panicked");
            Err(BackendError::Failed {
                backend: backend.to_owned(),
                message: format!("the reply stopped: {what}"),
            }
            .into())
        }
    }
}

/// Why a chat operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ChatError {
    #[error("Session {0} not found")]
    SessionNotFound(String),
    /// The request names something that cannot be used (a backend, a list).
    #[error("{0}")]
    InvalidRequest(String),
    /// The request is well formed but a value is not acceptable.
    #[error("{0}")]
    InvalidValue(String),
    /// A generation option that cannot work (out of its range, or more choices than one).
    #[error(transparent)]
    InvalidOption(#[from] InvalidOption),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Store(StoreError),
    /// An answer arrived complete but could not be stored: a local failure, not the backend's.
    #[error("{0} (the answer could not be stored)")]
    AnswerNotStored(StoreError),
    /// A tool loop's step (the answer holding calls, or a call's result) could not be stored:
    /// a local failure, not the backend's.
    #[error("{0} (a tool step could not be stored)")]
    StepNotStored(StoreError),
    /// The answer was cut off while under way, by the client's leaving or the server's stopping.
    #[error("{0}")]
    Interrupted(Interruption),
}

impl ChatError {
    /// Whether the storage, not the request or a backend, failed.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            Self::Store(_) | Self::AnswerNotStored(_) | Self::StepNotStored(_)
        )
    }
}

impl From<StoreError> for ChatError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::SessionNotFound(id) => Self::SessionNotFound(id),
            other => Self::Store(other),
        }
    }
}

/// A new session: its backends, an optional name, and metadata (`system_prompt`, `model`,
/// `<backend>_model`).
#[derive(Debug)]
pub struct CreateSession {
    pub backends: Vec<String>,
    pub name: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// Default generation options of the session's messages.
    pub options: GenerationOptions,
}

/// A message to one backend of a session.
#[derive(Debug)]
pub struct SendMessage {
    pub content: String,
    /// The session's first backend when `None`.
    pub backend: Option<String>,
    pub model: Option<String>,
    /// Whether the model may call MCP tools (default: yes, when there are any).
    pub use_tools: Option<bool>,
    pub max_tool_iterations: Option<u32>,
    /// Over the session's default options, option by option.
    pub options: GenerationOptions,
}

/// A message to several backends of a session at once.
#[derive(Debug)]
pub struct BroadcastMessage {
    pub content: String,
    /// Every backend of the session when `None`.
    pub backends: Option<Vec<String>>,
    /// Whether the models may call MCP tools; each backend runs its own tool loop.
    pub use_tools: Option<bool>,
    pub max_tool_iterations: Option<u32>,
    /// Over the session's default options, option by option; for every backend.
    pub options: GenerationOptions,
}

/// One message to one backend, its user part stored, its answer still to come.
pub(crate) struct Turn {
    /// `None` for a stateless exchange (the OpenAI front door without a session): its steps are
    /// built but not stored.
    pub session_id: Option<String>,
    pub backend_name: String,
    pub backend: std::sync::Arc<dyn crate::backends::Backend>,
    pub request: ChatRequest,
    pub user_message: Message,
    /// A broadcast's turns share one user message: a failure of one backend does not fail it.
    pub shares_user_message: bool,
}

/// The sessions service.
#[derive(Clone)]
pub struct ChatService {
    store: SharedStore,
    backends: BackendRegistry,
    mcp: McpHub,
    max_context: usize,
    /// Models that refused native tools (`tool_mode: auto`).
    prompt_only: tools::PromptOnly,
    /// Replies produced apart from their request (streams, tool loops): shutdown waits for them,
    /// so what they store reaches the store before it closes.
    tasks: tokio_util::task::TaskTracker,
    /// Cancelled when the shutdown grace period ends ([`interrupt_replies`]): every answer
    /// still under way stops where it stands, keeps what it produced, marks its question
    /// interrupted and sends its stream's final event.
    ///
    /// [`interrupt_replies`]: Self::interrupt_replies
    stopping: tokio_util::sync::CancellationToken,
}

impl ChatService {
    pub fn new(
        store: SharedStore,
        backends: BackendRegistry,
        mcp: McpHub,
        max_context: usize,
    ) -> Self {
        Self {
            store,
            backends,
            mcp,
            max_context,
            prompt_only: tools::PromptOnly::default(),
            tasks: tokio_util::task::TaskTracker::new(),
            stopping: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Stops every answer still under way: called when the shutdown grace period ends. Each
    /// keeps what it produced, marks its question interrupted, and ends its stream with an
    /// `error` event saying the server is shutting down.
    pub fn interrupt_replies(&self) {
        self.stopping.cancel();
    }

    /// Why an answer whose wait was just cut off was: the server's stopping, else its client's
    /// leaving.
    pub(crate) fn interruption(&self) -> Interruption {
        if self.stopping.is_cancelled() {
            Interruption::ShuttingDown
        } else {
            Interruption::ClientLeft
        }
    }

    /// Runs a reply's work on a task that shutdown waits for.
    fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(work)
    }

    /// Waits, at most `limit`, for the replies still being produced. Called at shutdown once the
    /// HTTP server has stopped (their clients are gone, so they are storing what they have).
    pub async fn finish(&self, limit: std::time::Duration) {
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.tasks.len(),
                "replies still running at shutdown were abandoned"
            );
        }
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub async fn create_session(&self, request: CreateSession) -> Result<Session, ChatError> {
        let backends = dedup(request.backends);
        if backends.is_empty() {
            return Err(ChatError::InvalidRequest(
                "backends must name at least one backend".to_owned(),
            ));
        }
        self.check_usable(&backends)?;
        for name in &backends {
            check_options(&request.options, self.client(name)?.as_ref())?;
        }
        let options = match serde_json::to_value(&request.options) {
            Ok(Value::Object(options)) => options,
            _ => Map::new(),
        };
        let name = request.name.filter(|n| !n.trim().is_empty());
        Ok(self
            .store
            .create_session(
                name.as_deref(),
                &backends,
                &request.metadata.unwrap_or_default(),
                &options,
            )
            .await?)
    }

    /// The session's `system_prompt` metadata, else the backend's configured one.
    fn system_prompt(&self, session: &Session, backend: &str) -> Option<String> {
        session
            .metadata
            .get("system_prompt")
            .and_then(Value::as_str)
            .filter(|p| !p.trim().is_empty())
            .map(str::to_owned)
            .or_else(|| {
                self.backends
                    .get(backend)
                    .and_then(|entry| entry.config.system_prompt.clone())
            })
    }

    fn client(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<dyn crate::backends::Backend>, ChatError> {
        self.backends
            .client(name)
            .map_err(|err| ChatError::InvalidRequest(lookup_message(&err)))
    }

    /// Every name is a configured, enabled backend; the error names all that are not.
    fn check_usable(&self, names: &[String]) -> Result<(), ChatError> {
        let problems: Vec<BackendLookupError> = names
            .iter()
            .filter_map(|name| self.backends.client(name).err())
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        let unknown: Vec<String> = problems
            .iter()
            .filter_map(|p| match p {
                BackendLookupError::Unknown(name) => Some(format!("\"{name}\"")),
                BackendLookupError::Disabled(_) => None,
            })
            .collect();
        let disabled: Vec<String> = problems
            .iter()
            .filter_map(|p| match p {
                BackendLookupError::Disabled(name) => Some(format!("\"{name}\"")),
                BackendLookupError::Unknown(_) => None,
            })
            .collect();
        let mut parts = Vec::new();
        if !unknown.is_empty() {
            parts.push(format!("unknown backend(s) {}", unknown.join(", ")));
        }
        if !disabled.is_empty() {
            parts.push(format!("disabled backend(s) {}", disabled.join(", ")));
        }
        Err(ChatError::InvalidRequest(format!(
            "{} (available: {})",
            parts.join("; "),
            self.backends.enabled_names().join(", ")
        )))
    }

    fn check_in_session(&self, session: &Session, names: &[String]) -> Result<(), ChatError> {
        let outside: Vec<String> = names
            .iter()
            .filter(|name| !session.backends.contains(name))
            .map(|name| format!("\"{name}\""))
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        Err(ChatError::InvalidRequest(format!(
            "backend(s) {} not in this session (its backends: {})",
            outside.join(", "),
            session.backends.join(", ")
        )))
    }
}

/// Request `model` > session metadata `<backend>_model` > session metadata `model` > the
/// backend's default.
pub fn choose_model(
    session: &Session,
    backend: &str,
    requested: Option<&str>,
    default: &str,
) -> String {
    let from_session = |key: &str| {
        session
            .metadata
            .get(key)
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .map(str::to_owned)
    };
    requested
        .filter(|m| !m.trim().is_empty())
        .map(str::to_owned)
        .or_else(|| from_session(&format!("{backend}_model")))
        .or_else(|| from_session("model"))
        .unwrap_or_else(|| default.to_owned())
}

/// A message's options over its session's defaults, option by option.
fn options_over_session(
    session: &Session,
    given: &GenerationOptions,
) -> Result<GenerationOptions, ChatError> {
    let defaults: GenerationOptions =
        serde_json::from_value(Value::Object(session.options.clone())).map_err(|err| {
            ChatError::Store(StoreError::Corrupt(format!(
                "the options of session {}: {err}",
                session.id
            )))
        })?;
    Ok(given.clone().over(&defaults))
}

/// Options `backend` can take: inside OpenAI's ranges, one answer, and nothing its API lacks
/// (unless its config drops those).
pub(crate) fn check_options(
    options: &GenerationOptions,
    backend: &dyn Backend,
) -> Result<(), ChatError> {
    options.check()?;
    if let Some(n) = options.n.filter(|n| *n > 1) {
        return Err(InvalidOption {
            option: "n",
            message: format!("n must be 1, got {n}: lit-mux answers with one choice"),
        }
        .into());
    }
    Ok(backend.check_options(options)?)
}

fn non_empty_content(content: &str) -> Result<&str, ChatError> {
    if content.trim().is_empty() {
        return Err(ChatError::InvalidValue(
            "content must not be empty".to_owned(),
        ));
    }
    Ok(content)
}

fn dedup(names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .into_iter()
        .filter(|name| seen.insert(name.clone()))
        .collect()
}

fn lookup_message(err: &BackendLookupError) -> String {
    match err {
        BackendLookupError::Unknown(name) => format!("backend \"{name}\" is not configured"),
        BackendLookupError::Disabled(name) => format!("backend \"{name}\" is disabled"),
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_reply_is_a_failure_of_its_backend() {
        let outcome: Result<(), BackendError> =
            unless_panicked("llm", async { panic!("boom {}", 42) }).await;
        match outcome {
            Err(BackendError::Failed { backend, message }) => {
                assert_eq!(backend, "llm");
                assert_eq!(message, "the reply stopped: boom 42");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            unless_panicked("llm", async { Ok::<_, BackendError>(7) }).await,
            Ok(7)
        ));
    }
}
