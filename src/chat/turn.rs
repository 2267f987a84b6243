//! One message to one backend of a session: checking it, storing the user's part, calling
//! the backend (whole, streamed, or through the tool loop) and storing the answer.
//!
//! Invariants: the user's message is stored before its answer is (a plain call runs while the
//! message's commit is under way, and waits for it before the answer is stored); the message is
//! stored `pending`, and its answer's append ends that status in the same commit; a message
//! whose call fails is marked failed, one whose call is cut off (the client leaves mid-call: an
//! [`UnansweredGuard`] marks it when the request's future is dropped; the server stops) is
//! marked interrupted.

use std::time::Instant;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::events::{EVENT_BUFFER, ReplyEvent};
use super::{
    ChatError, ChatService, Interruption, SendMessage, Turn, check_options, choose_model, context,
    non_empty_content, options_over_session, tools,
};
use crate::backends::{ChatReply, ChatRequest};
use crate::store::{ContextMessage, Message, NewMessage, Session, SharedStore, StoreError};

impl ChatService {
    /// Sends `request.content` to one backend of the session with the conversation so far.
    pub async fn send(&self, session_id: &str, request: SendMessage) -> Result<Message, ChatError> {
        let max_rounds = tools::max_iterations(request.max_tool_iterations)?;
        let mut turn = self.prepare_turn(session_id, &request).await?;
        let setup = self.tool_setup(&turn, request.use_tools, max_rounds);
        Self::prepare_tools(&mut turn, &setup);
        if !setup.is_empty() {
            self.store_user_message(&turn).await?;
            // The loop keeps and marks what it produced itself, the client gone or not.
            return self.answer_with_tools(turn, setup).await;
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
            Ok((reply, started)) => match self.store_reply(&turn, reply, started).await {
                Ok(message) => Ok(message),
                // Deleted while its answer was on the way: the session's 404, not the
                // backend's fault, and nothing left to mark.
                Err(StoreError::SessionNotFound(id)) => {
                    guard.disarm();
                    return Err(ChatError::SessionNotFound(id));
                }
                // The backend answered; the storage failed: the client hears the storage's
                // failure, and the question is marked unanswered if it still can be.
                Err(err) => {
                    guard.disarm();
                    self.mark_failed(&mut turn, &ChatError::AnswerNotStored(err.clone()))
                        .await;
                    return Err(ChatError::AnswerNotStored(err));
                }
            },
            Err(err) => Err(err),
        };
        guard.disarm();
        match outcome {
            Ok(message) => Ok(message),
            Err(ChatError::Interrupted(why)) => {
                self.mark_interrupted(&mut turn, why).await;
                Err(ChatError::Interrupted(why))
            }
            Err(err) => {
                self.mark_failed(&mut turn, &err).await;
                Err(err)
            }
        }
    }

