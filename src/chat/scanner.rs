//! Finds prompt-mode tool calls — `{"tool": "server.tool", "arguments": {...}}` — in a model's
//! text as it streams, chunk by chunk.
//!
//! A small state machine: outside a candidate, text passes straight through; a `{` starts a
//! candidate that is held back while its JSON structure is tracked (nesting, strings, escapes,
//! so braces inside strings never count); when it closes it is parsed, and becomes a call if it
//! is an object with a string `tool` (or `name`) and an object `arguments` (or `parameters`,
//! `args`, or a string holding an object; absent means no arguments; the shape is
//! `backends::text_call`'s, shared with the echo backend). Anything else is text.
//! Inside `<think>…</think>` nothing is a call. Tags and candidates may be split across chunks
//! anywhere.
//!
//! Invariants: the concatenation of every `Text` and the raw text of every call is exactly the
//! input; a candidate is held back at most [`MAX_CANDIDATE_BYTES`], then released as text.
//! Tags need no holding back: text is emitted at once, and the last few characters seen are
//! kept so that a tag split across chunks (`"<thi"` + `"nk>"`) is still recognised.
//!
//! Simplifications, chosen to keep the machine one pass with one candidate at a time:
//! - a candidate that is not a call is released whole, so a call nested inside some other JSON
//!   object (`{"x": {"tool": …}}`) is not found;
//! - a stray `{` in prose that never closes (`I think { maybe {"tool": …}`) swallows what
//!   follows into its candidate, released as text at [`finish`](ToolCallScanner::finish) or at
//!   the bound, so a call after it is not found. Re-scanning the tail would find it, but at
//!   quadratic cost on adversarial input (`{{{{…`).

use serde_json::{Map, Value};

/// Most bytes of an unfinished candidate held back.
pub const MAX_CANDIDATE_BYTES: usize = 1024 * 1024;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// A tool call found in the model's text.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundCall {
    /// As written: `server.tool` or a bare `tool`.
    pub tool: String,
    /// The arguments (empty when absent).
    pub arguments: Map<String, Value>,
}

/// What the scanner says about the text it was given.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanEvent {
    /// Text that is not part of a call: pass it on as it comes.
    Text(String),
    Call(FoundCall),
}

#[derive(Debug, Default)]
pub struct ToolCallScanner {
    /// The candidate held back, from its `{`.
    candidate: String,
    depth: usize,
    in_string: bool,
    escaped: bool,
    in_think: bool,
    /// The last few characters seen outside candidates, to spot tags split across chunks.
    recent: String,
}

impl ToolCallScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk; returns the events it completes, in order.
    pub fn push(&mut self, chunk: &str) -> Vec<ScanEvent> {
        let mut events = Vec::new();
        let mut text = String::new();
        for c in chunk.chars() {
            if self.depth > 0 {
                self.push_candidate(c, &mut events);
                continue;
            }
            self.remember(c);
            if self.in_think {
                text.push(c);
                if self.recent.ends_with(THINK_CLOSE) {
                    self.in_think = false;
                }
            } else if c == '{' {
                flush_text(&mut text, &mut events);
                self.candidate.push(c);
                self.depth = 1;
            } else {
                text.push(c);
                if self.recent.ends_with(THINK_OPEN) {
                    self.in_think = true;
                }
            }
        }
        flush_text(&mut text, &mut events);
        events
    }

    /// The stream ended: an unfinished candidate is just text. The scanner is then as new.
    pub fn finish(&mut self) -> Vec<ScanEvent> {
        let held = std::mem::take(&mut self.candidate);
        *self = Self::default();
        if held.is_empty() {
            Vec::new()
        } else {
            vec![ScanEvent::Text(held)]
        }
    }

    fn push_candidate(&mut self, c: char, events: &mut Vec<ScanEvent>) {
        self.candidate.push(c);
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
            let held = std::mem::take(&mut self.candidate);
            self.reset_candidate();
            events.push(match parse_call(&held) {
                Some(call) => ScanEvent::Call(call),
                None => ScanEvent::Text(held),
            });
        } else if self.candidate.len() > MAX_CANDIDATE_BYTES {
            events.push(ScanEvent::Text(std::mem::take(&mut self.candidate)));
            self.reset_candidate();
        }
    }

    fn reset_candidate(&mut self) {
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    fn remember(&mut self, c: char) {
        self.recent.push(c);
        let excess = self
            .recent
            .chars()
            .count()
            .saturating_sub(THINK_CLOSE.len());
        if excess > 0 {
            let cut = self
                .recent
                .char_indices()
                .nth(excess)
                .map_or(self.recent.len(), |(i, _)| i);
            self.recent.drain(..cut);
        }
    }
}

