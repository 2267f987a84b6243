//! The rounds of a reply: the model answers; when its answer calls MCP tools, the calls run, the
//! results go back to it, and it answers again, until it answers without a call or the round
//! limit is reached. One loop, whether the client receives the reply as it is produced or
//! waits for the final answer: the difference is only the [`Sink`] its events go to (and so
//! whether the model streams its answers). A streamed turn without tools is the loop's first
//! round; a whole answer without tools is one call ([`super::turn`]).
//!
//! Invariants: every step is stored in the session in order — the assistant's answer holding
//! the call(s), then one `tool` message per call ([`super::steps`]); an answer is stored exactly
//! once, when it ends, however it ends — complete, broken by the backend (what came is stored,
//! marked incomplete), or abandoned by the client or the server's stopping (the backend request
//! is dropped at once, which cancels it; what came is stored, marked incomplete, and the user's
//! message is marked interrupted). A client that leaves (or the server stopping) during a tool
//! round cancels the running call; that call and those not yet run get the error result
//! [`CANCELLED_RESULT`](super::steps::CANCELLED_RESULT), so every stored call has its result and
//! the history replays to native backends. A loop cut off with no text of a later answer to
//! keep, or whose step cannot be stored, marks the stored answer holding its last calls
//! incomplete instead, or the user's message failed when it stored nothing (interrupted when
//! it was cut off); a panic in the loop
//! is such a failure. When the first native request of a `tool_mode: auto` backend is refused,
//! the loop retries in prompt mode ([`ChatService::fall_back_to_prompt`]).

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::{STATUS_INCOMPLETE, STATUS_KEY};
use super::events::{ReplyEvent, Sink};
use super::scanner::{ScanEvent, ToolCallScanner};
use super::steps::{limit_calls, notice_for, skipped_notice};
use super::tools::{self, ToolSetup};
use super::turn::reply_metadata;
use super::{ChatError, ChatService, Interruption, Turn, unless_panicked};
use crate::backends::{BackendError, ChatEvent, ChatStream, ToolCall};
use crate::store::{Message, StoreError};

/// A streamed answer already asked for, and when it was (the wait for its first byte is part of
/// the answer's time).
pub(crate) type Opened = (ChatStream, Instant);

/// One answer of the model: its text, the calls it holds, and how it ended.
struct Answer {
    text: String,
    calls: Vec<ToolCall>,
    ending: Ending,
    started: Instant,
}

/// How an answer ended.
enum Ending {
    Complete {
        model: String,
        metadata: Map<String, Value>,
    },
    Broken(BackendError),
    Abandoned,
}

/// How one tool step ended.
enum StepEnd {
    /// The result is stored (and sent).
    Done,
    /// The client left (or the server is stopping); `stored` says whether a result (the real
    /// one, or the cancelled one of the call it cut off) is stored for this call.
    ClientLeft { stored: bool },
    /// The result could not be stored.
    NotStored(StoreError),
}

/// Why a loop stopped without a final answer.
enum Stop {
    /// The client left, or the server is stopping.
    Interrupted(Interruption),
    /// The backend failed.
    Failed(BackendError),
    /// A step could not be stored: the storage failed, not the backend.
    StepNotStored(StoreError),
    /// The final answer could not be stored: the storage failed, not the backend.
    AnswerNotStored(StoreError),
}

impl Stop {
    /// The failure `backend`'s client is told of.
    fn into_error(self) -> ChatError {
        match self {
            Self::Interrupted(why) => ChatError::Interrupted(why),
            Self::Failed(err) => err.into(),
            Self::StepNotStored(err) => ChatError::StepNotStored(err),
            Self::AnswerNotStored(err) => ChatError::AnswerNotStored(err),
        }
    }
}

/// How a streamed reply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyEnd {
    /// Its final answer is stored.
    Answered,
    /// The backend failed, or what it produced could not be stored.
    Failed,
    /// The client left, or the server is stopping.
    Interrupted,
}

