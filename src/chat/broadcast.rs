//! One message to several backends of a session at once, whole or streamed.
//!
//! Invariants: every backend is called concurrently, and one failing never fails the others;
//! the user's message is stored once (`pending`), shared by every backend's turn; the answers
//! that completed are kept whatever happens to the others; once every backend is done, the
//! message is settled in one write: the backends that failed are recorded on it
//! (`failed_backends`), those cut off by the client's leaving or the server's stopping too
//! (`interrupted_backends`, their calls cancelled), and it is marked `interrupted` when any was
//! cut off, else `failed` when every backend failed. A backend whose answer cannot be stored fails with the storage's
//! error, never as a backend failure; when the storage failed every backend, the broadcast
//! fails as a whole with it, as a message to one backend would.

use futures_util::future::join_all;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::events::{EVENT_BUFFER, ReplyEvent};
use super::tool_loop::ReplyEnd;
use super::{
    BroadcastMessage, ChatError, ChatService, Turn, check_options, choose_model, context, dedup,
    non_empty_content, options_over_session, tools, unless_panicked,
};
use crate::backends::{BackendError, ChatRequest};
use crate::store::{Message, NewMessage};

/// One backend's outcome in a broadcast.
#[derive(Debug)]
pub enum BroadcastOutcome {
    Answered {
        backend: String,
        message: Message,
    },
    /// The backend's reply failed, or could not be stored; what it left is marked as a
    /// message alone would be.
    Failed {
        backend: String,
        error: ChatError,
    },
}

/// A broadcast's user message and every backend's outcome, in the order they were asked.
#[derive(Debug)]
pub struct BroadcastResponse {
    pub user_message: Message,
    pub responses: Vec<BroadcastOutcome>,
}

impl BroadcastResponse {
    /// The storage's failure (the first backend's) when it is what failed every backend: no
    /// answer could be kept, so the broadcast as a whole failed.
    fn storage_failure_of_all(&self) -> Option<ChatError> {
        let mut first = None;
        for outcome in &self.responses {
            match outcome {
                BroadcastOutcome::Failed { error, .. } if error.is_storage_failure() => {
                    first.get_or_insert_with(|| error.clone());
                }
                _ => return None,
            }
        }
        first
    }
}

impl ChatService {
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
        // The server's stopping cuts the calls off too.
        let left = self.stopping.child_token();
        let _cancel_when_dropped = left.clone().drop_guard();
        let service = self.clone();
        let task =
            self.spawn(async move { service.broadcast_until(user_message, turns, &left).await });
        let response = task.await.map_err(|err| {
            ChatError::Backend(BackendError::Failed {
                backend: targets.join(", "),
                message: format!("the broadcast stopped: {err}"),
            })
        })?;
        match response.storage_failure_of_all() {
            Some(err) => Err(err),
            None => Ok(response),
        }
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
                Err(error) => BroadcastOutcome::Failed { backend, error },
            }
        });
        let responses = join_all(calls).await;
        let ends: Vec<(String, ReplyEnd)> = responses
            .iter()
            .map(|outcome| match outcome {
                BroadcastOutcome::Answered { backend, .. } => (backend.clone(), ReplyEnd::Answered),
                BroadcastOutcome::Failed {
                    backend,
                    error: ChatError::Interrupted(_),
                } => (backend.clone(), ReplyEnd::Interrupted),
                BroadcastOutcome::Failed { backend, .. } => (backend.clone(), ReplyEnd::Failed),
            })
            .collect();
        self.settle_broadcast(&mut user_message, &ends).await;
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
        let options = options_over_session(&session, &request.options)?;
        // Every backend can take the options before anything is stored.
        for name in &targets {
            check_options(&options, self.client(name)?.as_ref())?;
        }
        let history = self.history(&session).await?;
        let mut metadata = super::turn::pending();
        metadata.insert("broadcast".to_owned(), json!(targets));
        let user_message = self
            .store
            .append_message(
                &session.id,
                NewMessage {
                    role: "user",
                    content,
                    backend: None,
                    model: None,
                    metadata,
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
                    options: options.clone(),
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

    /// Settles a broadcast's user message once every backend is done (`ends`: how each
    /// ended): no longer pending; which backends failed and which were cut off noted; marked
    /// interrupted when any was cut off, else failed when all failed. One write per broadcast,
    /// after its answers.
    pub(crate) async fn settle_broadcast(
        &self,
        user_message: &mut Message,
        ends: &[(String, ReplyEnd)],
    ) {
        let named = |end: ReplyEnd| -> Vec<&str> {
            ends.iter()
                .filter(|(_, e)| *e == end)
                .map(|(backend, _)| backend.as_str())
                .collect()
        };
        let (failed, interrupted) = (named(ReplyEnd::Failed), named(ReplyEnd::Interrupted));
        let metadata = &mut user_message.metadata;
        metadata.remove(context::STATUS_KEY);
        if !failed.is_empty() {
            metadata.insert("failed_backends".to_owned(), json!(failed));
        }
        if !interrupted.is_empty() {
            metadata.insert("interrupted_backends".to_owned(), json!(interrupted));
            metadata.insert(
                context::STATUS_KEY.to_owned(),
                json!(context::STATUS_INTERRUPTED),
            );
        } else if failed.len() == ends.len() {
            metadata.insert(
                context::STATUS_KEY.to_owned(),
                json!(context::STATUS_FAILED),
            );
        }
        if let Err(err) = self
            .store
            .set_message_metadata(&user_message.id, &user_message.metadata)
            .await
        {
            tracing::error!(%err, "cannot record how a broadcast ended");
        }
    }

    /// Like [`broadcast`](ChatService::broadcast), but streams every backend's events,
    /// interleaved as they come. A backend that fails to start gets its `error` event; the
    /// others go on.
    pub async fn broadcast_streaming(
        &self,
        session_id: &str,
        request: BroadcastMessage,
    ) -> Result<mpsc::Receiver<ReplyEvent>, ChatError> {
        let (mut user_message, turns) = self.begin_broadcast(session_id, &request).await?;
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let service = self.clone();
        self.spawn(async move {
            let streams: Vec<_> = turns
                .into_iter()
                .map(|(mut turn, mut setup)| {
                    let (service, events) = (service.clone(), events.clone());
                    async move {
                        let backend = turn.backend_name.clone();
                        let end = match service.open_stream(&mut turn, &mut setup).await {
                            Ok(opened) => service.stream_reply(turn, setup, opened, events).await,
                            Err(err) => {
                                let _ = events.send(ReplyEvent::failure(&backend, err)).await;
                                ReplyEnd::Failed
                            }
                        };
                        (backend, end)
                    }
                })
                .collect();
            // Each relay holds its own sender: the stream ends when the last one is done.
            drop(events);
            let ends = join_all(streams).await;
            service.settle_broadcast(&mut user_message, &ends).await;
        });
        Ok(receiver)
    }
}
