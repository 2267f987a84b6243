//! Sessions and messaging: creating sessions, sending a message to one backend with the whole
//! conversation, and broadcasting one message to several backends at once.
//!
//! Invariants: the user's message is stored before any backend is called, so a failure never
//! loses it (it is marked failed instead, unless a tool loop stored steps answering it: those are
//! marked incomplete and it stays in the context); every answer is stored before it is returned;
//! in a broadcast, every backend is called concurrently and one failing never fails the others,
//! and the backends that did not answer (failed, or cut off by the client's leaving) are recorded
//! on the user's message, which is marked failed when none answered.

pub mod completions;
pub mod context;
pub mod stream;
pub mod tool_call_scanner;
pub mod tools;

use std::time::Instant;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::backends::{BackendError, BackendLookupError, BackendRegistry, ChatReply, ChatRequest};
use crate::mcp::hub::McpHub;
use crate::store::{ContextMessage, Message, NewMessage, Session, SharedStore, Store, StoreError};

/// Largest page of sessions or messages one request may ask for.
pub const MAX_PAGE: i64 = 1000;
/// Why what a client left behind is incomplete.
pub(crate) const CLIENT_LEFT: &str = "the client disconnected before the answer was complete";

/// The failure of `backend`'s reply when its client left before it was complete.
pub(crate) fn client_left(backend: &str) -> BackendError {
    BackendError::Failed {
        backend: backend.to_owned(),
        message: CLIENT_LEFT.to_owned(),
    }
}

/// Runs a reply's `work`, a panic in it becoming a failure of `backend`'s reply, so that what
/// the reply leaves is marked as after any other failure (not left as if still running).
pub(crate) async fn unless_panicked<T>(
    backend: &str,
    work: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
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
            })
        }
    }
}

/// Why a chat operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("Session {0} not found")]
    SessionNotFound(String),
    /// The request names something that cannot be used (a backend, a list).
    #[error("{0}")]
    InvalidRequest(String),
    /// The body is well formed but a value is not acceptable (FastAPI answers 422).
    #[error("{0}")]
    InvalidValue(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ChatError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::SessionNotFound(id) => Self::SessionNotFound(id),
            other => Self::Store(other),
        }
    }
}

/// `POST /sessions`. Unknown fields are ignored, as the predecessor did.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateSession {
    pub backends: Vec<String>,
    pub name: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// `POST /sessions/{id}/message`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SendMessage {
    /// Answer with Server-Sent Events as the reply is produced.
    #[serde(default)]
    pub stream: bool,
    pub content: String,
    pub backend: Option<String>,
    pub model: Option<String>,
    /// Whether the model may call MCP tools (default: yes, when there are any).
    pub use_tools: Option<bool>,
    pub max_tool_iterations: Option<u32>,
}

/// `POST /sessions/{id}/broadcast`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BroadcastMessage {
    #[serde(default)]
    pub stream: bool,
    pub content: String,
    pub backends: Option<Vec<String>>,
    /// Whether the models may call MCP tools (default: yes, when there are any); each backend
    /// runs its own tool loop.
    pub use_tools: Option<bool>,
    pub max_tool_iterations: Option<u32>,
}

/// One backend's outcome in a broadcast.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum BroadcastOutcome {
    Answered {
        backend: String,
        message: Message,
    },
    Failed {
        backend: String,
        error: String,
        /// The HTTP status this failure would have had alone.
        status: u16,
        /// For a rate-limited backend (429), its `Retry-After`, as a message alone would pass on.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
    },
}

