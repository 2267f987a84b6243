//! `mcp:` — the MCP servers lit-mux connects to, and how each is reached (its transport).
//!
//! A server's entry in the file, in `MCP_SERVERS` and in `POST /mcp/servers` is one flat shape
//! (`name`, `command`, `args`, `env`, `timeout`, `restart`); [`McpServerConfig`] reads it into a
//! [`McpTransport`]: an entry with `command` is a child process spoken to over stdio. Another
//! transport is one more variant there, with the fields that select it in [`ServerEntry`]; the
//! rest of lit-mux reaches the transport only through `mcp::connection`.
//!
//! What the API may start (`allowed_commands`, `allowed_env`) and what every child gets of
//! lit-mux's environment (`inherit_env`) are settings here, applied by `mcp::launch`. Every
//! number and size of a server entry has its range ([`TIMEOUT_SECS`], [`MAX_ARGS`], …), checked
//! for the file by [`McpConfig`]'s validation and for the API by the hub, with the same words.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `mcp:` — the MCP servers and the limits that apply to all of them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    pub enabled: bool,
    pub servers: Vec<McpServerConfig>,
    /// When set, only these programs (each with any arguments, or with the arguments its entry
    /// pins) may be started through the API. Servers from the file are not checked.
    pub allowed_commands: Option<Vec<AllowedCommand>>,
    /// Environment names (or `*` patterns) a server added through the API may set. Unset: none
    /// when `allowed_commands` is set, any otherwise. A loader or interpreter variable
    /// (`LD_PRELOAD`, `NODE_OPTIONS`, `PYTHONPATH`, …) is allowed only by its exact name.
    pub allowed_env: Option<Vec<String>>,
    /// Names (or `*` patterns) of lit-mux's own environment that every child gets beyond the
    /// minimal set (`PATH`, `HOME`, `USER`, `LOGNAME`, `LANG`, `LC_*`, `TMPDIR`, `TERM`, `TZ`).
    pub inherit_env: Vec<String>,
    /// Largest single message accepted from a server, in bytes.
    pub max_message_bytes: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            servers: Vec::new(),
            allowed_commands: None,
            allowed_env: None,
            inherit_env: Vec::new(),
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Seconds a server may be given for its handshake and each call (`timeout`).
pub const TIMEOUT_SECS: RangeInclusive<u64> = 1..=3600;
/// Bytes of `max_message_bytes`.
pub const MESSAGE_BYTES: RangeInclusive<usize> = 1024..=256 * 1024 * 1024;
/// Longest `command`, in bytes (the kernel's PATH_MAX).
pub const MAX_COMMAND_BYTES: usize = 4096;
/// Most arguments of one server, and the longest one in bytes.
pub const MAX_ARGS: usize = 256;
pub const MAX_ARG_BYTES: usize = 16 * 1024;
/// Most variables in one server's `env`, and the longest name and value in bytes.
pub const MAX_ENV_VARS: usize = 256;
pub const MAX_ENV_NAME_BYTES: usize = 256;
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;

/// One entry of `allowed_commands`: a program with any arguments (a bare string), or with
/// exactly these arguments (`{command, args}`: as many as patterns, each matching its own).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AllowedCommand {
    /// Any arguments: an interpreter allowed this way runs any code its arguments hold.
    Any(String),
    Pinned(PinnedCommand),
}

/// A program allowed only with these arguments, position by position. In each pattern `*`
/// stands for any run of ASCII letters, digits, `.`, `_` and `-`; it never stands for a `..`
/// path segment, nor for an argument starting with `-` unless the pattern starts with `-`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedCommand {
    pub command: String,
    pub args: Vec<String>,
}

impl AllowedCommand {
    /// The program: a name looked up in lit-mux's `PATH`, or an absolute path.
    pub fn command(&self) -> &str {
        match self {
            Self::Any(command) => command,
            Self::Pinned(pinned) => &pinned.command,
        }
    }

    /// The argument patterns, when the entry pins them.
    pub fn args(&self) -> Option<&[String]> {
        match self {
            Self::Any(_) => None,
            Self::Pinned(pinned) => Some(&pinned.args),
        }
    }
}

