//! What a model is sent: the session's history turned into a conversation for one backend.
//!
//! Rules: a user message whose call failed is left out (it got no answer); when several backends
//! answered one message (a broadcast), the backend being asked sees its own answer, or the first
//! one when it gave none; at most `max_messages` are sent, the new message included, oldest
//! dropped first; the conversation never starts with an assistant turn (Anthropic refuses that).

use crate::backends::{ChatMessage, Role};
use crate::store::ContextMessage;

/// Metadata key set on a user message whose backend call failed.
pub const STATUS_KEY: &str = "status";
pub const STATUS_FAILED: &str = "failed";

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
            "user" | "system" => {
                turns.push(ChatMessage {
                    role: if message.role == "user" {
                        Role::User
                    } else {
                        Role::System
                    },
                    content: message.content.clone(),
                });
                index += 1;
            }
            "assistant" => {
                // One answer per turn: this backend's, else the first.
                let run_end = history[index..]
                    .iter()
                    .position(|m| m.role != "assistant")
                    .map_or(history.len(), |offset| index + offset);
                let run = &history[index..run_end];
                let chosen = run
                    .iter()
                    .find(|m| m.backend.as_deref() == Some(backend))
                    .unwrap_or(&run[0]);
                turns.push(ChatMessage {
                    role: Role::Assistant,
                    content: chosen.content.clone(),
                });
                index = run_end;
            }
            // A tool result, replayed as prompt mode fed it to the model.
            "tool" => {
                turns.push(ChatMessage {
                    role: Role::User,
                    content: format!("Tool result:\n{}", message.content),
                });
                index += 1;
            }
            _ => index += 1,
        }
    }
    turns.push(ChatMessage {
        role: Role::User,
        content: new_message.to_owned(),
    });
    let keep = max_messages.max(1);
    if turns.len() > keep {
        turns.drain(..turns.len() - keep);
    }
    let first_user = turns
        .iter()
        .position(|turn| turn.role == Role::User)
        .unwrap_or(0);
    turns.drain(..first_user);
    turns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str, backend: Option<&str>) -> ContextMessage {
        ContextMessage {
            content: content.to_owned(),
            role: role.to_owned(),
            backend: backend.map(str::to_owned),
            failed: false,
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
}