#[derive(Debug, Serialize)]
pub struct BroadcastResponse {
    pub user_message: Message,
    pub responses: Vec<BroadcastOutcome>,
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
        let name = request.name.filter(|n| !n.trim().is_empty());
        Ok(self
            .store
            .create_session(
                name.as_deref(),
                &backends,
                &request.metadata.unwrap_or_default(),
            )
            .await?)
    }

    /// Sends `request.content` to one backend of the session with the conversation so far.
    pub async fn send(&self, session_id: &str, request: SendMessage) -> Result<Message, ChatError> {
        let max_rounds = tools::max_iterations(request.max_tool_iterations)?;
        let mut turn = self.prepare_turn(session_id, &request).await?;
        let setup = self.tool_setup(&turn, request.use_tools, max_rounds);
        Self::prepare_tools(&mut turn, &setup);
        if !setup.is_empty() {
            self.store_user_message(&turn).await?;
            // The loop keeps and marks what it produced itself, the client gone or not.
            return Ok(self.answer_with_tools(turn, setup).await?);
        }
        // If the client goes away, axum drops this future mid-call: the guard still marks the
        // message (its update queued after the append), so the history never shows a question
        // that silently got no answer.
        let guard = UnansweredGuard::new(self, &turn.user_message);
        let reply = match self.call_while_stored(&turn).await {
            Ok(reply) => reply,
            Err(err) => {
                guard.disarm(); // The user message was not stored: nothing to mark.
                return Err(err.into());
            }
        };
        let outcome = match reply {
            Ok((reply, started)) => match self.store_reply_as_is(&turn, reply, started).await {
                Ok(message) => Ok(message),
                // Deleted while its answer was on the way: the session's 404, not the
                // backend's fault, and nothing left to mark.
                Err(StoreError::SessionNotFound(id)) => {
                    guard.disarm();
                    return Err(ChatError::SessionNotFound(id));
                }
                Err(err) => Err(answer_not_stored(&turn, &err)),
            },
            Err(err) => Err(err),
        };
        guard.disarm();
        match outcome {
            Ok(message) => Ok(message),
            Err(err) => {
                self.mark_failed(&mut turn, &err).await;
                Err(err.into())
            }
        }
    }

    /// Stores the user's message of `turn` and calls the backend meanwhile, which takes that
    /// commit off the path of the answer. The store is polled first, so the message's write is
    /// issued before the backend is asked (and any later write of it, a failure mark included,
    /// lands after it). A failed commit ends the call (the session is gone, or the database
    /// failing): the outer error. The backend's outcome otherwise, with the moment it was
    /// asked, once the message is committed.
    async fn call_while_stored(
        &self,
        turn: &Turn,
    ) -> Result<Result<(ChatReply, Instant), BackendError>, StoreError> {
        let stored = self.store_user_message(turn);
        let started = Instant::now();
        let call = turn.backend.chat(turn.request.clone());
        tokio::pin!(stored, call);
        let mut committed = false;
        let reply = loop {
            tokio::select! {
                biased;
                result = &mut stored, if !committed => {
                    result?;
                    committed = true;
                }
                reply = &mut call => break reply,
            }
        };
        if !committed {
            stored.await?;
        }
        Ok(reply.map(|reply| (reply, started)))
    }

    /// Checks a message for one backend, stores the user's part, and returns what to send.
    pub(crate) async fn begin_turn(
        &self,
        session_id: &str,
        request: &SendMessage,
    ) -> Result<Turn, ChatError> {
        let turn = self.prepare_turn(session_id, request).await?;
        self.store_user_message(&turn).await?;
        Ok(turn)
    }

    /// Stores the user's message of `turn` (nothing to store for a stateless turn).
    async fn store_user_message(&self, turn: &Turn) -> Result<(), StoreError> {
        match &turn.session_id {
            Some(session_id) => {
                self.store
                    .append_messages(session_id, std::slice::from_ref(&turn.user_message))
                    .await
            }
            None => Ok(()),
        }
    }

    /// `begin_turn`, but with the user's message not stored yet: built, so its id is known,
    /// for [`store_user_message`](Self::store_user_message).
    async fn prepare_turn(
        &self,
        session_id: &str,
        request: &SendMessage,
    ) -> Result<Turn, ChatError> {
        let content = non_empty_content(&request.content)?;
        let (session, history) = self
            .store
            .session_with_context(session_id, self.max_context)
            .await?;
        let backend_name = match request.backend.as_deref() {
            Some(name) => name.to_owned(),
            None => session.backends.first().cloned().ok_or_else(|| {
                ChatError::InvalidRequest("the session has no backends".to_owned())
            })?,
        };
        self.check_in_session(&session, std::slice::from_ref(&backend_name))?;
        let backend = self.client(&backend_name)?;
        let model = choose_model(
            &session,
            &backend_name,
            request.model.as_deref(),
            backend.default_model(),
        );
        let history = self.complete_history(&session, history).await?;
        let chat = ChatRequest {
            model: model.clone(),
            system: self.system_prompt(&session, &backend_name),
            messages: context::conversation(&history, &backend_name, content, self.max_context),
            tools: Vec::new(),
        };
        let user_message = Message::unsaved(NewMessage {
            role: "user",
            content,
            backend: Some(&backend_name),
            model: Some(&model),
            metadata: Map::new(),
        });
        Ok(Turn {
            session_id: Some(session.id),
            backend_name,
            backend,
            request: chat,
            user_message,
            shares_user_message: false,
        })
    }

    /// Stores a backend's answer to `turn`; `model` is the one the backend reports having used
    /// (metadata `requested_model` keeps the one asked for when they differ).
    pub(crate) async fn store_answer(
        &self,
        turn: &Turn,
        content: &str,
        model: &str,
        mut metadata: Map<String, Value>,
    ) -> Result<Message, StoreError> {
        if model != turn.request.model {
            metadata.insert("requested_model".to_owned(), json!(turn.request.model));
        }
        self.record(
            turn,
            NewMessage {
                role: "assistant",
                content,
                backend: Some(&turn.backend_name),
                model: Some(model),
                metadata,
            },
        )
        .await
    }

    /// Appends a step of `turn` to its session; builds it unsaved for a stateless turn.
    pub(crate) async fn record(
        &self,
        turn: &Turn,
        message: NewMessage<'_>,
    ) -> Result<Message, StoreError> {
        match &turn.session_id {
            Some(session_id) => self.store.append_message(session_id, message).await,
            None => Ok(Message::unsaved(message)),
        }
    }

    /// Marks the user's message failed; the message stays. A store error here is only logged:
    /// the backend's error is what the client must see.
    pub(crate) async fn mark_failed(&self, turn: &mut Turn, err: &BackendError) {
        if turn.shares_user_message || turn.session_id.is_none() {
            return;
        }
        let user_message = &mut turn.user_message;
        if let Err(store_err) = self
            .store
            .update_message_metadata(user_message, failure_metadata(err))
            .await
        {
            tracing::error!(%store_err, "cannot mark a message as failed");
        }
    }

    /// Marks a stored answer incomplete with `reason` (nothing to do for a stateless turn).
    pub(crate) async fn mark_incomplete(&self, turn: &Turn, answer: &mut Message, reason: &str) {
        if turn.session_id.is_none() {
            return;
        }
        let changes = Map::from_iter([
            (
                context::STATUS_KEY.to_owned(),
                json!(context::STATUS_INCOMPLETE),
            ),
            ("error".to_owned(), json!(reason)),
        ]);
        if let Err(err) = self.store.update_message_metadata(answer, changes).await {
            tracing::error!(%err, "cannot mark an answer incomplete");
        }
    }

    /// Sends one message to several backends of the session at once and keeps every answer.
    /// The calls are a task of their own, as a tool loop is: when this future is dropped (the
    /// client left and axum dropped the handler), the calls still running are cancelled, and
    /// which backends did not answer is recorded all the same.
    pub async fn broadcast(
        &self,
        session_id: &str,
        request: BroadcastMessage,
    ) -> Result<BroadcastResponse, ChatError> {
        let (user_message, turns) = self.begin_broadcast(session_id, &request).await?;
        let targets: Vec<String> = turns
            .iter()
            .map(|(turn, _)| turn.backend_name.clone())
            .collect();
        let left = CancellationToken::new();
        let _cancel_when_dropped = left.clone().drop_guard();
        let service = self.clone();
        let task =
            self.spawn(async move { service.broadcast_until(user_message, turns, &left).await });
        task.await.map_err(|err| {
            ChatError::Backend(BackendError::Failed {
                backend: targets.join(", "),
                message: format!("the broadcast stopped: {err}"),
            })
        })
    }

    /// Every turn of a broadcast, concurrently, until `left` is cancelled; then which backends
    /// did not answer is recorded on `user_message`.
    async fn broadcast_until(
        &self,
        mut user_message: Message,
        turns: Vec<(Turn, tools::ToolSetup)>,
        left: &CancellationToken,
    ) -> BroadcastResponse {
        let calls = turns.into_iter().map(|(turn, setup)| async move {
            let backend = turn.backend_name.clone();
            let outcome = if setup.is_empty() {
                unless_panicked(&backend, self.answer(&turn, left)).await
            } else {
                // The loop catches its own panic, to mark what it stored.
                self.answer_with_tools_until(turn, setup, left).await
            };
            match outcome {
                Ok(message) => BroadcastOutcome::Answered { backend, message },
                Err(err) => {
                    let alone = crate::http::error::ApiError::from(err.clone());
                    BroadcastOutcome::Failed {
                        backend,
                        status: alone.status().as_u16(),
                        retry_after: match alone {
                            crate::http::error::ApiError::TooManyRequests {
                                retry_after, ..
                            } => retry_after,
                            _ => None,
                        },
                        error: err.to_string(),
                    }
                }
            }
        });
        let responses = join_all(calls).await;
        let failed: Vec<String> = responses
            .iter()
            .filter_map(|outcome| match outcome {
                BroadcastOutcome::Failed { backend, .. } => Some(backend.clone()),
                BroadcastOutcome::Answered { .. } => None,
            })
            .collect();
        self.record_broadcast_failures(&mut user_message, &failed, responses.len())
            .await;
        BroadcastResponse {
            user_message,
            responses,
        }
    }

    /// Checks a broadcast, stores the user's message, and returns one turn per backend with
    /// its tools set up.
    pub(crate) async fn begin_broadcast(
        &self,
        session_id: &str,
        request: &BroadcastMessage,
    ) -> Result<(Message, Vec<(Turn, tools::ToolSetup)>), ChatError> {
        let max_rounds = tools::max_iterations(request.max_tool_iterations)?;
        let content = non_empty_content(&request.content)?;
        let session = self.store.session(session_id).await?;
        let targets = match &request.backends {
            Some(names) => dedup(names.clone()),
            None => session.backends.clone(),
        };
        if targets.is_empty() {
            return Err(ChatError::InvalidRequest(
                "backends must name at least one backend".to_owned(),
            ));
        }
        self.check_in_session(&session, &targets)?;
        self.check_usable(&targets)?;
        let history = self.history(&session).await?;
        let user_message = self
            .store
            .append_message(
                &session.id,
                NewMessage {
                    role: "user",
                    content,
                    backend: None,
                    model: None,
                    metadata: Map::from_iter([("broadcast".to_owned(), json!(targets))]),
                },
            )
            .await?;
        let mut turns = Vec::with_capacity(targets.len());
        for name in targets {
            let backend = self.client(&name)?;
            let model = choose_model(&session, &name, None, backend.default_model());
            let messages = context::conversation(&history, &name, content, self.max_context);
            let mut turn = Turn {
                session_id: Some(session.id.clone()),
                request: ChatRequest {
                    model,
                    system: self.system_prompt(&session, &name),
                    messages,
                    tools: Vec::new(),
                },
                backend,
                backend_name: name,
                user_message: user_message.clone(),
                shares_user_message: true,
            };
            let setup = self.tool_setup(&turn, request.use_tools, max_rounds);
            Self::prepare_tools(&mut turn, &setup);
            turns.push((turn, setup));
        }
        Ok((user_message, turns))
    }

    /// One call to the backend, its answer stored; cancelling `left` drops the call, which
    /// cancels it (dropping this future does the same).
    async fn answer(&self, turn: &Turn, left: &CancellationToken) -> Result<Message, BackendError> {
        let started = Instant::now();
        let reply = tokio::select! {
            biased;
            () = left.cancelled() => Err(client_left(&turn.backend_name)),
            reply = turn.backend.chat(turn.request.clone()) => reply,
        }?;
        self.store_reply(turn, reply, started).await
    }

    /// Stores the backend's `reply` to `turn`, asked at `started`; a failure is the backend's
    /// (as a broadcast reports it).
    async fn store_reply(
        &self,
        turn: &Turn,
        reply: ChatReply,
        started: Instant,
    ) -> Result<Message, BackendError> {
        self.store_reply_as_is(turn, reply, started)
            .await
            .map_err(|err| answer_not_stored(turn, &err))
    }

    /// [`store_reply`](Self::store_reply) with the store's own error.
    async fn store_reply_as_is(
        &self,
        turn: &Turn,
        reply: ChatReply,
        started: Instant,
    ) -> Result<Message, StoreError> {
        let metadata = reply_metadata(started, &reply.usage, &reply.finish_reason);
        self.store_answer(turn, &reply.content, &reply.model, metadata)
            .await
    }

    /// Notes on a broadcast's user message which backends failed (all: the message failed).
    pub(crate) async fn record_broadcast_failures(
        &self,
        user_message: &mut Message,
        failed: &[String],
        asked: usize,
    ) {
        if failed.is_empty() {
            return;
        }
        let mut changes = Map::from_iter([("failed_backends".to_owned(), json!(failed))]);
        if failed.len() == asked {
            changes.insert(
                context::STATUS_KEY.to_owned(),
                json!(context::STATUS_FAILED),
            );
        }
        if let Err(err) = self
            .store
            .update_message_metadata(user_message, changes)
            .await
        {
            tracing::error!(%err, "cannot record a broadcast's failures");
        }
    }

    /// The history for a message to one backend, given the last context's worth of rows: those
    /// rows, or all that [`history`](Self::history) reads when some of them will be left out.
    async fn complete_history(
        &self,
        session: &Session,
        history: Vec<ContextMessage>,
    ) -> Result<Vec<ContextMessage>, ChatError> {
        let rows = self.max_context;
        let some_left_out = history.iter().any(|m| m.failed)
            || history
                .windows(2)
                .any(|pair| pair[0].role == "assistant" && pair[1].role == "assistant");
        if some_left_out && history.len() == rows {
            return self.history(session).await;
        }
        Ok(history)
    }

    /// Enough recent history to fill the context after failed messages and extra broadcast
    /// answers are left out.
    async fn history(&self, session: &Session) -> Result<Vec<ContextMessage>, ChatError> {
        let per_turn = session.backends.len().max(1) + 1;
        let wanted = self.max_context.saturating_mul(per_turn);
        Ok(self.store.context_messages(&session.id, wanted).await?)
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
                BackendLookupError::Unknown(name) => Some(format!("{name:?}")),
                BackendLookupError::Disabled(_) => None,
            })
            .collect();
        let disabled: Vec<String> = problems
            .iter()
            .filter_map(|p| match p {
                BackendLookupError::Disabled(name) => Some(format!("{name:?}")),
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
            .map(|name| format!("{name:?}"))
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
        BackendLookupError::Unknown(name) => format!("backend {name:?} is not configured"),
        BackendLookupError::Disabled(name) => format!("backend {name:?} is disabled"),
    }
}

