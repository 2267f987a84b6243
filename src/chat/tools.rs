//! The tool loop in prompt mode (works with any model, `echo` included): the system prompt lists
//! the MCP tools as JSON and asks for `{"tool": "server.tool", "arguments": {...}}`; each answer
//! is scanned for such calls, the tools run, their results go back to the model, and so on until
//! the model answers without a call or the round limit is reached.
//!
//! Invariants: a tool's failure (unknown tool, error result, timeout, dead server) becomes an error
//! result fed back to the model and never fails the request; every step is stored in the session
//! in order — the assistant's answer holding the call(s), then one `tool` message per call.

use std::time::Instant;

use serde_json::{Map, Value, json};

use super::tool_call_scanner::{FoundCall, ScanEvent, scan};
use super::{ChatError, ChatService, Turn, reply_metadata};
use crate::backends::{BackendError, ChatMessage, Role};
use crate::mcp::hub::CatalogTool;
use crate::store::{Message, NewMessage};

/// Rounds of tool calls allowed when the request does not say.
pub const DEFAULT_MAX_ITERATIONS: u32 = 20;
/// Most rounds a request may ask for.
pub const MAX_ITERATIONS_LIMIT: u32 = 100;
/// Most text of one tool result sent back to the model (the whole result is stored).
const MAX_RESULT_CHARS_TO_MODEL: usize = 32 * 1024;

/// One tool call found and resolved to a server.
#[derive(Debug, Clone)]
pub struct ResolvedCall {
    pub server: String,
    pub tool: String,
    pub arguments: Map<String, Value>,
}

/// One executed call, for the stream's events.
#[derive(Debug, Clone)]
pub struct ToolStep {
    /// `None` when the call named no known tool.
    pub server: Option<String>,
    pub tool: String,
    pub arguments: Map<String, Value>,
    pub outcome: ToolOutcome,
}

/// A tool's outcome as the model and the session see it.
#[derive(Debug, Clone)]
pub struct ToolOutcome {
    pub text: String,
    pub is_error: bool,
    pub duration_ms: u64,
}

/// The system prompt that teaches a model the calling protocol, listing `tools`.
pub fn tools_prompt(tools: &[CatalogTool]) -> String {
    let listed: Vec<Value> = tools
        .iter()
        .map(|tool| {
            json!({
                "name": format!("{}.{}", tool.server, tool.name),
                "description": tool.description,
                "parameters": tool.parameters,
            })
        })
        .collect();
    format!(
        "You can use tools. To call one, answer with a JSON object and nothing else:\n\
         {{\"tool\": \"server.tool\", \"arguments\": {{...}}}}\n\
         You then receive the tool's result and may call another tool or answer the user.\n\
         Answer normally, without JSON, when no tool is needed.\n\
         Available tools:\n{}",
        serde_json::to_string_pretty(&listed).unwrap_or_else(|_| "[]".to_owned())
    )
}

