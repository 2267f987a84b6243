//! `mcp:` — the MCP servers lit-mux connects to, and how each is reached (its transport).
//!
//! A server's entry in the file, in `MCP_SERVERS` and in `POST /mcp/servers` is one flat shape
//! (`name`, `command`, `args`, `env`, `timeout`, `restart`); [`McpServerConfig`] reads it into a
//! [`McpTransport`]: an entry with `command` is a child process spoken to over stdio. Another
//! transport is one more variant there, with the fields that select it in [`ServerEntry`]; the
//! rest of lit-mux reaches the transport only through `mcp::connection`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `mcp:` — the MCP servers and the limits that apply to all of them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    pub enabled: bool,
    pub servers: Vec<McpServerConfig>,
    /// When set, only these commands may be started through the API.
    pub allowed_commands: Option<Vec<String>>,
    /// Largest single message accepted from a server, in bytes.
    pub max_message_bytes: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            servers: Vec::new(),
            allowed_commands: None,
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

impl McpConfig {
    /// Why `transport` may not be started through the API, if it may not
    /// (`allowed_commands`).
    pub fn refusal(&self, transport: &McpTransport) -> Option<String> {
        match transport {
            McpTransport::Stdio(stdio) => {
                let allowed = self.allowed_commands.as_ref()?;
                (!allowed.iter().any(|c| c == &stdio.command))
                    .then(|| format!("Command {:?} is not in mcp.allowed_commands", stdio.command))
            }
        }
    }

    /// The file's checks of `mcp:`: the key path and what is wrong with it.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if self.max_message_bytes < 1024 {
            return Err((
                "mcp.max_message_bytes".to_owned(),
                "must be at least 1024".to_owned(),
            ));
        }
        let mut names = BTreeSet::new();
        for (index, server) in self.servers.iter().enumerate() {
            let key = format!("mcp.servers[{index}]");
            if !is_valid_server_name(&server.name) {
                return Err((
                    format!("{key}.name"),
                    format!(
                        "{:?} is not a valid server name (1 to 64 of A-Z a-z 0-9 _ -)",
                        server.name
                    ),
                ));
            }
            if !names.insert(server.name.as_str()) {
                return Err((
                    format!("{key}.name"),
                    format!("server name {:?} is used twice", server.name),
                ));
            }
            match &server.transport {
                McpTransport::Stdio(stdio) => {
                    if stdio.command.trim().is_empty() {
                        return Err((format!("{key}.command"), "must not be empty".to_owned()));
                    }
                }
            }
            if server.timeout == 0 {
                return Err((
                    format!("{key}.timeout"),
                    "must be at least 1 second".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

/// One MCP server: its name, how to reach it, and how lit-mux treats it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(from = "ServerEntry", into = "ServerEntry")]
pub struct McpServerConfig {
    pub name: String,
    pub transport: McpTransport,
    /// Seconds allowed for the handshake and for each tool call.
    pub timeout: u64,
    pub restart: RestartPolicy,
}

/// How lit-mux reaches an MCP server.
#[derive(Debug, Clone, PartialEq)]
pub enum McpTransport {
    /// A command lit-mux runs as its child, speaking MCP over the child's stdin and stdout.
    Stdio(StdioTransport),
}

/// A server run as a child process.
#[derive(Debug, Clone, PartialEq)]
pub struct StdioTransport {
    pub command: String,
    pub args: Vec<String>,
    /// Added to lit-mux's own environment.
    pub env: BTreeMap<String, String>,
}

impl McpTransport {
    /// The command and its arguments, for a transport that runs one.
    pub fn command_line(&self) -> Option<(&str, &[String])> {
        match self {
            Self::Stdio(stdio) => Some((&stdio.command, &stdio.args)),
        }
    }

    /// What makes this transport unusable for a server added through the API, if anything.
    pub fn problem(&self) -> Option<String> {
        match self {
            Self::Stdio(stdio) => {
                if stdio.command.trim().is_empty() {
                    return Some("command must not be empty".to_owned());
                }
                stdio.nul_byte().map(|field| {
                    format!(
                        "{field} contains a NUL byte, which a process's command line and environment cannot hold"
                    )
                })
            }
        }
    }
}

impl StdioTransport {
    /// The first field holding a NUL byte, which no command line or environment can carry.
    pub fn nul_byte(&self) -> Option<&'static str> {
        if self.command.contains('\0') {
            Some("command")
        } else if self.args.iter().any(|arg| arg.contains('\0')) {
            Some("args")
        } else if self
            .env
            .iter()
            .any(|(key, value)| key.contains('\0') || value.contains('\0'))
        {
            Some("env")
        } else {
            None
        }
    }
}

/// A server's entry as written in the file (and serialised back): every transport's fields
/// side by side, the transport told apart by which are present.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ServerEntry {
    name: String,
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default = "default_mcp_timeout")]
    timeout: u64,
    #[serde(default)]
    restart: RestartPolicy,
}

