//! Reading a chat request's messages, and the small pieces every wire format's answers share.

use serde_json::Value;

/// A message's text: a plain string, or the text blocks of a content array joined.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|block| block["type"] == "text")
            .filter_map(|block| block["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

pub(super) fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .map(|message| content_text(&message["content"]))
        .unwrap_or_default()
}

pub(super) fn all_message_text(body: &Value) -> String {
    let messages = body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let texts: Vec<String> = messages
        .iter()
        .map(|m| content_text(&m["content"]))
        .collect();
    texts.join(" ")
}

pub(super) fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

pub(super) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(super) fn now_rfc3339() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// `text` cut every `size` characters, as providers stream arguments.
pub(super) fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size)
        .map(|piece| piece.iter().collect())
        .collect()
}

/// A tool name the providers take: letters, digits, `_` and `-`, at most `max` of them.
pub(super) fn is_valid_tool_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