/// What a loop that stops leaves to be marked.
enum Progress {
    /// Only the user's message: it is marked failed (or interrupted).
    Nothing,
    /// The stored answer holding the latest round's calls: it is marked incomplete.
    CallAnswer(Message),
    /// The text of an interrupted answer, stored already marked incomplete.
    Partial,
}

impl ChatService {
    /// Asks for `turn`'s first streamed answer, falling back to prompt mode when the model
    /// refuses native tools. Errors come before the backend's first byte, so that the caller can
    /// answer them as a plain error.
    pub(crate) async fn open_stream(
        &self,
        turn: &mut Turn,
        setup: &mut ToolSetup,
    ) -> Result<Opened, BackendError> {
        let started = Instant::now();
        let stream = match turn.backend.chat_stream(turn.request.clone()).await {
            Err(err) if self.fall_back_to_prompt(turn, setup, &err) => {
                turn.backend.chat_stream(turn.request.clone()).await
            }
            other => other,
        }?;
        Ok((stream, started))
    }

    /// Streams `turn`'s reply, its first answer `opened`, to `events`: the text as it comes,
    /// every tool step, then `done` with the stored answer or `error` (also when the server's
    /// stopping cut the reply off: the stream's final event). Returns how the reply ended.
    pub(crate) async fn stream_reply(
        &self,
        mut turn: Turn,
        mut setup: ToolSetup,
        opened: Opened,
        events: mpsc::Sender<ReplyEvent>,
    ) -> ReplyEnd {
        let sink = Sink::Stream(events.clone(), self.stopping.clone());
        let outcome = self
            .run_loop(&mut turn, &mut setup, Some(opened), &sink)
            .await;
        let (event, end) = match outcome {
            Ok(message) => (ReplyEvent::Done(message), ReplyEnd::Answered),
            Err(Stop::Interrupted(Interruption::ClientLeft)) => return ReplyEnd::Interrupted,
            Err(Stop::Interrupted(why)) => (
                ReplyEvent::Error {
                    backend: turn.backend_name.clone(),
                    error: ChatError::Interrupted(why),
                },
                ReplyEnd::Interrupted,
            ),
            Err(stop) => (
                ReplyEvent::Error {
                    backend: turn.backend_name.clone(),
                    error: stop.into_error(),
                },
                ReplyEnd::Failed,
            ),
        };
        let _ = events.send(event).await;
        end
    }

    /// Runs `turn`'s reply and returns the final answer, stored. The loop is a task of its own:
    /// when this future is dropped (the client left and the server dropped the request), the loop is
    /// cancelled where it stands — the backend request or the running tool call — and keeps
    /// what it produced, as a streamed reply does.
    pub(crate) async fn answer_with_tools(
        &self,
        turn: Turn,
        setup: ToolSetup,
    ) -> Result<Message, ChatError> {
        let left = self.stopping.child_token();
        let _cancel_when_dropped = left.clone().drop_guard();
        let backend = turn.backend_name.clone();
        let service = self.clone();
        let task =
            self.spawn(async move { service.answer_with_tools_until(turn, setup, &left).await });
        match task.await {
            Ok(outcome) => outcome,
            Err(err) => Err(BackendError::Failed {
                backend,
                message: format!("the tool loop stopped: {err}"),
            }
            .into()),
        }
    }

    /// The loop of [`answer_with_tools`](Self::answer_with_tools) on the caller's task,
    /// cancelled where it stands when `left` is.
    pub(crate) async fn answer_with_tools_until(
        &self,
        mut turn: Turn,
        mut setup: ToolSetup,
        left: &CancellationToken,
    ) -> Result<Message, ChatError> {
        let sink = Sink::Collect(left.clone(), self.stopping.clone());
        self.run_loop(&mut turn, &mut setup, None, &sink)
            .await
            .map_err(|stop| stop.into_error())
    }

