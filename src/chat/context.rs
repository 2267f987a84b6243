//! What a model is sent: the session's history turned into a conversation for one backend.
//!
//! Rules: a user message whose call failed is left out (it got no answer), and so is one whose
//! call was interrupted (the client left, the server stopped) when nothing answering it was
//! stored; one interrupted after some replies were stored (a broadcast's fast answers, a tool
//! loop's steps, a partial answer) stays, with them. When several backends
//! answered one message (a broadcast), the backend being asked sees its own replies (answers,
//! tool calls and results), or those of the first backend that replied when it gave none; at most `max_messages` are sent, the new message included, oldest
//! dropped first; the conversation never starts with an assistant turn (Anthropic refuses that).
//! Steps of a native tool loop replay as native tool calls and results, but only as complete
//! pairs (every API refuses a call without its result, or a result without its call); a step
//! left incomplete, and every step of a prompt-mode loop, replays as text. A tool result replays
//! exactly as the model read it during the loop: [`result_for_model`] and [`result_as_text`]
//! write it in both places, and the notice the model was sent after it ([`NOTICE_KEY`]) follows
//! it again.

use serde_json::{Map, Value, json};

use crate::backends::{ChatMessage, Role, ToolAnswer, ToolCall};
use crate::store::{ContextMessage, status};

/// Metadata key of a message's status, and its value on a user message whose call failed
/// (left out of the context).
pub const STATUS_KEY: &str = status::KEY;
pub const STATUS_FAILED: &str = status::FAILED;
/// Its value on a user message while its answer is under way: stored with it, removed when the
/// answer is stored (in the same transaction), failed or interrupted. One still there when the
/// server starts was in flight when it stopped, and becomes [`STATUS_INTERRUPTED`].
pub const STATUS_PENDING: &str = status::PENDING;
/// Its value on a user message whose answer was under way when it was cut off: the client
/// left, or the server stopped (shut down, or killed). Left out of the context like a failed
/// one when nothing answering it was stored.
pub const STATUS_INTERRUPTED: &str = status::INTERRUPTED;
/// Its value on an answer or tool result the client's leaving (or the backend breaking off)
/// cut short (replayed like any other).
pub const STATUS_INCOMPLETE: &str = "incomplete";
/// Metadata key and value marking the steps of a native tool loop.
pub const TOOL_MODE_KEY: &str = "tool_mode";
pub const TOOL_MODE_NATIVE: &str = "native";
/// Metadata key of a tool result's notice: text the model was sent, as a user turn, right after
/// the result (the last of an answer whose calls over the limit were skipped).
pub const NOTICE_KEY: &str = "notice";
/// Most characters of one tool result a model is sent (the whole result is stored).
pub const MAX_RESULT_CHARS_TO_MODEL: usize = 32 * 1024;

/// A tool result as a model reads it: cut to [`MAX_RESULT_CHARS_TO_MODEL`] characters. Cutting
/// a cut result again changes nothing.
pub fn result_for_model(content: &str) -> String {
    let mut text: String = content.chars().take(MAX_RESULT_CHARS_TO_MODEL).collect();
    if text.len() < content.len() {
        text.push_str("\n[result truncated]");
    }
    text
}

/// A tool result written as text (the prompt protocol, or a native result in a request without
/// native tools), cut as [`result_for_model`] cuts it: what the model reads during the loop and,
/// byte for byte, on every replay. `name` is the tool as the model was taught it.
pub fn result_as_text(name: &str, content: &str, is_error: bool) -> String {
    let text = result_for_model(content);
    if is_error {
        format!("Tool {name} failed:\n{text}")
    } else {
        format!("Result of tool {name}:\n{text}")
    }
}

/// The name a prompt-mode result gives its tool: `server.tool`, or, when no server has the
/// tool, the name the model wrote (stored as `tool` with no `server`).
pub fn prompt_tool_name(server: Option<&str>, tool: &str) -> String {
    match server {
        Some(server) => format!("{server}.{tool}"),
        None => tool.to_owned(),
    }
}