/// A string, or a map with `command` and `args` (its own errors: an unknown key is named).
impl<'de> Deserialize<'de> for AllowedCommand {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> serde::de::Visitor<'de> for EntryVisitor {
            type Value = AllowedCommand;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a command, or {command, args}")
            }

            fn visit_str<E: serde::de::Error>(self, command: &str) -> Result<Self::Value, E> {
                Ok(AllowedCommand::Any(command.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                PinnedCommand::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(AllowedCommand::Pinned)
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

impl McpConfig {
    /// The file's checks of `mcp:`: the key path and what is wrong with it.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if !MESSAGE_BYTES.contains(&self.max_message_bytes) {
            return Err((
                "mcp.max_message_bytes".to_owned(),
                out_of_range(&MESSAGE_BYTES, self.max_message_bytes, "bytes"),
            ));
        }
        for (index, entry) in self.allowed_commands.iter().flatten().enumerate() {
            let key = format!("mcp.allowed_commands[{index}]");
            let command = entry.command();
            if command.trim().is_empty() || command.contains('\0') {
                return Err((
                    format!("{key}.command"),
                    "must be a program name or an absolute path".to_owned(),
                ));
            }
            if command.contains('/') && !command.starts_with('/') {
                return Err((
                    format!("{key}.command"),
                    format!(
                        "\"{command}\" is a relative path: use a name looked up in PATH or an absolute path"
                    ),
                ));
            }
            for (position, pattern) in entry.args().into_iter().flatten().enumerate() {
                if pattern.contains('\0') || pattern.len() > MAX_ARG_BYTES {
                    return Err((
                        format!("{key}.args[{position}]"),
                        format!("must hold no NUL byte and at most {MAX_ARG_BYTES} bytes"),
                    ));
                }
            }
        }
        for (list, patterns) in [
            (
                "mcp.allowed_env",
                self.allowed_env.as_deref().unwrap_or_default(),
            ),
            ("mcp.inherit_env", self.inherit_env.as_slice()),
        ] {
            for (index, pattern) in patterns.iter().enumerate() {
                if !is_env_pattern(pattern) {
                    return Err((
                        format!("{list}[{index}]"),
                        format!(
                            "\"{pattern}\" is not a variable name or pattern (A-Z a-z 0-9 _, and * for any run)"
                        ),
                    ));
                }
            }
        }
        let mut names = BTreeSet::new();
        for (index, server) in self.servers.iter().enumerate() {
            let key = format!("mcp.servers[{index}]");
            if !is_valid_server_name(&server.name) {
                return Err((
                    format!("{key}.name"),
                    format!(
                        "\"{}\" is not a valid server name (1 to 64 of A-Z a-z 0-9 _ -)",
                        server.name
                    ),
                ));
            }
            if !names.insert(server.name.as_str()) {
                return Err((
                    format!("{key}.name"),
                    format!("server name \"{}\" is used twice", server.name),
                ));
            }
            if let Some((field, problem)) = server.transport.problem() {
                return Err((format!("{key}.{field}"), problem));
            }
            if let Some((field, problem)) = server.out_of_range() {
                return Err((format!("{key}.{field}"), problem));
            }
        }
        Ok(())
    }
}

/// `must be between 1 and 3600 seconds, got 0`.
fn out_of_range<T: std::fmt::Display>(range: &RangeInclusive<T>, got: T, unit: &str) -> String {
    format!(
        "must be between {} and {} {unit}, got {got}",
        range.start(),
        range.end()
    )
}

/// Whether `pattern` names environment variables: `[A-Za-z0-9_*]+`, `*` standing for any run.
pub fn is_env_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= MAX_ENV_NAME_BYTES
        && pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'*')
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
    /// The server's own variables, added to what it gets of lit-mux's environment (see
    /// `mcp::launch`). In the transport handed to a connection, the child's whole environment.
    pub env: BTreeMap<String, String>,
}

impl McpTransport {
    /// The command and its arguments, for a transport that runs one.
    pub fn command_line(&self) -> Option<(&str, &[String])> {
        match self {
            Self::Stdio(stdio) => Some((&stdio.command, &stdio.args)),
        }
    }