/// A backend's answer that could not be stored, as its failure.
fn answer_not_stored(turn: &Turn, err: &StoreError) -> BackendError {
    BackendError::Failed {
        backend: turn.backend_name.clone(),
        message: format!("the answer could not be stored: {err}"),
    }
}

fn reply_metadata(
    started: Instant,
    usage: &Option<crate::backends::Usage>,
    finish_reason: &Option<String>,
) -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert(
        "duration_ms".to_owned(),
        json!(started.elapsed().as_millis() as u64),
    );
    if let Some(usage) = usage {
        metadata.insert("usage".to_owned(), json!(usage));
    }
    if let Some(reason) = finish_reason {
        metadata.insert("finish_reason".to_owned(), json!(reason));
    }
    metadata
}

/// Marks a user message failed when dropped before [`disarm`](Self::disarm): the request was
/// abandoned (client disconnected, shutdown) while its backend call was running. The mark is
/// written on a task that shutdown waits for, like the replies'.
struct UnansweredGuard {
    armed: Option<(SharedStore, Message)>,
    tasks: tokio_util::task::TaskTracker,
}

impl UnansweredGuard {
    fn new(service: &ChatService, message: &Message) -> Self {
        Self {
            armed: Some((service.store.clone(), message.clone())),
            tasks: service.tasks.clone(),
        }
    }

    fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for UnansweredGuard {
    fn drop(&mut self) {
        let Some((store, mut message)) = self.armed.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.tasks.spawn_on(
            async move {
                let changes = Map::from_iter([
                    (
                        context::STATUS_KEY.to_owned(),
                        json!(context::STATUS_FAILED),
                    ),
                    (
                        "error".to_owned(),
                        json!("the request was abandoned before the backend answered"),
                    ),
                ]);
                if let Err(err) = store.update_message_metadata(&mut message, changes).await {
                    tracing::warn!(%err, "cannot mark an abandoned message");
                }
            },
            &runtime,
        );
    }
}

fn failure_metadata(err: &BackendError) -> Map<String, Value> {
    Map::from_iter([
        (
            context::STATUS_KEY.to_owned(),
            json!(context::STATUS_FAILED),
        ),
        ("error".to_owned(), json!(err.to_string())),
    ])
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
