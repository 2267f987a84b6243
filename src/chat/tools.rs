//! Which tools a turn may call and how, and running one call. Two protocols:
//! - **native**: the tools are sent in the provider's own `tools` field as `server__tool` (see
//!   [`crate::mcp::tool_names`]) and the model answers with the provider's tool calls;
//! - **prompt** (any model, `echo` included): the system prompt lists the tools as JSON and asks
//!   for `{"tool": "server.tool", "arguments": {...}}`, which is scanned for in the answer's text.
//!
//! Invariant: a tool's failure (unknown tool, bad arguments, error result, timeout, dead server)
//! becomes an error result fed back to the model and never fails the request.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::context;
use super::scanner::{FoundCall, ScanEvent, scan};
use super::{ChatError, ChatService, Turn};
use crate::backends::{BackendError, ChatReply, ToolCall, ToolSpec};
use crate::config::backends::ToolMode;
use crate::mcp::hub::CatalogTool;
use crate::mcp::tool_names::ToolNames;

/// Rounds of tool calls allowed when the request does not say.
pub const DEFAULT_MAX_ITERATIONS: u32 = 20;
/// Most rounds a request may ask for.
pub const MAX_ITERATIONS_LIMIT: u32 = 100;

/// How a turn's model calls tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Native,
    Prompt,
}

/// The tools a turn may call, how, and for how many rounds.
#[derive(Debug, Clone)]
pub struct ToolSetup {
    pub tools: Vec<CatalogTool>,
    pub names: ToolNames,
    pub protocol: Protocol,
    pub max_rounds: u32,
    /// `tool_mode: auto`: a native request the model refuses may fall back to prompt mode.
    pub may_fall_back: bool,
}