/// The conversation to send to `backend`: `history` (oldest first) then `new_message`.
pub fn conversation(
    history: &[ContextMessage],
    backend: &str,
    new_message: &str,
    max_messages: usize,
) -> Vec<ChatMessage> {
    let mut turns: Vec<ChatMessage> = Vec::with_capacity(history.len() + 1);
    let mut index = 0;
    while index < history.len() {
        let message = &history[index];
        match message.role.as_str() {
            "user" if message.failed => index += 1,
            "user" if message.interrupted && !has_replies(&history[index + 1..]) => index += 1,
            "user" => {
                turns.push(ChatMessage::text(Role::User, message.content.clone()));
                index += 1;
            }
            "system" => {
                turns.push(ChatMessage::text(Role::System, message.content.clone()));
                index += 1;
            }
            _ => {
                // The replies to the last message (answers, tool calls and results): this
                // backend's, else those of the first backend that replied (a broadcast).
                let end = history[index..]
                    .iter()
                    .position(|m| m.role == "user" || m.role == "system")
                    .map_or(history.len(), |offset| index + offset);
                let replies = &history[index..end];
                let chosen = replies
                    .iter()
                    .find(|m| m.backend.as_deref() == Some(backend))
                    .unwrap_or(&replies[0])
                    .backend
                    .clone();
                for reply in replies.iter().filter(|m| m.backend == chosen) {
                    match reply.role.as_str() {
                        "assistant" => {
                            let mut answer =
                                ChatMessage::text(Role::Assistant, reply.content.clone());
                            answer.tool_calls = native_metadata(reply)
                                .map(|metadata| stored_calls(&metadata))
                                .unwrap_or_default();
                            turns.push(answer);
                        }
                        "tool" => {
                            turns.push(tool_result(reply));
                            if let Some(notice) = step_metadata(reply)
                                .as_ref()
                                .and_then(|metadata| metadata.get(NOTICE_KEY))
                                .and_then(Value::as_str)
                            {
                                turns.push(ChatMessage::text(Role::User, notice));
                            }
                        }
                        _ => {}
                    }
                }
                index = end;
            }
        }
    }
    turns.push(ChatMessage::text(Role::User, new_message));
    let keep = max_messages.max(1);
    if turns.len() > keep {
        turns.drain(..turns.len() - keep);
    }
    let first_user = turns
        .iter()
        .position(|turn| turn.role == Role::User)
        .unwrap_or(0);
    turns.drain(..first_user);
    keep_complete_tool_steps(turns)
}

/// Whether `after`, the history after a user message, starts with replies to it.
fn has_replies(after: &[ContextMessage]) -> bool {
    after
        .first()
        .is_some_and(|next| next.role != "user" && next.role != "system")
}

/// The metadata of a tool-loop step, when `message` is one.
fn step_metadata(message: &ContextMessage) -> Option<Map<String, Value>> {
    let text = message.tool_step.as_deref()?;
    match serde_json::from_str(text) {
        Ok(Value::Object(metadata)) => Some(metadata),
        _ => None,
    }
}

/// The metadata of a native tool step, when `message` is one.
fn native_metadata(message: &ContextMessage) -> Option<Map<String, Value>> {
    step_metadata(message)
        .filter(|metadata| metadata.get(TOOL_MODE_KEY) == Some(&json!(TOOL_MODE_NATIVE)))
}

/// The calls stored in an answer's metadata (`tool_calls: [{id, tool, arguments}]`).
fn stored_calls(metadata: &Map<String, Value>) -> Vec<ToolCall> {
    let Some(Value::Array(calls)) = metadata.get("tool_calls") else {
        return Vec::new();
    };
    calls
        .iter()
        .filter_map(|call| {
            Some(ToolCall {
                id: call.get("id")?.as_str()?.to_owned(),
                name: call.get("tool")?.as_str()?.to_owned(),
                arguments: call.get("arguments").cloned().unwrap_or_else(|| json!({})),
            })
        })
        .collect()
}