/// Finds which server a call means: `server.tool`, or a bare `tool` that exactly one server has.
pub fn resolve(call: &FoundCall, tools: &[CatalogTool]) -> Result<ResolvedCall, String> {
    let resolved = |server: &str, tool: &str| ResolvedCall {
        server: server.to_owned(),
        tool: tool.to_owned(),
        arguments: call.arguments.clone(),
    };
    // Server names never hold a dot: the first one separates server from tool.
    if let Some((server, tool)) = call.tool.split_once('.')
        && tools.iter().any(|t| t.server == server && t.name == tool)
    {
        return Ok(resolved(server, tool));
    }
    let candidates: Vec<&CatalogTool> = tools.iter().filter(|t| t.name == call.tool).collect();
    match candidates.as_slice() {
        [one] => Ok(resolved(&one.server, &one.name)),
        [] => Err(format!(
            "unknown tool {:?}; available: {}",
            call.tool,
            tools
                .iter()
                .map(|t| format!("{}.{}", t.server, t.name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        several => Err(format!(
            "tool {:?} exists on several servers; name one of: {}",
            call.tool,
            several
                .iter()
                .map(|t| format!("{}.{}", t.server, t.name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Most calls run from one answer; a model that writes more gets told.
pub const MAX_CALLS_PER_ANSWER: usize = 16;

/// Keeps the first [`MAX_CALLS_PER_ANSWER`] calls; returns how many were dropped.
pub fn limit_calls(calls: &mut Vec<FoundCall>) -> usize {
    let skipped = calls.len().saturating_sub(MAX_CALLS_PER_ANSWER);
    calls.truncate(MAX_CALLS_PER_ANSWER);
    skipped
}

/// Tells the model, after the results, that some of its calls were not run.
pub(crate) fn note_skipped(turn: &mut Turn, skipped: usize) {
    if skipped > 0 {
        turn.request.messages.push(ChatMessage {
            role: Role::User,
            content: format!(
                "Only the first {MAX_CALLS_PER_ANSWER} tool calls of an answer are run; \
                 {skipped} more were skipped."
            ),
        });
    }
}

/// What the model reads back after its call.
fn result_for_model(name: &str, outcome: &ToolOutcome) -> String {
    let mut text: String = outcome
        .text
        .chars()
        .take(MAX_RESULT_CHARS_TO_MODEL)
        .collect();
    if text.len() < outcome.text.len() {
        text.push_str("\n[result truncated]");
    }
    if outcome.is_error {
        format!("Tool {name} failed:\n{text}")
    } else {
        format!("Result of tool {name}:\n{text}")
    }
}

impl ChatService {
    /// Whether a message to `turn` runs the tool loop, and with which tools.
    pub(crate) fn tools_for(&self, use_tools: Option<bool>) -> Vec<CatalogTool> {
        if use_tools == Some(false) {
            return Vec::new();
        }
        self.mcp.catalog()
    }

    /// Adds the calling protocol and the tool list to `turn`'s system prompt.
    pub(crate) fn teach_tools(turn: &mut Turn, tools: &[CatalogTool]) {
        let prompt = tools_prompt(tools);
        turn.request.system = Some(match turn.request.system.take() {
            Some(system) => format!("{system}\n\n{prompt}"),
            None => prompt,
        });
    }

    /// Runs the prompt-mode loop for `turn` and returns the final answer, stored.
    pub(crate) async fn answer_with_tools(
        &self,
        turn: &mut Turn,
        tools: &[CatalogTool],
        max_iterations: u32,
    ) -> Result<Message, BackendError> {
        Self::teach_tools(turn, tools);
        let mut round = 0;
        loop {
            let started = Instant::now();
            let reply = turn.backend.chat(turn.request.clone()).await?;
            let calls: Vec<FoundCall> = scan(&reply.content)
                .into_iter()
                .filter_map(|event| match event {
                    ScanEvent::Call(call) => Some(call),
                    ScanEvent::Text(_) => None,
                })
                .collect();
            let mut metadata = reply_metadata(started, &reply.usage, &reply.finish_reason);
            if calls.is_empty() || round >= max_iterations {
                if !calls.is_empty() {
                    metadata.insert("max_tool_iterations_reached".to_owned(), json!(true));
                }
                if round > 0 {
                    metadata.insert("tool_iterations".to_owned(), json!(round));
                }
                return self
                    .store_answer(turn, &reply.content, &reply.model, metadata)
                    .await
                    .map_err(|err| stored_error(turn, &err));
            }
            round += 1;
            let mut calls = calls;
            let skipped = limit_calls(&mut calls);
            self.store_call_answer(turn, &reply.content, &reply.model, metadata, &calls)
                .await?;
            for call in &calls {
                self.tool_step(turn, call, tools).await?;
            }
            note_skipped(turn, skipped);
        }
    }

    /// Stores an answer that holds tool calls and adds it to the conversation.
    pub(crate) async fn store_call_answer(
        &self,
        turn: &mut Turn,
        content: &str,
        model: &str,
        mut metadata: Map<String, Value>,
        calls: &[FoundCall],
    ) -> Result<(), BackendError> {
        metadata.insert(
            "tool_calls".to_owned(),
            json!(
                calls
                    .iter()
                    .map(|c| json!({"tool": c.tool, "arguments": c.arguments}))
                    .collect::<Vec<_>>()
            ),
        );
        self.store_answer(turn, content, model, metadata)
            .await
            .map_err(|err| stored_error(turn, &err))?;
        turn.request.messages.push(ChatMessage {
            role: Role::Assistant,
            content: content.to_owned(),
        });
        Ok(())
    }

    /// Runs one call (an unresolvable one becomes an error result), stores the result and adds
    /// it to the conversation.
    pub(crate) async fn tool_step(
        &self,
        turn: &mut Turn,
        call: &FoundCall,
        tools: &[CatalogTool],
    ) -> Result<ToolStep, BackendError> {
        let (name, outcome, server, tool) = match resolve(call, tools) {
            Ok(target) => {
                let outcome = self.run_tool(&target).await;
                let name = format!("{}.{}", target.server, target.tool);
                (name, outcome, Some(target.server), target.tool)
            }
            Err(problem) => (
                call.tool.clone(),
                ToolOutcome {
                    text: problem,
                    is_error: true,
                    duration_ms: 0,
                },
                None,
                call.tool.clone(),
            ),
        };
        self.store_tool_result(turn, call, server.clone(), &tool, &outcome)
            .await
            .map_err(|err| stored_error(turn, &err))?;
        turn.request.messages.push(ChatMessage {
            role: Role::User,
            content: result_for_model(&name, &outcome),
        });
        Ok(ToolStep {
            server,
            tool,
            arguments: call.arguments.clone(),
            outcome,
        })
    }

    /// Calls the tool; every failure is an error result.
    pub(crate) async fn run_tool(&self, call: &ResolvedCall) -> ToolOutcome {
        let started = Instant::now();
        let result = self
            .mcp
            .call_tool(&call.server, &call.tool, Some(call.arguments.clone()))
            .await;
        let duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(result) => {
                let texts: Vec<String> = result
                    .content
                    .iter()
                    .map(|content| match content.as_text() {
                        Some(text) => text.text.clone(),
                        None => serde_json::to_string(content).unwrap_or_default(),
                    })
                    .collect();
                let mut text = texts.join("\n");
                if text.is_empty()
                    && let Some(structured) = &result.structured_content
                {
                    text = structured.to_string();
                }
                ToolOutcome {
                    text,
                    is_error: result.is_error == Some(true),
                    duration_ms,
                }
            }
            Err(err) => ToolOutcome {
                text: err.to_string(),
                is_error: true,
                duration_ms,
            },
        }
    }

    async fn store_tool_result(
        &self,
        turn: &Turn,
        call: &FoundCall,
        server: Option<String>,
        tool: &str,
        outcome: &ToolOutcome,
    ) -> Result<Message, crate::store::StoreError> {
        let metadata = Map::from_iter([
            ("server".to_owned(), json!(server)),
            ("tool".to_owned(), json!(tool)),
            (
                "arguments".to_owned(),
                Value::Object(call.arguments.clone()),
            ),
            ("duration_ms".to_owned(), json!(outcome.duration_ms)),
            ("is_error".to_owned(), json!(outcome.is_error)),
        ]);
        self.store
            .append_message(
                &turn.session_id,
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

fn stored_error(turn: &Turn, err: &crate::store::StoreError) -> BackendError {
    BackendError::Failed {
        backend: turn.backend_name.clone(),
        message: format!("a step could not be stored: {err}"),
    }
}

/// The request's round limit, within bounds.
pub fn max_iterations(requested: Option<u32>) -> Result<u32, ChatError> {
    match requested {
        None => Ok(DEFAULT_MAX_ITERATIONS),
        Some(n) if n <= MAX_ITERATIONS_LIMIT => Ok(n),
        Some(n) => Err(ChatError::InvalidValue(format!(
            "max_tool_iterations must be at most {MAX_ITERATIONS_LIMIT}, got {n}"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tool(server: &str, name: &str) -> CatalogTool {
        CatalogTool {
            name: name.to_owned(),
            description: String::new(),
            server: server.to_owned(),
            parameters: json!({"type": "object"}),
        }
    }

    fn call(name: &str) -> FoundCall {
        FoundCall {
            tool: name.to_owned(),
            arguments: Map::new(),
        }
    }

    #[test]
    fn calls_resolve_by_full_name_or_by_a_name_only_one_server_has() {
        let tools = [
            tool("fs", "read"),
            tool("web", "read"),
            tool("web", "fetch.v2"),
        ];
        let full = resolve(&call("web.read"), &tools).unwrap();
        assert_eq!((full.server.as_str(), full.tool.as_str()), ("web", "read"));
        // The first dot splits, so tool names may hold dots.
        let dotted = resolve(&call("web.fetch.v2"), &tools).unwrap();
        assert_eq!(dotted.tool, "fetch.v2");
        let bare = resolve(&call("fetch.v2"), &tools).unwrap();
        assert_eq!(bare.server, "web");
        let ambiguous = resolve(&call("read"), &tools).unwrap_err();
        assert!(ambiguous.contains("fs.read") && ambiguous.contains("web.read"));
        let unknown = resolve(&call("nope.read"), &tools).unwrap_err();
        assert!(unknown.starts_with("unknown tool"), "{unknown}");
    }

    #[test]
    fn one_answer_runs_at_most_the_limit_of_calls() {
        let mut calls: Vec<FoundCall> = (0..20).map(|i| call(&format!("t{i}"))).collect();
        assert_eq!(limit_calls(&mut calls), 4);
        assert_eq!(calls.len(), MAX_CALLS_PER_ANSWER);
        assert_eq!(calls[0].tool, "t0");
    }

    #[test]
    fn long_results_are_cut_for_the_model_only() {
        let outcome = ToolOutcome {
            text: "x".repeat(MAX_RESULT_CHARS_TO_MODEL + 10),
            is_error: false,
            duration_ms: 1,
        };
        let text = result_for_model("a.b", &outcome);
        assert!(text.ends_with("[result truncated]"));
        assert!(text.len() < outcome.text.len() + 40);
    }
}