impl From<ServerEntry> for McpServerConfig {
    fn from(entry: ServerEntry) -> Self {
        Self {
            name: entry.name,
            transport: McpTransport::Stdio(StdioTransport {
                command: entry.command,
                args: entry.args,
                env: entry.env,
            }),
            timeout: entry.timeout,
            restart: entry.restart,
        }
    }
}

impl From<McpServerConfig> for ServerEntry {
    fn from(config: McpServerConfig) -> Self {
        let McpTransport::Stdio(stdio) = config.transport;
        Self {
            name: config.name,
            command: stdio.command,
            args: stdio.args,
            env: stdio.env,
            timeout: config.timeout,
            restart: config.restart,
        }
    }
}

/// Seconds a server gets for its handshake and each call unless its entry says otherwise.
pub fn default_mcp_timeout() -> u64 {
    30
}

/// What to do when an MCP server exits on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
}

/// Parses `MCP_SERVERS="name::command::arg1::arg2,name2::cmd2"` (the predecessor's format).
pub fn parse_mcp_servers_env(spec: &str) -> Result<Vec<McpServerConfig>, ConfigError> {
    spec.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let mut fields = entry.split("::");
            let name = fields.next().unwrap_or_default().trim();
            let command = fields.next().unwrap_or_default().trim();
            if name.is_empty() || command.is_empty() {
                return Err(ConfigError::McpServersEnv {
                    entry: entry.to_owned(),
                    message: "expected name::command[::arg...]".to_owned(),
                });
            }
            Ok(McpServerConfig {
                name: name.to_owned(),
                transport: McpTransport::Stdio(StdioTransport {
                    command: command.to_owned(),
                    args: fields.map(str::to_owned).collect(),
                    env: BTreeMap::new(),
                }),
                timeout: default_mcp_timeout(),
                restart: RestartPolicy::Never,
            })
        })
        .collect()
}

/// Whether `name` may name an MCP server: `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_server_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_line(server: &McpServerConfig) -> (&str, &[String]) {
        server.transport.command_line().unwrap_or(("", &[]))
    }

    #[test]
    fn mcp_servers_env_splits_entries_and_arguments() {
        let servers =
            parse_mcp_servers_env("fs::npx::-y::server-fs::/tmp, echo::cat ,").unwrap_or_default();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].name, "fs");
        assert_eq!(command_line(&servers[0]).0, "npx");
        assert_eq!(command_line(&servers[0]).1, ["-y", "server-fs", "/tmp"]);
        assert_eq!(servers[1].name, "echo");
        assert_eq!(command_line(&servers[1]).0, "cat");
        assert!(command_line(&servers[1]).1.is_empty());
        assert!(parse_mcp_servers_env("lonely").is_err());
    }

    #[test]
    fn an_entry_with_a_command_is_the_stdio_transport_and_writes_back_unchanged() {
        let text = "name: fs\ncommand: npx\nargs: [-y, server-fs]\nenv: {TOKEN: t}\n";
        let server: McpServerConfig =
            yaml_serde::from_str(text).unwrap_or_else(|err| unreachable!("{err}"));
        let expected = McpTransport::Stdio(StdioTransport {
            command: "npx".to_owned(),
            args: vec!["-y".to_owned(), "server-fs".to_owned()],
            env: BTreeMap::from([("TOKEN".to_owned(), "t".to_owned())]),
        });
        assert_eq!(server.transport, expected);
        assert_eq!(server.timeout, 30);
        assert_eq!(server.restart, RestartPolicy::Never);
        let written = serde_json::to_value(&server).unwrap_or_default();
        assert_eq!(
            written,
            serde_json::json!({"name": "fs", "command": "npx", "args": ["-y", "server-fs"],
                               "env": {"TOKEN": "t"}, "timeout": 30, "restart": "never"})
        );
    }

    #[test]
    fn server_names_follow_the_tool_addressing_rule() {
        assert!(is_valid_server_name("file-system_2"));
        assert!(!is_valid_server_name(""));
        assert!(!is_valid_server_name("has.dot"));
        assert!(!is_valid_server_name(&"x".repeat(65)));
    }
}