    /// The rounds, then what a loop that stopped leaves is marked.
    async fn run_loop(
        &self,
        turn: &mut Turn,
        setup: &mut ToolSetup,
        opened: Option<Opened>,
        sink: &Sink,
    ) -> Result<Message, Stop> {
        let mut progress = Progress::Nothing;
        let backend = turn.backend_name.clone();
        let outcome = unless_panicked(&backend, async {
            Ok(self.rounds(turn, setup, opened, sink, &mut progress).await)
        })
        .await
        .unwrap_or_else(|panicked| Err(Stop::Failed(panicked)));
        let Err(stop) = &outcome else {
            return outcome;
        };
        let (err, reason) = match stop {
            Stop::Interrupted(why) => (ChatError::Interrupted(*why), why.to_string()),
            Stop::Failed(err) => (ChatError::from(err.clone()), sink.reason(err)),
            Stop::StepNotStored(store) => {
                let err = ChatError::StepNotStored(store.clone());
                let reason = sink.reason(&err);
                (err, reason)
            }
            Stop::AnswerNotStored(store) => {
                let err = ChatError::AnswerNotStored(store.clone());
                let reason = sink.reason(&err);
                (err, reason)
            }
        };
        if let Progress::CallAnswer(answer) = &mut progress {
            self.mark_incomplete(turn, answer, &reason).await;
        }
        // The question: interrupted with what it got; failed when the backend's failure left
        // nothing answering it; else (steps or a partial answer stored) no longer pending.
        match (stop, &progress) {
            (Stop::Interrupted(why), _) => self.mark_interrupted(turn, *why).await,
            (_, Progress::Nothing) => self.mark_failed(turn, &err).await,
            _ => self.settle_question(turn).await,
        }
        outcome
    }

    /// Round after round until the final answer, stored; `progress` follows what is stored.
    async fn rounds(
        &self,
        turn: &mut Turn,
        setup: &mut ToolSetup,
        mut opened: Option<Opened>,
        sink: &Sink,
        progress: &mut Progress,
    ) -> Result<Message, Stop> {
        let mut round = 0;
        loop {
            let Answer {
                text,
                calls,
                ending,
                started,
            } = self.ask(turn, setup, opened.take(), round == 0, sink).await;
            let (model, mut metadata) = match ending {
                Ending::Complete { model, metadata } => (model, metadata),
                Ending::Broken(err) => {
                    self.keep_partial(turn, &text, &err.to_string(), started, progress)
                        .await;
                    return Err(Stop::Failed(err));
                }
                Ending::Abandoned => {
                    let why = sink.interruption();
                    self.keep_partial(turn, &text, &why.to_string(), started, progress)
                        .await;
                    return Err(Stop::Interrupted(why));
                }
            };
            if calls.is_empty() || round >= setup.max_rounds {
                if !calls.is_empty() {
                    metadata.insert("max_tool_iterations_reached".to_owned(), json!(true));
                }
                if round > 0 {
                    metadata.insert("tool_iterations".to_owned(), json!(round));
                }
                return self
                    .store_final_answer(turn, &text, &model, metadata)
                    .await
                    .map_err(Stop::AnswerNotStored);
            }
            round += 1;
            let mut calls = calls;
            let notice = skipped_notice(limit_calls(&mut calls));
            let answer = self
                .store_call_answer(turn, &text, &model, metadata, &calls, setup)
                .await
                .map_err(Stop::StepNotStored)?;
            *progress = Progress::CallAnswer(answer);
            for (at, call) in calls.iter().enumerate() {
                let notice = notice_for(&notice, at, &calls);
                match self.tool_step(turn, call, setup, notice, sink).await {
                    StepEnd::Done => {}
                    StepEnd::ClientLeft { stored } => {
                        let why = sink.interruption();
                        let unanswered = &calls[at + usize::from(stored)..];
                        self.store_cancelled_calls(turn, unanswered, setup, why)
                            .await;
                        return Err(Stop::Interrupted(why));
                    }
                    StepEnd::NotStored(err) => return Err(Stop::StepNotStored(err)),
                }
            }
        }
    }

