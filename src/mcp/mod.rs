//! MCP servers run as child processes: [`child`] owns one process's life, [`hub`] the set of
//! them and the tool catalog, [`endpoint`] serves that catalog as lit-mux's own MCP server.

pub mod child;
pub mod hub;
mod ordered_writer;
pub mod orphan_guard;
mod spawn;
pub mod tool_names;

/// What can go wrong with MCP servers and tool calls; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("MCP server '{0}' not found")]
    UnknownServer(String),
    #[error("Tool '{tool}' not found on MCP server '{server}'")]
    UnknownTool { server: String, tool: String },
    #[error("MCP server '{0}' already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("MCP server '{server}' {failure}")]
    StartFailed {
        server: String,
        failure: child::StartFailure,
    },
    #[error("MCP server '{server}' is not ready (state: {state})")]
    NotReady { server: String, state: String },
    #[error("MCP server '{server}' did not answer within {seconds} s")]
    Timeout { server: String, seconds: f64 },
    #[error("MCP server '{server}' exited ({exit}){}", if stderr_tail.is_empty() { String::new() } else { format!("; last stderr lines: {stderr_tail}") })]
    Died {
        server: String,
        exit: String,
        stderr_tail: String,
    },
    /// The server answered with a JSON-RPC error (`code`), or broke the protocol (`None`).
    #[error("MCP server '{server}': {message}")]
    Protocol {
        server: String,
        code: Option<i32>,
        message: String,
    },
    #[error("MCP is disabled in the configuration (mcp.enabled: false)")]
    Disabled,
}