/// A stored tool result as the model read it: native when it was, else as prompt mode fed it
/// back.
fn tool_result(message: &ContextMessage) -> ChatMessage {
    let metadata = step_metadata(message).unwrap_or_default();
    let is_error = metadata.get("is_error").and_then(Value::as_bool) == Some(true);
    let text = |key: &str| metadata.get(key).and_then(Value::as_str);
    let native = metadata.get(TOOL_MODE_KEY) == Some(&json!(TOOL_MODE_NATIVE));
    if native && let (Some(call_id), Some(name)) = (text("tool_call_id"), text("tool_name")) {
        return ChatMessage {
            answers: Some(ToolAnswer {
                call_id: call_id.to_owned(),
                name: name.to_owned(),
                is_error,
            }),
            ..ChatMessage::text(Role::Tool, result_for_model(&message.content))
        };
    }
    let name = prompt_tool_name(text("server"), text("tool").unwrap_or("tool"));
    ChatMessage::text(
        Role::User,
        result_as_text(&name, &message.content, is_error),
    )
}

/// Keeps native calls and results only where an answer's calls are each answered by the
/// results right after it; anything else becomes text.
fn keep_complete_tool_steps(turns: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut kept = Vec::with_capacity(turns.len());
    let mut turns = turns.into_iter().peekable();
    while let Some(turn) = turns.next() {
        if turn.tool_calls.is_empty() {
            kept.push(if turn.answers.is_some() {
                // A result whose call is not right before it.
                as_text(turn)
            } else {
                turn
            });
            continue;
        }
        let mut results = Vec::new();
        while let Some(next) = turns.next_if(|next| next.answers.is_some()) {
            results.push(next);
        }
        let answered = |call: &ToolCall| {
            results
                .iter()
                .any(|r| r.answers.as_ref().is_some_and(|a| a.call_id == call.id))
        };
        let asked = |result: &ChatMessage| {
            result
                .answers
                .as_ref()
                .is_some_and(|a| turn.tool_calls.iter().any(|c| c.id == a.call_id))
        };
        if turn.tool_calls.iter().all(answered) && results.iter().all(asked) {
            kept.push(turn);
            kept.extend(results);
        } else {
            kept.push(as_text(turn));
            kept.extend(results.into_iter().map(as_text));
        }
    }
    kept
}

/// The conversation with every native call and result written as text, for a request that
/// offers no native tools (prompt mode, or tools turned off): the APIs refuse tool messages
/// without tools.
pub fn flatten_tool_messages(messages: &mut Vec<ChatMessage>) {
    if messages
        .iter()
        .any(|m| !m.tool_calls.is_empty() || m.answers.is_some())
    {
        *messages = std::mem::take(messages).into_iter().map(as_text).collect();
    }
}

