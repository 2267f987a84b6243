//! What a tool loop stores, and feeds back to the model, for each step: the answer holding the
//! calls, then one `tool` message per call.
//!
//! Invariants: every step is stored in the session in order — the assistant's answer holding the
//! call(s), then one `tool` message per call — with what a replay needs (native steps are marked
//! `tool_mode: native`); what the model is fed back is written by [`context::result_as_text`]
//! and [`context::result_for_model`], which the replay uses too, and a notice the model is sent
//! after the results (calls over [`MAX_CALLS_PER_ANSWER`] skipped) is stored with the last
//! result, so the replay repeats it. A call the client's leaving cut off (and those of the same
//! answer not run yet) gets a result, [`CANCELLED_RESULT`], an error marked incomplete, so the
//! answer holding the calls keeps a result for every call.

use serde_json::{Map, Value, json};

use super::context::{
    self, NOTICE_KEY, STATUS_INCOMPLETE, STATUS_KEY, TOOL_MODE_KEY, TOOL_MODE_NATIVE,
};
use super::tools::{Protocol, ToolOutcome, ToolSetup, ToolStep, target_names};
use super::{ChatService, Interruption, Turn};
use crate::backends::{ChatMessage, Role, ToolAnswer, ToolCall};
use crate::store::{Message, NewMessage, StoreError};

/// The result stored for a call the client's leaving cut off (or that never ran because of it).
pub const CANCELLED_RESULT: &str = "cancelled: client disconnected";

/// Most calls run from one answer; a model that writes more gets told.
pub const MAX_CALLS_PER_ANSWER: usize = 16;

/// Keeps the first [`MAX_CALLS_PER_ANSWER`] calls; returns how many were dropped.
pub fn limit_calls(calls: &mut Vec<ToolCall>) -> usize {
    let skipped = calls.len().saturating_sub(MAX_CALLS_PER_ANSWER);
    calls.truncate(MAX_CALLS_PER_ANSWER);
    skipped
}

/// What the model is told, after the results, when `skipped` of its calls were not run (in
/// native mode the stored answer holds only the calls that ran, so every call there has its
/// result).
pub(crate) fn skipped_notice(skipped: usize) -> Option<String> {
    (skipped > 0).then(|| {
        format!(
            "Only the first {MAX_CALLS_PER_ANSWER} tool calls of an answer are run; \
             {skipped} more were skipped."
        )
    })
}

/// The notice to store with the result of the call at `at` of `calls`: only the last has it.
pub(crate) fn notice_for<'a>(
    notice: &'a Option<String>,
    at: usize,
    calls: &[ToolCall],
) -> Option<&'a str> {
    notice.as_deref().filter(|_| at + 1 == calls.len())
}

impl ChatService {
    /// Stores an answer that holds tool calls and adds it to the conversation; returns it as
    /// stored, or the store's failure.
    pub(crate) async fn store_call_answer(
        &self,
        turn: &mut Turn,
        content: &str,
        model: &str,
        mut metadata: Map<String, Value>,
        calls: &[ToolCall],
        setup: &ToolSetup,
    ) -> Result<Message, StoreError> {
        metadata.insert(
            "tool_calls".to_owned(),
            json!(
                calls
                    .iter()
                    .map(|c| json!({"id": c.id, "tool": c.name, "arguments": c.arguments}))
                    .collect::<Vec<_>>()
            ),
        );
        let native = setup.protocol == Protocol::Native;
        if native {
            metadata.insert(TOOL_MODE_KEY.to_owned(), json!(TOOL_MODE_NATIVE));
        }
        let stored = self.store_answer(turn, content, model, metadata).await?;
        let mut answer = ChatMessage::text(Role::Assistant, content);
        if native {
            answer.tool_calls = calls.to_vec();
        }
        turn.request.messages.push(answer);
        Ok(stored)
    }

