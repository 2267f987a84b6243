//! Sessions and messaging: creating sessions, sending a message to one backend with the whole
//! conversation, and broadcasting one message to several backends at once.
//!
//! Invariants: the user's message is stored before any backend is called, so a failure never
//! loses it (it is marked failed instead); every answer is stored before it is returned; in a
//! broadcast, every backend is called concurrently and one failing never fails the others.

pub mod context;

use std::time::Instant;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::backends::{BackendError, BackendLookupError, BackendRegistry, ChatRequest};
use crate::store::{ContextMessage, Message, NewMessage, Session, Store, StoreError};

/// Largest page of sessions or messages one request may ask for.
pub const MAX_PAGE: i64 = 1000;

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
#[derive(Debug, Deserialize)]
pub struct CreateSession {
    pub backends: Vec<String>,
    pub name: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

/// `POST /sessions/{id}/message`.
#[derive(Debug, Deserialize)]
pub struct SendMessage {
    pub content: String,
    pub backend: Option<String>,
    pub model: Option<String>,
    /// Taken by the tool loop; accepted now so clients can send it.
    pub use_tools: Option<bool>,
    pub max_tool_iterations: Option<u32>,
}

/// `POST /sessions/{id}/broadcast`.
#[derive(Debug, Deserialize)]
pub struct BroadcastMessage {
    pub content: String,
    pub backends: Option<Vec<String>>,
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
    },
}

#[derive(Debug, Serialize)]
pub struct BroadcastResponse {
    pub user_message: Message,
    pub responses: Vec<BroadcastOutcome>,
}

/// The sessions service.
#[derive(Clone)]
pub struct ChatService {
    store: Store,
    backends: BackendRegistry,
    max_context: usize,
}