/// One message as plain text: calls as the prompt protocol's JSON, results as prompt mode
/// feeds them back.
fn as_text(message: ChatMessage) -> ChatMessage {
    if let Some(answer) = &message.answers {
        return ChatMessage::text(
            Role::User,
            result_as_text(&answer.name, &message.content, answer.is_error),
        );
    }
    if message.tool_calls.is_empty() {
        return message;
    }
    let mut text = message.content;
    for call in &message.tool_calls {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&json!({"tool": call.name, "arguments": call.arguments}).to_string());
    }
    ChatMessage::text(message.role, text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str, backend: Option<&str>) -> ContextMessage {
        ContextMessage {
            content: content.to_owned(),
            role: role.to_owned(),
            backend: backend.map(str::to_owned),
            failed: false,
            interrupted: false,
            tool_step: None,
        }
    }

    fn texts(turns: &[ChatMessage]) -> Vec<String> {
        turns
            .iter()
            .map(|t| format!("{}:{}", t.role.as_str(), t.content))
            .collect()
    }

    #[test]
    fn broadcast_answers_are_reduced_to_the_asked_backends_own() {
        let history = vec![
            message("user", "q1", None),
            message("assistant", "a1 from x", Some("x")),
            message("assistant", "a1 from y", Some("y")),
            message("user", "q2", Some("z")),
            message("assistant", "a2 from z", Some("z")),
        ];
        assert_eq!(
            texts(&conversation(&history, "y", "q3", 50)),
            [
                "user:q1",
                "assistant:a1 from y",
                "user:q2",
                "assistant:a2 from z",
                "user:q3"
            ]
        );
        assert_eq!(
            texts(&conversation(&history, "z", "q3", 50))[1],
            "assistant:a1 from x"
        );
    }

    #[test]
    fn failed_messages_are_left_out_and_the_oldest_dropped() {
        let mut failed = message("user", "lost", Some("x"));
        failed.failed = true;
        let history = vec![
            message("user", "q1", None),
            message("assistant", "a1", Some("x")),
            failed,
            message("user", "q2", None),
            message("assistant", "a2", Some("x")),
        ];
        assert_eq!(
            texts(&conversation(&history, "x", "q3", 50)),
            [
                "user:q1",
                "assistant:a1",
                "user:q2",
                "assistant:a2",
                "user:q3"
            ]
        );
        // Four would start with an assistant turn: it goes too.
        assert_eq!(
            texts(&conversation(&history, "x", "q3", 4)),
            ["user:q2", "assistant:a2", "user:q3"]
        );
        assert_eq!(texts(&conversation(&history, "x", "q3", 1)), ["user:q3"]);
    }

    #[test]
    fn interrupted_messages_are_left_out_unless_replies_to_them_were_kept() {
        let interrupted = |content: &str| {
            let mut m = message("user", content, None);
            m.interrupted = true;
            m
        };
        let history = vec![
            message("user", "q1", None),
            message("assistant", "a1", Some("x")),
            interrupted("cut before any answer"),
            interrupted("cut after one answer"),
            message("assistant", "fast answer", Some("y")),
            interrupted("the last one"),
        ];
        assert_eq!(
            texts(&conversation(&history, "x", "q3", 50)),
            [
                "user:q1",
                "assistant:a1",
                "user:cut after one answer",
                "assistant:fast answer",
                "user:q3"
            ]
        );
    }

    fn native(role: &str, content: &str, metadata: serde_json::Value) -> ContextMessage {
        let mut m = message(role, content, Some("x"));
        let mut metadata = metadata;
        metadata[TOOL_MODE_KEY] = json!(TOOL_MODE_NATIVE);
        m.tool_step = Some(metadata.to_string());
        m
    }

    fn call_answer(id: &str) -> ContextMessage {
        native(
            "assistant",
            "",
            json!({"tool_calls": [{"id": id, "tool": "fs__read", "arguments": {"path": "/a"}}]}),
        )
    }

    fn result_for(id: &str) -> ContextMessage {
        native(
            "tool",
            "contents",
            json!({"tool_call_id": id, "tool_name": "fs__read", "is_error": false}),
        )
    }

    #[test]
    fn native_steps_replay_as_calls_and_results() {
        let history = vec![
            message("user", "read /a", None),
            call_answer("c1"),
            result_for("c1"),
            message("assistant", "it says contents", Some("x")),
        ];
        let turns = conversation(&history, "x", "thanks", 50);
        assert_eq!(turns.len(), 5);
        assert_eq!(turns[1].tool_calls.len(), 1);
        assert_eq!(turns[1].tool_calls[0].id, "c1");
        assert_eq!(turns[1].tool_calls[0].arguments, json!({"path": "/a"}));
        let answer = turns[2].answers.as_ref().unwrap();
        assert_eq!(
            (answer.call_id.as_str(), answer.name.as_str()),
            ("c1", "fs__read")
        );
        assert_eq!(turns[2].role, Role::Tool);

        let mut flat = turns.clone();
        flatten_tool_messages(&mut flat);
        assert!(
            flat.iter()
                .all(|t| t.tool_calls.is_empty() && t.answers.is_none())
        );
        assert!(
            flat[1].content.contains(r#""tool":"fs__read""#),
            "{:?}",
            flat[1]
        );
        assert_eq!(flat[2].role, Role::User);
        assert_eq!(flat[2].content, "Result of tool fs__read:\ncontents");
    }

    #[test]
    fn an_incomplete_step_or_a_result_cut_from_its_call_goes_as_text() {
        // The client left before the result was stored.
        let history = vec![
            message("user", "read /a", None),
            call_answer("c1"),
            message("user", "and now?", None),
            message("assistant", "done", Some("x")),
        ];
        let turns = conversation(&history, "x", "next", 50);
        assert!(turns.iter().all(|t| t.tool_calls.is_empty()));
        assert!(turns[1].content.contains("fs__read"));

        // A result answering another call.
        let history = vec![
            message("user", "q", None),
            call_answer("c1"),
            result_for("c2"),
        ];
        let turns = conversation(&history, "x", "next", 50);
        assert!(
            turns
                .iter()
                .all(|t| t.tool_calls.is_empty() && t.answers.is_none())
        );

        // Trimmed so that the call is gone: the result may not lead, nor stand alone.
        let history = vec![
            message("user", "q", None),
            call_answer("c1"),
            result_for("c1"),
            message("assistant", "a", Some("x")),
        ];
        let turns = conversation(&history, "x", "next", 3);
        assert_eq!(turns[0].role, Role::User);
        assert!(turns.iter().all(|t| t.answers.is_none()), "{turns:?}");
    }

    fn prompt_result(content: &str, metadata: serde_json::Value) -> ContextMessage {
        let mut m = message("tool", content, Some("x"));
        m.tool_step = Some(metadata.to_string());
        m
    }

    #[test]
    fn prompt_mode_results_replay_as_the_model_read_them() {
        let long = "y".repeat(MAX_RESULT_CHARS_TO_MODEL + 5);
        let history = vec![
            message("user", "q", None),
            message(
                "assistant",
                r#"{"tool": "fs.read", "arguments": {}}"#,
                Some("x"),
            ),
            prompt_result(
                &long,
                json!({"server": "fs", "tool": "read", "is_error": false}),
            ),
            prompt_result(
                "boom",
                json!({"server": "fs", "tool": "read", "is_error": true}),
            ),
            prompt_result(
                "unknown tool",
                json!({"server": null, "tool": "nope", "is_error": true}),
            ),
            message("assistant", "done", Some("x")),
        ];
        let turns = conversation(&history, "x", "next", 50);
        let fed_back: Vec<&str> = turns[2..5].iter().map(|t| t.content.as_str()).collect();
        assert_eq!(
            fed_back,
            [
                result_as_text("fs.read", &long, false).as_str(),
                "Tool fs.read failed:\nboom",
                "Tool nope failed:\nunknown tool",
            ]
        );
        assert!(fed_back[0].ends_with("y\n[result truncated]"));
        assert!(turns[2..5].iter().all(|t| t.role == Role::User));
    }

    #[test]
    fn a_long_native_result_replays_cut_as_the_model_read_it() {
        let long = "z".repeat(MAX_RESULT_CHARS_TO_MODEL * 2);
        let mut result = result_for("c1");
        result.content = long.clone();
        let history = vec![message("user", "read /a", None), call_answer("c1"), result];
        let turns = conversation(&history, "x", "next", 50);
        assert!(turns[2].answers.is_some());
        assert_eq!(turns[2].content, result_for_model(&long));
    }

    #[test]
    fn a_results_notice_follows_it_on_replay_and_keeps_the_native_pair() {
        let mut last = result_for("c1");
        let mut metadata: Value = serde_json::from_str(last.tool_step.as_deref().unwrap()).unwrap();
        metadata[NOTICE_KEY] = json!("2 more were skipped.");
        last.tool_step = Some(metadata.to_string());
        let history = vec![message("user", "read", None), call_answer("c1"), last];
        let turns = conversation(&history, "x", "next", 50);
        assert_eq!(turns.len(), 5, "{turns:?}");
        assert!(turns[2].answers.is_some(), "{turns:?}");
        assert_eq!(
            texts(&turns[3..]),
            ["user:2 more were skipped.", "user:next"]
        );
    }

    #[test]
    fn cutting_a_cut_result_changes_nothing() {
        let long = "é".repeat(MAX_RESULT_CHARS_TO_MODEL + 1);
        let cut = result_for_model(&long);
        assert_eq!(cut.chars().count(), MAX_RESULT_CHARS_TO_MODEL + 19);
        assert_eq!(result_for_model(&cut), cut);
        assert_eq!(result_for_model("short"), "short");
    }
}
