//! What a tool call written as JSON text looks like: an object with a string `tool` (or
//! `name`) and its arguments as an object in `arguments` (or `parameters`, `args`), or as a
//! string holding an object; absent means none. Models write calls this way in prompt mode
//! (`chat::scanner` finds them in their text), and the `echo` backend answers a user message
//! of this shape with a native call: one definition keeps the two in step.

use serde_json::{Map, Value};

/// The tool's name as written and its arguments, if `text` is exactly such an object.
pub fn parse(text: &str) -> Option<(String, Map<String, Value>)> {
    let Value::Object(mut object) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let tool = match object.remove("tool").or_else(|| object.remove("name"))? {
        Value::String(tool) if !tool.trim().is_empty() => tool,
        _ => return None,
    };
    let arguments = ["arguments", "parameters", "args"]
        .iter()
        .find_map(|key| object.remove(*key));
    let arguments = match arguments {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        // Some models send the arguments as a JSON string, as OpenAI's wire format does.
        Some(Value::String(text)) => match serde_json::from_str(&text).ok()? {
            Value::Object(map) => map,
            _ => return None,
        },
        Some(_) => return None,
    };
    Some((tool, arguments))
}