    /// The model's next answer: whole for a collecting sink (the first one falling back to
    /// prompt mode when the model refuses native tools), streamed on to a streaming sink
    /// (`opened`, when the caller already asked for it).
    async fn ask(
        &self,
        turn: &mut Turn,
        setup: &mut ToolSetup,
        opened: Option<Opened>,
        first: bool,
        sink: &Sink,
    ) -> Answer {
        let started = Instant::now();
        let events = match sink {
            Sink::Stream(events, _) => events,
            Sink::Collect(..) => {
                // Dropping the request (the client left) closes its connection: the backend
                // stops.
                let reply = tokio::select! {
                    biased;
                    () = sink.closed() => None,
                    reply = async {
                        if first {
                            self.first_reply(turn, setup).await
                        } else {
                            turn.backend.chat(turn.request.clone()).await
                        }
                    } => Some(reply),
                };
                let (text, calls, ending) = match reply {
                    None => (String::new(), Vec::new(), Ending::Abandoned),
                    Some(Err(err)) => (String::new(), Vec::new(), Ending::Broken(err)),
                    Some(Ok(reply)) => {
                        let calls = tools::calls_of(&reply, setup);
                        let metadata = reply_metadata(started, &reply.usage, &reply.finish_reason);
                        let ending = Ending::Complete {
                            model: reply.model,
                            metadata,
                        };
                        (reply.content, calls, ending)
                    }
                };
                return Answer {
                    text,
                    calls,
                    ending,
                    started,
                };
            }
        };
        let (mut stream, started) = match opened {
            Some(opened) => opened,
            None => match turn.backend.chat_stream(turn.request.clone()).await {
                Ok(stream) => (stream, started),
                Err(err) => {
                    return Answer {
                        text: String::new(),
                        calls: Vec::new(),
                        ending: Ending::Broken(err),
                        started,
                    };
                }
            },
        };
        let answer = self
            .relay_answer(turn, &mut stream, started, sink, events, setup)
            .await;
        // Dropping the backend's stream closes its connection: the backend stops generating.
        drop(stream);
        answer
    }

    /// The first answer of a whole-answer turn, falling back to prompt mode when the model
    /// refuses native tools.
    async fn first_reply(
        &self,
        turn: &mut Turn,
        setup: &mut ToolSetup,
    ) -> Result<crate::backends::ChatReply, BackendError> {
        match turn.backend.chat(turn.request.clone()).await {
            Err(err) if self.fall_back_to_prompt(turn, setup, &err) => {
                turn.backend.chat(turn.request.clone()).await
            }
            other => other,
        }
    }

    /// One streamed answer of the model: its text, sent on to `events` (`sink`'s) as deltas
    /// except the tool calls found in it, and how it ended.
    async fn relay_answer(
        &self,
        turn: &Turn,
        stream: &mut ChatStream,
        started: Instant,
        sink: &Sink,
        events: &mpsc::Sender<ReplyEvent>,
        setup: &ToolSetup,
    ) -> Answer {
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut scanner = setup.scans_text().then(ToolCallScanner::new);
        let ending = loop {
            tokio::select! {
                biased;
                () = sink.closed() => break Ending::Abandoned,
                event = stream.next() => match event {
                    Some(Ok(ChatEvent::Delta(delta))) => {
                        text.push_str(&delta);
                        let found = match &mut scanner {
                            Some(scanner) => scanner.push(&delta),
                            None => vec![ScanEvent::Text(delta)],
                        };
                        if !pass_on(turn, found, &mut calls, events).await {
                            break Ending::Abandoned;
                        }
                    }
                    // Native calls: announced when they run, after the answer is complete.
                    Some(Ok(ChatEvent::ToolCall(call))) => calls.push(call),
                    Some(Ok(ChatEvent::Done { model, usage, finish_reason })) => {
                        let rest = scanner.as_mut().map(ToolCallScanner::finish).unwrap_or_default();
                        if !pass_on(turn, rest, &mut calls, events).await {
                            break Ending::Abandoned;
                        }
                        let mut metadata = reply_metadata(started, &usage, &finish_reason);
                        metadata.insert("streamed".to_owned(), json!(true));
                        break Ending::Complete { model, metadata };
                    }
                    Some(Err(err)) => break Ending::Broken(err),
                    // `until_done` ends every stream with Done or an error; this is a guard.
                    None => break Ending::Broken(BackendError::InvalidResponse {
                        backend: turn.backend_name.clone(),
                        message: "the answer ended before it was complete".to_owned(),
                    }),
                },
            }
        };
        Answer {
            text,
            calls,
            ending,
            started,
        }
    }

