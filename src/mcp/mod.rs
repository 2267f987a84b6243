//! MCP: the servers lit-mux connects to and the tools they offer.
//!
//! - [`hub`] is the supervisor: the registry of servers by name, their states, the restart
//!   policy, the statistics, the tool catalog and the views the API shows.
//! - [`connection`] is the one interface through which the hub reaches a server, whatever the
//!   transport; [`session`] is the MCP client protocol every transport runs over its link.
//! - [`stdio`] is a transport: a child process spoken to over its pipes. It alone owns a
//!   child's life. A remote transport is a folder beside it (see [`connection`]).
//! - [`transports`] names every transport and picks the one a server entry asks for.
//! - [`launch`] decides what a child may be and gets: the API's allow-lists, its program path,
//!   its environment.
//! - [`tool_names`] turns `server` + `tool` into the names models and clients see.
//!
//! This layer knows nothing of HTTP: errors are [`McpError`], mapped to statuses by `http`.

pub mod connection;
pub mod hub;
pub mod launch;
pub mod session;
pub mod stdio;
pub mod tool_names;
pub mod transports;

pub use stdio::orphan_guard;

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
    /// A number or size of the request outside its range: `field: must be between …`.
    #[error("{field}: {message}")]
    OutOfRange { field: String, message: String },
    #[error("MCP server '{server}' {failure}")]
    StartFailed {
        server: String,
        failure: connection::StartFailure,
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