    /// What makes this transport unusable, if anything: the field and what is wrong with it
    /// (a phrase that follows the field's name: `command` `must not be empty`).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        match self {
            Self::Stdio(stdio) => {
                if stdio.command.trim().is_empty() {
                    return Some(("command", "must not be empty".to_owned()));
                }
                if let Some(field) = stdio.nul_byte() {
                    return Some((
                        field,
                        "contains a NUL byte, which a process's command line and environment cannot hold"
                            .to_owned(),
                    ));
                }
                // `A=B` as a name would set another variable than the one named.
                stdio
                    .env
                    .keys()
                    .find(|name| name.is_empty() || name.contains('='))
                    .map(|name| {
                        (
                            "env",
                            format!("holds \"{name}\", which is not a variable name: it must be non-empty and hold no '='"),
                        )
                    })
            }
        }
    }
}

impl McpServerConfig {
    /// The first number or size out of its range, if any: the field (`timeout`, `args[3]`, …)
    /// and the range it must be in.
    pub fn out_of_range(&self) -> Option<(String, String)> {
        if !TIMEOUT_SECS.contains(&self.timeout) {
            return Some((
                "timeout".to_owned(),
                out_of_range(&TIMEOUT_SECS, self.timeout, "seconds"),
            ));
        }
        match &self.transport {
            McpTransport::Stdio(stdio) => stdio.out_of_range(),
        }
    }
}

impl StdioTransport {
    fn out_of_range(&self) -> Option<(String, String)> {
        let too_long = |what: &str, limit: usize, got: usize| {
            format!("{what} at most {limit} bytes, got {got}")
        };
        if self.command.len() > MAX_COMMAND_BYTES {
            return Some((
                "command".to_owned(),
                too_long("must hold", MAX_COMMAND_BYTES, self.command.len()),
            ));
        }
        if self.args.len() > MAX_ARGS {
            return Some((
                "args".to_owned(),
                format!(
                    "must hold at most {MAX_ARGS} arguments, got {}",
                    self.args.len()
                ),
            ));
        }
        if let Some((index, arg)) = self
            .args
            .iter()
            .enumerate()
            .find(|(_, arg)| arg.len() > MAX_ARG_BYTES)
        {
            return Some((
                format!("args[{index}]"),
                too_long("must hold", MAX_ARG_BYTES, arg.len()),
            ));
        }
        if self.env.len() > MAX_ENV_VARS {
            return Some((
                "env".to_owned(),
                format!(
                    "must hold at most {MAX_ENV_VARS} variables, got {}",
                    self.env.len()
                ),
            ));
        }
        if let Some(name) = self.env.keys().find(|name| name.len() > MAX_ENV_NAME_BYTES) {
            return Some((
                "env".to_owned(),
                too_long("a variable name may hold", MAX_ENV_NAME_BYTES, name.len()),
            ));
        }
        self.env
            .iter()
            .find(|(_, value)| value.len() > MAX_ENV_VALUE_BYTES)
            .map(|(name, value)| {
                (
                    format!("env.{name}"),
                    too_long("must hold", MAX_ENV_VALUE_BYTES, value.len()),
                )
            })
    }

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
    fn an_allowed_command_is_a_name_or_a_command_with_pinned_arguments() {
        let text = "allowed_commands: [uvx, {command: npx, args: [-y, '@scope/*']}]\n";
        let config: McpConfig =
            yaml_serde::from_str(text).unwrap_or_else(|err| unreachable!("{err}"));
        let entries = config.allowed_commands.unwrap_or_default();
        assert_eq!(entries[0], AllowedCommand::Any("uvx".to_owned()));
        assert_eq!(entries[1].command(), "npx");
        assert_eq!(
            entries[1].args(),
            Some(&["-y".to_owned(), "@scope/*".to_owned()][..])
        );
        let unknown_key = "allowed_commands: [{command: npx, arg: []}]\n";
        let err = yaml_serde::from_str::<McpConfig>(unknown_key).err();
        assert!(err.is_some_and(|e| e.to_string().contains("arg")));
    }

    #[test]
    fn server_names_follow_the_tool_addressing_rule() {
        assert!(is_valid_server_name("file-system_2"));
        assert!(!is_valid_server_name(""));
        assert!(!is_valid_server_name("has.dot"));
        assert!(!is_valid_server_name(&"x".repeat(65)));
    }
}