    /// Runs one call with its `tool_call` and `tool_result` events, `notice` following the
    /// result (see [`ChatService::record_step`]); a client that leaves cancels the running call,
    /// whose cancelled result is then stored.
    async fn tool_step(
        &self,
        turn: &mut Turn,
        call: &ToolCall,
        setup: &ToolSetup,
        notice: Option<&str>,
        sink: &Sink,
    ) -> StepEnd {
        let announced = sink
            .send(|| {
                let (server, tool) = tools::target_names(call, setup);
                ReplyEvent::ToolCall {
                    backend: turn.backend_name.clone(),
                    server,
                    tool,
                    arguments: call.arguments.clone(),
                }
            })
            .await;
        if announced.is_err() {
            return StepEnd::ClientLeft { stored: false };
        }
        let started = Instant::now();
        let ran = tokio::select! {
            biased;
            () = sink.closed() => None,
            step = self.run_call(call, setup) => Some(step),
        };
        let Some(step) = ran else {
            // The call's future is dropped: the MCP request is cancelled.
            let ran_ms = started.elapsed().as_millis() as u64;
            let why = sink.interruption().to_string();
            self.store_cancelled_call(turn, call, setup, ran_ms, &why)
                .await;
            return StepEnd::ClientLeft { stored: true };
        };
        let step = match self.record_step(turn, call, setup, step, notice).await {
            Ok(step) => step,
            Err(err) => return StepEnd::NotStored(err),
        };
        let sent = sink
            .send(|| ReplyEvent::ToolResult {
                backend: turn.backend_name.clone(),
                server: step.server,
                tool: step.tool,
                content: step.outcome.text,
                is_error: step.outcome.is_error,
                duration_ms: step.outcome.duration_ms,
            })
            .await;
        match sent {
            Ok(()) => StepEnd::Done,
            Err(_) => StepEnd::ClientLeft { stored: true },
        }
    }

    /// Stores the text an interrupted answer got to, marked incomplete (nothing when empty);
    /// the answer holding the calls before it then stays as it is.
    async fn keep_partial(
        &self,
        turn: &mut Turn,
        text: &str,
        reason: &str,
        started: Instant,
        progress: &mut Progress,
    ) {
        if text.is_empty() {
            return;
        }
        *progress = Progress::Partial;
        let mut metadata = reply_metadata(started, &None, &None);
        metadata.insert(STATUS_KEY.to_owned(), json!(STATUS_INCOMPLETE));
        metadata.insert("error".to_owned(), json!(reason));
        metadata.insert("streamed".to_owned(), json!(true));
        let model = turn.request.model.clone();
        if let Err(err) = self.store_answer(turn, text, &model, metadata).await {
            tracing::error!(%err, "cannot store a partial answer");
        }
    }
}

/// Sends scanned text on as deltas and keeps the calls; false when the client is gone.
async fn pass_on(
    turn: &Turn,
    found: Vec<ScanEvent>,
    calls: &mut Vec<ToolCall>,
    events: &mpsc::Sender<ReplyEvent>,
) -> bool {
    for item in found {
        match item {
            ScanEvent::Text(text) if text.is_empty() => {}
            ScanEvent::Text(text) => {
                let event = ReplyEvent::Delta {
                    backend: turn.backend_name.clone(),
                    text,
                };
                if events.send(event).await.is_err() {
                    return false;
                }
            }
            ScanEvent::Call(call) => calls.push(tools::from_text(call)),
        }
    }
    true
}
