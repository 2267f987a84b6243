//! What a chat request the fake recorded says about a tool call and its result.

use serde_json::Value;

use super::{Recorded, Wire};

/// The call `call_id` and its result as `request` carries them: (name, arguments, result text,
/// is_error when the wire says). Panics when the call is missing or its result does not follow it.
pub fn call_and_result(
    wire: Wire,
    request: &Recorded,
    call_id: &str,
) -> (String, Value, String, Option<bool>) {
    let messages = request.body["messages"].as_array().unwrap();
    match wire {
        Wire::OpenAi | Wire::Ollama => {
            let (at, call) = messages
                .iter()
                .enumerate()
                .find_map(|(at, m)| {
                    let calls = m["tool_calls"].as_array()?;
                    calls
                        .iter()
                        .find(|c| wire == Wire::Ollama || c["id"] == call_id)
                        .map(|c| (at, c.clone()))
                })
                .unwrap_or_else(|| panic!("no assistant tool call in {messages:?}"));
            assert_eq!(messages[at]["role"], "assistant");
            let arguments = match wire {
                // OpenAI carries arguments as a JSON string, Ollama as an object.
                Wire::OpenAi => {
                    serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap()
                }
                _ => call["function"]["arguments"].clone(),
            };
            let result = &messages[at + 1];
            assert_eq!(
                result["role"], "tool",
                "the result follows its call: {messages:?}"
            );
            if wire == Wire::OpenAi {
                assert_eq!(result["tool_call_id"], call_id);
            } else {
                assert_eq!(result["tool_name"], call["function"]["name"]);
            }
            (
                call["function"]["name"].as_str().unwrap().to_owned(),
                arguments,
                result["content"].as_str().unwrap().to_owned(),
                None,
            )
        }
        Wire::Anthropic => {
            let (at, block) = messages
                .iter()
                .enumerate()
                .find_map(|(at, m)| {
                    let blocks = m["content"].as_array()?;
                    blocks
                        .iter()
                        .find(|b| b["type"] == "tool_use" && b["id"] == call_id)
                        .map(|b| (at, b.clone()))
                })
                .unwrap_or_else(|| panic!("no tool_use block in {messages:?}"));
            assert_eq!(messages[at]["role"], "assistant");
            let next = &messages[at + 1];
            assert_eq!(next["role"], "user");
            let result = next["content"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["type"] == "tool_result" && b["tool_use_id"] == call_id)
                .unwrap_or_else(|| panic!("no tool_result in {next}"))
                .clone();
            let text = match &result["content"] {
                Value::String(text) => text.clone(),
                blocks => blocks[0]["text"].as_str().unwrap().to_owned(),
            };
            (
                block["name"].as_str().unwrap().to_owned(),
                block["input"].clone(),
                text,
                result["is_error"].as_bool(),
            )
        }
    }
}
