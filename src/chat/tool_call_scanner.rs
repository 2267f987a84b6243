//! Finds prompt-mode tool calls (`{"tool": "server.tool", "arguments": {...}}`) in a model's
//! streamed text. (Minimal version.)

use serde_json::{Map, Value};

const MAX_CANDIDATE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct FoundCall {
    pub tool: String,
    pub arguments: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScanEvent {
    Text(String),
    Call(FoundCall),
}

#[derive(Debug, Default)]
pub struct ToolCallScanner {
    held: String,
    depth: usize,
    in_string: bool,
    escaped: bool,
    in_think: bool,
}

impl ToolCallScanner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &str) -> Vec<ScanEvent> {
        let mut events = Vec::new();
        let mut text = String::new();
        for c in chunk.chars() {
            if self.depth == 0 {
                text.push(c);
                if self.in_think {
                    if text.ends_with("</think>") {
                        self.in_think = false;
                    }
                    continue;
                }
                if text.ends_with("<think>") {
                    self.in_think = true;
                    continue;
                }
                if c == '{' {
                    text.pop();
                    if !text.is_empty() {
                        events.push(ScanEvent::Text(std::mem::take(&mut text)));
                    }
                    self.held.push(c);
                    self.depth = 1;
                }
                continue;
            }
            self.held.push(c);
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' {
                    self.escaped = true;
                } else if c == '"' {
                    self.in_string = false;
                }
            } else {
                match c {
                    '"' => self.in_string = true,
                    '{' => self.depth += 1,
                    '}' => self.depth -= 1,
                    _ => {}
                }
            }
            if self.depth == 0 {
                let held = std::mem::take(&mut self.held);
                events.push(match parse_call(&held) {
                    Some(call) => ScanEvent::Call(call),
                    None => ScanEvent::Text(held),
                });
            } else if self.held.len() > MAX_CANDIDATE_BYTES {
                events.push(ScanEvent::Text(std::mem::take(&mut self.held)));
                self.reset();
            }
        }
        if !text.is_empty() {
            events.push(ScanEvent::Text(text));
        }
        events
    }

    pub fn finish(&mut self) -> Vec<ScanEvent> {
        let held = std::mem::take(&mut self.held);
        self.reset();
        if held.is_empty() {
            Vec::new()
        } else {
            vec![ScanEvent::Text(held)]
        }
    }

    fn reset(&mut self) {
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }
}

fn parse_call(text: &str) -> Option<FoundCall> {
    let Value::Object(mut object) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let tool = match object.remove("tool").or_else(|| object.remove("name"))? {
        Value::String(tool) if !tool.is_empty() => tool,
        _ => return None,
    };
    let arguments = ["arguments", "parameters", "args"]
        .iter()
        .find_map(|key| object.remove(*key));
    let arguments = match arguments {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(Value::String(text)) => match serde_json::from_str(&text).ok()? {
            Value::Object(map) => map,
            _ => return None,
        },
        Some(_) => return None,
    };
    Some(FoundCall { tool, arguments })
}

pub fn scan(text: &str) -> Vec<ScanEvent> {
    let mut scanner = ToolCallScanner::new();
    let mut events = scanner.push(text);
    events.extend(scanner.finish());
    events
}