    /// Stores the user's message of `turn` and calls the backend meanwhile, which takes that
    /// commit off the path of the answer. The store is polled first, so the message's write is
    /// issued before the backend is asked (and any later write of it, a failure mark included,
    /// lands after it). A failed commit ends the call (the session is gone, or the database
    /// failing): the outer error. The backend's outcome otherwise, with the moment it was
    /// asked, once the message is committed; the server's stopping cuts the call off. While
    /// the store reports a failure (its last write failed), the message is committed first and
    /// the backend asked only after: a question that cannot be stored is not sent.
    async fn call_while_stored(
        &self,
        turn: &Turn,
    ) -> Result<Result<(ChatReply, Instant), ChatError>, StoreError> {
        let call = async {
            tokio::select! {
                () = self.stopping.cancelled() => Err(ChatError::Interrupted(Interruption::ShuttingDown)),
                reply = turn.backend.chat(turn.request.clone()) => reply.map_err(ChatError::from),
            }
        };
        if self.store.health().is_err() {
            self.store_user_message(turn).await?;
            let started = Instant::now();
            let reply = call.await;
            return Ok(reply.map(|reply| (reply, started)));
        }
        let stored = self.store_user_message(turn);
        let started = Instant::now();
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
        let options = options_over_session(&session, &request.options)?;
        check_options(&options, backend.as_ref())?;
        let history = self.complete_history(&session, history).await?;
        let chat = ChatRequest {
            model: model.clone(),
            system: self.system_prompt(&session, &backend_name),
            messages: context::conversation(&history, &backend_name, content, self.max_context),
            tools: Vec::new(),
            options,
        };
        let user_message = Message::unsaved(NewMessage {
            role: "user",
            content,
            backend: Some(&backend_name),
            model: Some(&model),
            metadata: pending(),
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
        metadata: Map<String, Value>,
    ) -> Result<Message, StoreError> {
        self.record(turn, answer_to(turn, content, model, metadata))
            .await
    }

    /// [`store_answer`](Self::store_answer) for `turn`'s final answer: its question's
    /// `pending` status ends in the same commit (a broadcast's shared question is settled once
    /// every backend is done, [`super::broadcast`]).
    pub(crate) async fn store_final_answer(
        &self,
        turn: &Turn,
        content: &str,
        model: &str,
        metadata: Map<String, Value>,
    ) -> Result<Message, StoreError> {
        let (Some(session_id), false) = (&turn.session_id, turn.shares_user_message) else {
            return self.store_answer(turn, content, model, metadata).await;
        };
        let answer = Message::unsaved(answer_to(turn, content, model, metadata));
        let mut settled = turn.user_message.metadata.clone();
        settled.remove(context::STATUS_KEY);
        self.store
            .append_settling(
                session_id,
                std::slice::from_ref(&answer),
                &turn.user_message.id,
                &settled,
            )
            .await?;
        Ok(answer)
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

    /// Marks the user's message failed with `err`; the message stays. A store error here is
    /// only logged: `err` is what the client must see.
    pub(crate) async fn mark_failed(&self, turn: &mut Turn, err: &(dyn std::fmt::Display + Sync)) {
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

    /// Marks the user's message interrupted (`why`), with what was stored of its answer kept.
    /// A store error here is only logged.
    pub(crate) async fn mark_interrupted(&self, turn: &mut Turn, why: Interruption) {
        if turn.shares_user_message || turn.session_id.is_none() {
            return;
        }
        let changes = Map::from_iter([
            (
                context::STATUS_KEY.to_owned(),
                json!(context::STATUS_INTERRUPTED),
            ),
            ("error".to_owned(), json!(why.to_string())),
        ]);
        if let Err(err) = self
            .store
            .update_message_metadata(&mut turn.user_message, changes)
            .await
        {
            tracing::error!(%err, "cannot mark a message as interrupted");
        }
    }

    /// Ends the `pending` status of the user's message when its reply ended with something
    /// stored but no final answer (the stored steps are marked instead).
    pub(crate) async fn settle_question(&self, turn: &mut Turn) {
        if turn.shares_user_message || turn.session_id.is_none() {
            return;
        }
        let message = &mut turn.user_message;
        if message.metadata.remove(context::STATUS_KEY).is_none() {
            return;
        }
        if let Err(err) = self
            .store
            .set_message_metadata(&message.id, &message.metadata)
            .await
        {
            tracing::error!(%err, "cannot settle a message");
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

    /// Like [`send`](ChatService::send), but answers with the events of the reply as the backend
    /// produces them. Errors before the backend's first byte (bad request, backend down or
    /// refusing) are returned here, so the client gets them as a plain HTTP error.
    pub async fn send_streaming(
        &self,
        session_id: &str,
        request: SendMessage,
    ) -> Result<mpsc::Receiver<ReplyEvent>, ChatError> {
        let max_rounds = tools::max_iterations(request.max_tool_iterations)?;
        let mut turn = self.begin_turn(session_id, &request).await?;
        let mut setup = self.tool_setup(&turn, request.use_tools, max_rounds);
        Self::prepare_tools(&mut turn, &setup);
        let guard = UnansweredGuard::new(self, &turn.user_message);
        let opened = self.open_stream(&mut turn, &mut setup).await;
        guard.disarm();
        let opened = match opened {
            Ok(opened) => opened,
            Err(err) => {
                self.mark_failed(&mut turn, &err).await;
                return Err(err.into());
            }
        };
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let service = self.clone();
        self.spawn(async move { service.stream_reply(turn, setup, opened, events).await });
        Ok(receiver)
    }

    /// One call to the backend, its answer stored; cancelling `left` drops the call, which
    /// cancels it (dropping this future does the same). An answer that cannot be stored is the
    /// storage's failure, not the backend's.
    pub(super) async fn answer(
        &self,
        turn: &Turn,
        left: &CancellationToken,
    ) -> Result<Message, ChatError> {
        let started = Instant::now();
        let reply = tokio::select! {
            biased;
            () = left.cancelled() => return Err(ChatError::Interrupted(self.interruption())),
            reply = turn.backend.chat(turn.request.clone()) => reply,
        }?;
        self.store_reply(turn, reply, started)
            .await
            .map_err(ChatError::AnswerNotStored)
    }

    /// Stores the backend's `reply` to `turn`, asked at `started`.
    async fn store_reply(
        &self,
        turn: &Turn,
        reply: ChatReply,
        started: Instant,
    ) -> Result<Message, StoreError> {
        let metadata = reply_metadata(started, &reply.usage, &reply.finish_reason);
        self.store_final_answer(turn, &reply.content, &reply.model, metadata)
            .await
    }

    /// The history for a message to one backend, given the last context's worth of rows: those
    /// rows, or all that [`history`](Self::history) reads when some of them will be left out.
    async fn complete_history(
        &self,
        session: &Session,
        history: Vec<ContextMessage>,
    ) -> Result<Vec<ContextMessage>, ChatError> {
        let rows = self.max_context;
        let some_left_out = history.iter().any(|m| m.failed || m.interrupted)
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
    pub(super) async fn history(
        &self,
        session: &Session,
    ) -> Result<Vec<ContextMessage>, ChatError> {
        let per_turn = session.backends.len().max(1) + 1;
        let wanted = self.max_context.saturating_mul(per_turn);
        Ok(self.store.context_messages(&session.id, wanted).await?)
    }
}

/// What every stored answer records of its call: how long it took, the usage and the
/// finish reason the backend reported.
pub(crate) fn reply_metadata(
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

/// Marks a user message interrupted when dropped before [`disarm`](Self::disarm): the request
/// was abandoned (client disconnected, shutdown) while its backend call was running. The mark
/// is written on a task that shutdown waits for, like the replies'.
pub(crate) struct UnansweredGuard {
    armed: Option<(SharedStore, Message)>,
    tasks: tokio_util::task::TaskTracker,
}

impl UnansweredGuard {
    pub(crate) fn new(service: &ChatService, message: &Message) -> Self {
        Self {
            armed: Some((service.store.clone(), message.clone())),
            tasks: service.tasks.clone(),
        }
    }

    pub(crate) fn disarm(mut self) {
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
                        json!(context::STATUS_INTERRUPTED),
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

/// `turn`'s answer as stored; `model` is the one the backend reports having used (metadata
/// `requested_model` keeps the one asked for when they differ).
fn answer_to<'a>(
    turn: &'a Turn,
    content: &'a str,
    model: &'a str,
    mut metadata: Map<String, Value>,
) -> NewMessage<'a> {
    if model != turn.request.model {
        metadata.insert("requested_model".to_owned(), json!(turn.request.model));
    }
    NewMessage {
        role: "assistant",
        content,
        backend: Some(&turn.backend_name),
        model: Some(model),
        metadata,
    }
}

/// A question's metadata when it is stored: `pending` until its answer is stored, failed or
/// interrupted (see [`context::STATUS_PENDING`]).
pub(crate) fn pending() -> Map<String, Value> {
    Map::from_iter([(
        context::STATUS_KEY.to_owned(),
        json!(context::STATUS_PENDING),
    )])
}

fn failure_metadata(err: &(dyn std::fmt::Display + Sync)) -> Map<String, Value> {
    Map::from_iter([
        (
            context::STATUS_KEY.to_owned(),
            json!(context::STATUS_FAILED),
        ),
        ("error".to_owned(), json!(err.to_string())),
    ])
}