    /// Stores a call's result and adds it to the conversation as the protocol feeds it back,
    /// followed by `notice` (stored with the result, so that the replay repeats it); or returns
    /// the store's failure.
    pub(crate) async fn record_step(
        &self,
        turn: &mut Turn,
        call: &ToolCall,
        setup: &ToolSetup,
        step: ToolStep,
        notice: Option<&str>,
    ) -> Result<ToolStep, StoreError> {
        let ToolStep {
            server,
            tool,
            outcome,
            ..
        } = &step;
        let native = setup.protocol == Protocol::Native;
        let mut metadata = result_metadata(call, server.as_deref(), tool, outcome, native);
        if let Some(notice) = notice {
            metadata.insert(NOTICE_KEY.to_owned(), json!(notice));
        }
        self.store_tool_result(turn, outcome, metadata).await?;
        turn.request.messages.push(if native {
            ChatMessage {
                answers: Some(ToolAnswer {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    is_error: outcome.is_error,
                }),
                ..ChatMessage::text(Role::Tool, context::result_for_model(&outcome.text))
            }
        } else {
            let name = context::prompt_tool_name(server.as_deref(), tool);
            ChatMessage::text(
                Role::User,
                context::result_as_text(&name, &outcome.text, outcome.is_error),
            )
        });
        if let Some(notice) = notice {
            turn.request
                .messages
                .push(ChatMessage::text(Role::User, notice));
        }
        Ok(step)
    }

    /// Stores [`CANCELLED_RESULT`] as the error result of a call the client's leaving cut off
    /// after `duration_ms` (0: it never started), marked incomplete with `reason`: the answer
    /// holding the call keeps a result for every call, so the history still replays natively.
    pub(crate) async fn store_cancelled_call(
        &self,
        turn: &Turn,
        call: &ToolCall,
        setup: &ToolSetup,
        duration_ms: u64,
        reason: &str,
    ) {
        let (server, tool) = target_names(call, setup);
        let outcome = ToolOutcome {
            text: CANCELLED_RESULT.to_owned(),
            is_error: true,
            duration_ms,
        };
        let native = setup.protocol == Protocol::Native;
        let mut metadata = result_metadata(call, server.as_deref(), &tool, &outcome, native);
        metadata.insert(STATUS_KEY.to_owned(), json!(STATUS_INCOMPLETE));
        metadata.insert("error".to_owned(), json!(reason));
        if let Err(err) = self.store_tool_result(turn, &outcome, metadata).await {
            tracing::error!(%err, "cannot store a cancelled tool call");
        }
    }

    /// [`store_cancelled_call`](Self::store_cancelled_call) for `calls`, none of which started:
    /// the reply was cut off (`why`) before their turn.
    pub(crate) async fn store_cancelled_calls(
        &self,
        turn: &Turn,
        calls: &[ToolCall],
        setup: &ToolSetup,
        why: Interruption,
    ) {
        let reason = why.to_string();
        for call in calls {
            self.store_cancelled_call(turn, call, setup, 0, &reason)
                .await;
        }
    }

    async fn store_tool_result(
        &self,
        turn: &Turn,
        outcome: &ToolOutcome,
        metadata: Map<String, Value>,
    ) -> Result<Message, StoreError> {
        self.record(
            turn,
            NewMessage {
                role: "tool",
                content: &outcome.text,
                backend: Some(&turn.backend_name),
                model: None,
                metadata,
            },
        )
        .await
    }
}

/// A tool message's metadata: what a replay needs and what a reader wants to see.
fn result_metadata(
    call: &ToolCall,
    server: Option<&str>,
    tool: &str,
    outcome: &ToolOutcome,
    native: bool,
) -> Map<String, Value> {
    let mut metadata = Map::from_iter([
        ("server".to_owned(), json!(server)),
        ("tool".to_owned(), json!(tool)),
        ("arguments".to_owned(), call.arguments.clone()),
        ("duration_ms".to_owned(), json!(outcome.duration_ms)),
        ("is_error".to_owned(), json!(outcome.is_error)),
        ("tool_call_id".to_owned(), json!(call.id)),
    ]);
    if native {
        metadata.insert(TOOL_MODE_KEY.to_owned(), json!(TOOL_MODE_NATIVE));
        metadata.insert("tool_name".to_owned(), json!(call.name));
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str) -> ToolCall {
        ToolCall {
            id: "call_1".to_owned(),
            name: name.to_owned(),
            arguments: json!({}),
        }
    }

    #[test]
    fn one_answer_runs_at_most_the_limit_of_calls() {
        let mut calls: Vec<ToolCall> = (0..20).map(|i| call(&format!("t{i}"))).collect();
        assert_eq!(limit_calls(&mut calls), 4);
        assert_eq!(calls.len(), MAX_CALLS_PER_ANSWER);
        assert_eq!(calls[0].name, "t0");
    }
}