impl ChatService {
    pub fn new(store: Store, backends: BackendRegistry, max_context: usize) -> Self {
        Self {
            store,
            backends,
            max_context,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
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
        let content = non_empty_content(&request.content)?;
        let session = self.store.session(session_id).await?;
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
        let history = self.history_for_one(&session).await?;
        let chat = ChatRequest {
            model: model.clone(),
            system: self.system_prompt(&session, &backend_name),
            messages: context::conversation(&history, &backend_name, content, self.max_context),
        };
        let mut user_message = self
            .store
            .append_message(
                &session.id,
                NewMessage {
                    role: "user",
                    content,
                    backend: Some(&backend_name),
                    model: Some(&model),
                    metadata: Map::new(),
                },
            )
            .await?;
        // If the client goes away, axum drops this future mid-call: the guard still marks the
        // message, so the history never shows a question that silently got no answer.
        let guard = UnansweredGuard::new(&self.store, &user_message);
        let started = Instant::now();
        let outcome = backend.chat(chat).await;
        guard.disarm();
        match outcome {
            Ok(reply) => {
                let mut metadata = reply_metadata(started, &reply.usage, &reply.finish_reason);
                if reply.model != model {
                    metadata.insert("requested_model".to_owned(), json!(model));
                }
                Ok(self
                    .store
                    .append_message(
                        &session.id,
                        NewMessage {
                            role: "assistant",
                            content: &reply.content,
                            backend: Some(&backend_name),
                            model: Some(&reply.model),
                            metadata,
                        },
                    )
                    .await?)
            }
            Err(err) => {
                let failure = failure_metadata(&err);
                // The message stays; if marking it fails too, the backend's error still wins.
                if let Err(store_err) = self
                    .store
                    .update_message_metadata(&mut user_message, failure)
                    .await
                {
                    tracing::error!(%store_err, "cannot mark a message as failed");
                }
                Err(err.into())
            }
        }
    }

    /// Sends one message to several backends of the session at once and keeps every answer.
    pub async fn broadcast(
        &self,
        session_id: &str,
        request: BroadcastMessage,
    ) -> Result<BroadcastResponse, ChatError> {
        let content = non_empty_content(&request.content)?;
        let session = self.store.session(session_id).await?;
        let targets = match request.backends {
            Some(names) => dedup(names),
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
        let mut user_message = self
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

        let calls = targets.iter().map(|name| {
            let history = &history;
            let session = &session;
            async move {
                match self.answer_one(session, name, history, content).await {
                    Ok(message) => BroadcastOutcome::Answered {
                        backend: name.clone(),
                        message,
                    },
                    Err(err) => BroadcastOutcome::Failed {
                        backend: name.clone(),
                        status: crate::error::ApiError::from(ChatError::from(err.clone()))
                            .status()
                            .as_u16(),
                        error: err.to_string(),
                    },
                }
            }
        });
        let responses = join_all(calls).await;

        let failed: Vec<&str> = responses
            .iter()
            .filter_map(|outcome| match outcome {
                BroadcastOutcome::Failed { backend, .. } => Some(backend.as_str()),
                BroadcastOutcome::Answered { .. } => None,
            })
            .collect();
        if !failed.is_empty() {
            let mut changes = Map::from_iter([("failed_backends".to_owned(), json!(failed))]);
            if failed.len() == responses.len() {
                changes.insert(
                    context::STATUS_KEY.to_owned(),
                    json!(context::STATUS_FAILED),
                );
            }
            self.store
                .update_message_metadata(&mut user_message, changes)
                .await?;
        }
        Ok(BroadcastResponse {
            user_message,
            responses,
        })
    }

    /// One backend's part of a broadcast: call it, store its answer.
    async fn answer_one(
        &self,
        session: &Session,
        backend_name: &str,
        history: &[ContextMessage],
        content: &str,
    ) -> Result<Message, BackendError> {
        let backend = self.backends.client(backend_name).map_err(|err| {
            // Checked before; only a config change between the two could get here.
            BackendError::Unreachable {
                backend: backend_name.to_owned(),
                message: err.to_string(),
            }
        })?;
        let model = choose_model(session, backend_name, None, backend.default_model());
        let started = Instant::now();
        let reply = backend
            .chat(ChatRequest {
                model,
                system: self.system_prompt(session, backend_name),
                messages: context::conversation(history, backend_name, content, self.max_context),
            })
            .await?;
        let metadata = reply_metadata(started, &reply.usage, &reply.finish_reason);
        self.store
            .append_message(
                &session.id,
                NewMessage {
                    role: "assistant",
                    content: &reply.content,
                    backend: Some(backend_name),
                    model: Some(&reply.model),
                    metadata,
                },
            )
            .await
            .map_err(|err| BackendError::Failed {
                backend: backend_name.to_owned(),
                message: format!("the answer could not be stored: {err}"),
            })
    }

    /// The history for a message to one backend: usually just the context's worth of rows; all
    /// that [`history`](Self::history) reads when some of those rows will be left out.
    async fn history_for_one(&self, session: &Session) -> Result<Vec<ContextMessage>, ChatError> {
        let rows = self.max_context as i64;
        let history = self.store.context_messages(&session.id, rows).await?;
        let some_left_out = history.iter().any(|m| m.failed)
            || history
                .windows(2)
                .any(|pair| pair[0].role == "assistant" && pair[1].role == "assistant");
        if some_left_out && history.len() as i64 == rows {
            return self.history(session).await;
        }
        Ok(history)
    }

    /// Enough recent history to fill the context after failed messages and extra broadcast
    /// answers are left out.
    async fn history(&self, session: &Session) -> Result<Vec<ContextMessage>, ChatError> {
        let per_turn = session.backends.len().max(1) + 1;
        let wanted = (self.max_context * per_turn).min(i64::MAX as usize) as i64;
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
/// abandoned (client disconnected, shutdown) while its backend call was running.
struct UnansweredGuard {
    armed: Option<(Store, Message)>,
}

impl UnansweredGuard {
    fn new(store: &Store, message: &Message) -> Self {
        Self {
            armed: Some((store.clone(), message.clone())),
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
        runtime.spawn(async move {
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
        });
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