impl ToolSetup {
    /// No tools (broadcasts, `use_tools: false`, an empty catalog).
    pub fn none() -> Self {
        Self {
            tools: Vec::new(),
            names: ToolNames::default(),
            protocol: Protocol::Prompt,
            max_rounds: 0,
            may_fall_back: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Whether answers must be scanned for prompt-protocol calls.
    pub fn scans_text(&self) -> bool {
        !self.is_empty() && self.protocol == Protocol::Prompt
    }
}

/// (backend, model) pairs whose server refused native tools: prompt mode from then on.
#[derive(Debug, Clone, Default)]
pub struct PromptOnly(Arc<Mutex<HashSet<(String, String)>>>);

impl PromptOnly {
    fn contains(&self, backend: &str, model: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(backend.to_owned(), model.to_owned()))
    }

    fn insert(&self, backend: &str, model: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((backend.to_owned(), model.to_owned()));
    }
}

/// One tool call resolved to a server.
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
    pub arguments: Value,
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

/// The tools as sent natively: exposed names, descriptions, schemas passed through.
pub fn tool_specs(setup: &ToolSetup) -> Vec<ToolSpec> {
    setup
        .tools
        .iter()
        .enumerate()
        .map(|(position, tool)| ToolSpec {
            name: setup.names.name(position).unwrap_or_default().to_owned(),
            description: tool.description.clone(),
            parameters: tool.parameters.clone(),
        })
        .collect()
}

/// Finds which tool a call means: its exposed name (`server__tool`), `server.tool`, or a bare
/// `tool` that exactly one server has; and checks its arguments are an object.
pub fn resolve(call: &ToolCall, setup: &ToolSetup) -> Result<ResolvedCall, String> {
    let tools = &setup.tools;
    let target = if let Some(position) = setup.names.find(&call.name) {
        &tools[position]
    } else if let Some((server, tool)) = call.name.split_once('.')
        // Server names never hold a dot: the first one separates server from tool.
        && let Some(found) = tools.iter().find(|t| t.server == server && t.name == tool)
    {
        found
    } else {
        let candidates: Vec<&CatalogTool> = tools.iter().filter(|t| t.name == call.name).collect();
        match candidates.as_slice() {
            [one] => *one,
            [] => {
                return Err(format!(
                    "unknown tool \"{}\"; available: {}",
                    call.name,
                    listing(setup, tools.iter())
                ));
            }
            several => {
                return Err(format!(
                    "tool \"{}\" exists on several servers; name one of: {}",
                    call.name,
                    listing(setup, several.iter().copied())
                ));
            }
        }
    };
    let arguments = match &call.arguments {
        Value::Object(arguments) => arguments.clone(),
        Value::Null => Map::new(),
        Value::String(raw) => {
            return Err(format!(
                "the arguments of {} are not valid JSON: {raw}",
                call.name
            ));
        }
        other => {
            return Err(format!(
                "the arguments of {} must be a JSON object, not {other}",
                call.name
            ));
        }
    };
    Ok(ResolvedCall {
        server: target.server.clone(),
        tool: target.name.clone(),
        arguments,
    })
}

/// Tool names the way the model was taught them.
fn listing<'a>(setup: &ToolSetup, tools: impl Iterator<Item = &'a CatalogTool>) -> String {
    tools
        .map(|tool| match setup.protocol {
            Protocol::Native => {
                let position = setup
                    .tools
                    .iter()
                    .position(|t| t.server == tool.server && t.name == tool.name);
                position
                    .and_then(|p| setup.names.name(p))
                    .unwrap_or_default()
                    .to_owned()
            }
            Protocol::Prompt => format!("{}.{}", tool.server, tool.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A prompt-protocol call found in text, as a call with an id of its own.
pub fn from_text(found: FoundCall) -> ToolCall {
    ToolCall {
        id: crate::backends::new_call_id(),
        name: found.tool,
        arguments: Value::Object(found.arguments),
    }
}

/// The calls of a complete answer, by the turn's protocol.
pub(crate) fn calls_of(reply: &ChatReply, setup: &ToolSetup) -> Vec<ToolCall> {
    let mut calls = reply.tool_calls.clone();
    if setup.scans_text() {
        calls.extend(
            scan(&reply.content)
                .into_iter()
                .filter_map(|event| match event {
                    ScanEvent::Call(call) => Some(from_text(call)),
                    ScanEvent::Text(_) => None,
                }),
        );
    }
    calls
}

/// Whether a server's refusal of a native request means the model cannot use tools: Ollama
/// ("does not support tools"), vLLM ("auto tool choice requires --enable-auto-tool-choice"),
/// llama.cpp ("tools param requires --jinja flag").
pub fn refuses_tools(err: &BackendError) -> bool {
    matches!(
        err,
        BackendError::Upstream { status: 400 | 422 | 501, message, .. }
            if message.to_lowercase().contains("tool")
    )
}

impl ChatService {
    /// The tools `turn` may call and how, as the backend's `tool_mode` and the request say.
    pub(crate) fn tool_setup(
        &self,
        turn: &Turn,
        use_tools: Option<bool>,
        max_rounds: u32,
    ) -> ToolSetup {
        if use_tools == Some(false) {
            return ToolSetup::none();
        }
        let tools = self.mcp.catalog();
        if tools.is_empty() {
            return ToolSetup::none();
        }
        let (native_possible, mode) = match self.backends.get(&turn.backend_name) {
            Some(entry) => (entry.config.supports_native_tools(), entry.config.tool_mode),
            None => (false, ToolMode::Prompt),
        };
        let protocol = match mode {
            ToolMode::Native if native_possible => Protocol::Native,
            ToolMode::Auto
                if native_possible
                    && !self
                        .prompt_only
                        .contains(&turn.backend_name, &turn.request.model) =>
            {
                Protocol::Native
            }
            _ => Protocol::Prompt,
        };
        ToolSetup {
            names: ToolNames::new(&tools),
            tools,
            protocol,
            max_rounds,
            may_fall_back: mode == ToolMode::Auto,
        }
    }

    /// Shapes `turn`'s request for `setup`: native tools in the request, or the prompt
    /// protocol in the system prompt; the history's tool steps as the protocol can carry them.
    pub(crate) fn prepare_tools(turn: &mut Turn, setup: &ToolSetup) {
        turn.request.tools.clear();
        if setup.is_empty() || setup.protocol == Protocol::Prompt {
            context::flatten_tool_messages(&mut turn.request.messages);
        }
        if setup.is_empty() {
            return;
        }
        match setup.protocol {
            Protocol::Native => turn.request.tools = tool_specs(setup),
            Protocol::Prompt => {
                let prompt = tools_prompt(&setup.tools);
                turn.request.system = Some(match turn.request.system.take() {
                    Some(system) => format!("{system}\n\n{prompt}"),
                    None => prompt,
                });
            }
        }
    }

    /// After `err` on `turn`'s first native request: whether to retry in prompt mode (and
    /// `setup` and the request are switched over). The backend and model are remembered.
    pub(crate) fn fall_back_to_prompt(
        &self,
        turn: &mut Turn,
        setup: &mut ToolSetup,
        err: &BackendError,
    ) -> bool {
        if !(setup.may_fall_back && setup.protocol == Protocol::Native && refuses_tools(err)) {
            return false;
        }
        tracing::warn!(
            backend = %turn.backend_name,
            model = %turn.request.model,
            %err,
            "the model refused native tools; using the prompt protocol from now on"
        );
        self.prompt_only
            .insert(&turn.backend_name, &turn.request.model);
        setup.protocol = Protocol::Prompt;
        Self::prepare_tools(turn, setup);
        true
    }

    /// Runs one call; an unresolvable one becomes an error result. Nothing is stored, so
    /// dropping this future (the client left) cancels the call and leaves no trace.
    pub(crate) async fn run_call(&self, call: &ToolCall, setup: &ToolSetup) -> ToolStep {
        let (outcome, server, tool) = match resolve(call, setup) {
            Ok(target) => {
                let outcome = self.run_tool(&target).await;
                (outcome, Some(target.server), target.tool)
            }
            Err(problem) => (
                ToolOutcome {
                    text: problem,
                    is_error: true,
                    duration_ms: 0,
                },
                None,
                call.name.clone(),
            ),
        };
        ToolStep {
            server,
            tool,
            arguments: call.arguments.clone(),
            outcome,
        }
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
}

/// The server and tool a call names, as its events and stored result show them: `None` and the
/// name the model wrote when no server has the tool.
pub(crate) fn target_names(call: &ToolCall, setup: &ToolSetup) -> (Option<String>, String) {
    match resolve(call, setup) {
        Ok(target) => (Some(target.server), target.tool),
        Err(_) => (None, call.name.clone()),
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

    fn setup(tools: Vec<CatalogTool>, protocol: Protocol) -> ToolSetup {
        ToolSetup {
            names: ToolNames::new(&tools),
            tools,
            protocol,
            max_rounds: 20,
            may_fall_back: false,
        }
    }

    fn call(name: &str) -> ToolCall {
        ToolCall {
            id: "call_1".to_owned(),
            name: name.to_owned(),
            arguments: json!({}),
        }
    }

    #[test]
    fn calls_resolve_by_exposed_name_full_name_or_a_name_only_one_server_has() {
        let tools = setup(
            vec![
                tool("fs", "read"),
                tool("web", "read"),
                tool("web", "fetch.v2"),
            ],
            Protocol::Prompt,
        );
        let full = resolve(&call("web.read"), &tools).unwrap();
        assert_eq!((full.server.as_str(), full.tool.as_str()), ("web", "read"));
        let exposed = resolve(&call("fs__read"), &tools).unwrap();
        assert_eq!(
            (exposed.server.as_str(), exposed.tool.as_str()),
            ("fs", "read")
        );
        // The first dot splits, so tool names may hold dots.
        let dotted = resolve(&call("web.fetch.v2"), &tools).unwrap();
        assert_eq!(dotted.tool, "fetch.v2");
        let exposed_dotted = tools.names.name(2).unwrap().to_owned();
        assert_eq!(
            resolve(&call(&exposed_dotted), &tools).unwrap().tool,
            "fetch.v2"
        );
        let bare = resolve(&call("fetch.v2"), &tools).unwrap();
        assert_eq!(bare.server, "web");
        let ambiguous = resolve(&call("read"), &tools).unwrap_err();
        assert!(ambiguous.contains("fs.read") && ambiguous.contains("web.read"));
        let unknown = resolve(&call("nope.read"), &tools).unwrap_err();
        assert!(unknown.starts_with("unknown tool"), "{unknown}");
    }

    #[test]
    fn a_native_model_is_told_the_names_it_was_given() {
        let tools = setup(
            vec![tool("fs", "read"), tool("web", "read")],
            Protocol::Native,
        );
        let ambiguous = resolve(&call("read"), &tools).unwrap_err();
        assert!(ambiguous.contains("fs__read, web__read"), "{ambiguous}");
    }

    #[test]
    fn arguments_must_be_an_object() {
        let tools = setup(vec![tool("fs", "read")], Protocol::Native);
        let mut bad = call("fs__read");
        bad.arguments = json!("{\"path\": ");
        assert!(
            resolve(&bad, &tools)
                .unwrap_err()
                .contains("not valid JSON")
        );
        bad.arguments = json!([1]);
        assert!(resolve(&bad, &tools).unwrap_err().contains("JSON object"));
        bad.arguments = Value::Null;
        assert!(resolve(&bad, &tools).unwrap().arguments.is_empty());
    }

    #[test]
    fn only_a_refusal_that_talks_about_tools_falls_back() {
        let upstream = |status, message: &str| BackendError::Upstream {
            backend: "o".to_owned(),
            status,
            message: message.to_owned(),
        };
        assert!(refuses_tools(&upstream(
            400,
            "llama2 does not support tools"
        )));
        assert!(refuses_tools(&upstream(
            400,
            "\"auto\" tool choice requires --enable-auto-tool-choice"
        )));
        assert!(!refuses_tools(&upstream(400, "context length exceeded")));
        assert!(!refuses_tools(&upstream(500, "tool parser crashed")));
    }

    #[test]
    fn long_results_are_cut_for_the_model_only() {
        let full = "x".repeat(context::MAX_RESULT_CHARS_TO_MODEL + 10);
        let text = context::result_as_text("a.b", &full, false);
        assert!(text.starts_with("Result of tool a.b:\nxxx"));
        assert!(text.ends_with("[result truncated]"));
        assert!(text.len() < full.len() + 40);
    }
}