fn flush_text(text: &mut String, events: &mut Vec<ScanEvent>) {
    if !text.is_empty() {
        events.push(ScanEvent::Text(std::mem::take(text)));
    }
}

/// The call a complete candidate is, if it is one.
fn parse_call(text: &str) -> Option<FoundCall> {
    crate::backends::text_call::parse(text).map(|(tool, arguments)| FoundCall { tool, arguments })
}

/// Scans a whole text at once.
pub fn scan(text: &str) -> Vec<ScanEvent> {
    let mut scanner = ToolCallScanner::new();
    let mut events = scanner.push(text);
    events.extend(scanner.finish());
    events
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Feeds `chunks`; checks that the events rebuild the input; returns the joined text and
    /// the calls.
    fn run(chunks: &[&str]) -> (String, Vec<FoundCall>) {
        let mut scanner = ToolCallScanner::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(scanner.push(chunk));
        }
        events.extend(scanner.finish());
        assert_rebuilds(&chunks.concat(), &events);
        let mut text = String::new();
        let mut calls = Vec::new();
        for event in events {
            match event {
                ScanEvent::Text(t) => text.push_str(&t),
                ScanEvent::Call(c) => calls.push(c),
            }
        }
        (text, calls)
    }

    /// The invariant: each `Text` is the input at that point, each call is the shortest `{…}`
    /// there that parses to it, and together they cover the input exactly once.
    fn assert_rebuilds(input: &str, events: &[ScanEvent]) {
        let mut at = 0;
        for event in events {
            let rest = &input[at..];
            at += match event {
                ScanEvent::Text(text) => {
                    assert!(
                        rest.starts_with(text.as_str()),
                        "{text:?} not at {at} of {input:?}"
                    );
                    text.len()
                }
                ScanEvent::Call(call) => rest
                    .char_indices()
                    .filter(|&(_, c)| c == '}')
                    .map(|(i, _)| i + 1)
                    .find(|&end| parse_call(&rest[..end]).as_ref() == Some(call))
                    .unwrap_or_else(|| panic!("{call:?} not at {at} of {input:?}")),
            };
        }
        assert_eq!(at, input.len(), "events cover only part of {input:?}");
    }

    fn call(tool: &str, arguments: Value) -> FoundCall {
        FoundCall {
            tool: tool.to_owned(),
            arguments: arguments.as_object().cloned().unwrap(),
        }
    }

    /// (input, text outside calls, calls)
    fn table() -> Vec<(&'static str, &'static str, Vec<FoundCall>)> {
        vec![
            ("just text", "just text", vec![]),
            (
                r#"{"tool": "a.b", "arguments": {"x": 1}}"#,
                "",
                vec![call("a.b", json!({"x": 1}))],
            ),
            (
                r#"Let me look. {"tool":"fs.read","arguments":{"path":"/tmp"}} Done."#,
                "Let me look.  Done.",
                vec![call("fs.read", json!({"path": "/tmp"}))],
            ),
            (
                r#"{"tool":"a.b","arguments":{"code":"fn x() { } }}{"}}"#,
                "",
                vec![call("a.b", json!({"code": "fn x() { } }}{"}))],
            ),
            (
                r#"{"tool":"a.b","arguments":{"q":"say \"{hi}\" \\"}}"#,
                "",
                vec![call("a.b", json!({"q": "say \"{hi}\" \\"}))],
            ),
            (
                r#"{"tool":"a.b","arguments":{"deep":{"er":{"est":[1,{"k":"}"}]}}}}"#,
                "",
                vec![call(
                    "a.b",
                    json!({"deep": {"er": {"est": [1, {"k": "}"}]}}}),
                )],
            ),
            (
                r#"{"name":"echo","parameters":{"m":"x"}}"#,
                "",
                vec![call("echo", json!({"m": "x"}))],
            ),
            (
                r#"{"tool":"a.b","arguments":"{\"n\": 2}"}"#,
                "",
                vec![call("a.b", json!({"n": 2}))],
            ),
            (r#"{"tool":"a.b"}"#, "", vec![call("a.b", json!({}))]),
            ("{not json} ok", "{not json} ok", vec![]),
            (r#"{"a": 1}"#, r#"{"a": 1}"#, vec![]),
            (
                r#"<think>maybe {"tool":"x.y","arguments":{}}</think>{"tool":"a.b","arguments":{}}"#,
                r#"<think>maybe {"tool":"x.y","arguments":{}}</think>"#,
                vec![call("a.b", json!({}))],
            ),
            (
                "```json\n{\"tool\": \"a.b\", \"arguments\": {}}\n```",
                "```json\n\n```",
                vec![call("a.b", json!({}))],
            ),
            (
                r#"{"tool":"a.b","arguments":{}}{"tool":"c.d","arguments":{"e":[]}}"#,
                "",
                vec![call("a.b", json!({})), call("c.d", json!({"e": []}))],
            ),
            ("unclosed { here", "unclosed { here", vec![]),
            (
                r#"{"tool":"a.b","arguments":{"u":"\u007b\u00e9\ud83d\ude00"}}"#,
                "",
                vec![call("a.b", json!({"u": "{é😀"}))],
            ),
            // Simplification: a call nested in a rejected object is released with it, as text.
            (
                r#"{"x": {"tool": "a.b", "arguments": {}}}"#,
                r#"{"x": {"tool": "a.b", "arguments": {}}}"#,
                vec![],
            ),
            // Simplification: a stray `{` that never closes holds the rest, a call too, as text.
            (
                r#"I think { maybe {"tool":"a.b","arguments":{}}"#,
                r#"I think { maybe {"tool":"a.b","arguments":{}}"#,
                vec![],
            ),
            // A stray `{` that does close costs nothing: the call after it is found.
            (
                r#"a {b} c {"tool":"a.b"}"#,
                "a {b} c ",
                vec![call("a.b", json!({}))],
            ),
            (
                r#"<think>never closed {"tool":"a.b"}"#,
                r#"<think>never closed {"tool":"a.b"}"#,
                vec![],
            ),
            (
                r#"<thin {"tool":"a.b"} </think> <think/>"#,
                "<thin  </think> <think/>",
                vec![call("a.b", json!({}))],
            ),
            (
                "ünïcödé {\"tool\":\"é.ü\"} ✓",
                "ünïcödé  ✓",
                vec![call("é.ü", json!({}))],
            ),
        ]
    }

    #[test]
    fn the_table_holds_in_one_chunk_in_two_and_char_by_char() {
        for (input, expected_text, expected_calls) in table() {
            let whole = run(&[input]);
            assert_eq!(whole.0, expected_text, "text of {input:?}");
            assert_eq!(whole.1, expected_calls, "calls of {input:?}");
            let boundaries: Vec<usize> = input.char_indices().map(|(i, _)| i).collect();
            for &split in &boundaries {
                let (a, b) = input.split_at(split);
                assert_eq!(run(&[a, b]), whole, "{input:?} split at {split}");
            }
            let chars: Vec<String> = input.chars().map(String::from).collect();
            let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
            assert_eq!(run(&pieces), whole, "{input:?} char by char");
        }
    }

    #[test]
    fn a_candidate_that_never_closes_is_released_at_the_bound() {
        let mut scanner = ToolCallScanner::new();
        let mut released = 0;
        let opening = format!("{{\"tool\": \"{}", "x".repeat(1000));
        released += text_len(&scanner.push(&opening));
        for _ in 0..=MAX_CANDIDATE_BYTES / 1000 {
            released += text_len(&scanner.push(&"y".repeat(1000)));
        }
        assert!(released > MAX_CANDIDATE_BYTES, "released {released}");
        assert!(scanner.candidate.len() < 2000);
        // Past the bound the scanner is back outside any candidate: a later call is found.
        let rest = scanner.push("y\"}} then {\"tool\":\"a.b\"}");
        assert_eq!(rest.last(), Some(&ScanEvent::Call(call("a.b", json!({})))));
    }

    fn text_len(events: &[ScanEvent]) -> usize {
        events
            .iter()
            .map(|e| match e {
                ScanEvent::Text(t) => t.len(),
                ScanEvent::Call(_) => 0,
            })
            .sum()
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z{}\"\\\\ é✓<>\u{1}\n\u{1F600}]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z{}\"]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_valid_call_split_anywhere_is_found_exactly_once(
            tool in "[a-z]{1,8}\\.[a-z_]{1,8}",
            arguments in prop::collection::btree_map("[a-z{}\"]{1,6}", json_value(), 0..4),
            prefix in "[^{<]{0,30}",
            suffix in "[^{<]{0,30}",
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let arguments: Map<String, Value> = arguments.into_iter().collect();
            let raw = serde_json::to_string(&json!({"tool": tool, "arguments": arguments})).unwrap();
            let input = format!("{prefix}{raw}{suffix}");
            let boundaries: Vec<usize> = input.char_indices().map(|(i, _)| i).collect();
            let mut points: Vec<usize> = cuts.iter().map(|c| boundaries[c.index(boundaries.len())]).collect();
            points.sort_unstable();
            points.dedup();
            let mut chunks = Vec::new();
            let mut start = 0;
            for point in points {
                chunks.push(&input[start..point]);
                start = point;
            }
            chunks.push(&input[start..]);
            let (text, calls) = run(&chunks);
            prop_assert_eq!(calls, vec![FoundCall { tool, arguments }]);
            prop_assert_eq!(text, format!("{prefix}{suffix}"));
        }
    }
}
