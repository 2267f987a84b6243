//! Configuration: the file's typed schema, where it is found, how it is loaded and checked.
//!
//! Invariants once [`load`] returns `Ok`: every key was known, every value had the right type,
//! every `${VAR}` in a string value was expanded, `MCP_SERVERS` was appended, and the semantic
//! checks in [`Config::validate`] passed. The rest of lit-mux never re-checks the config.
//!
//! Loading happens before the async runtime and before logging start (the log level lives in the
//! file), so everything worth telling the user is collected in [`LoadedConfig::warnings`].

pub mod backends;
pub mod mcp;

pub use mcp::{
    AllowedCommand, McpConfig, McpServerConfig, McpTransport, PinnedCommand, RestartPolicy,
    StdioTransport, default_mcp_timeout, is_valid_server_name, parse_mcp_servers_env,
};

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// Environment variable that names the config file, like `--config`.
pub const CONFIG_ENV: &str = "LIT_MUX_CONFIG";
/// Environment variable that appends MCP servers, in the predecessor's format.
pub const MCP_SERVERS_ENV: &str = "MCP_SERVERS";

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, deserialize_with = "null_as_default")]
    pub server: ServerConfig,
    /// AI backends by name, in the file's order. Each entry is typed by the backends module;
    /// kept verbatim here.
    #[serde(default, deserialize_with = "null_as_default")]
    pub backends: yaml_serde::Mapping,
    #[serde(default, deserialize_with = "null_as_default")]
    pub mcp: McpConfig,
    #[serde(default, deserialize_with = "null_as_default")]
    pub mcp_endpoint: McpEndpointConfig,
    #[serde(default, deserialize_with = "null_as_default")]
    pub storage: StorageConfig,
    #[serde(default, deserialize_with = "null_as_default")]
    pub context: ContextConfig,
    /// `backends`, typed and checked by [`load`], in order; ends with `echo` unless it was
    /// configured.
    #[serde(skip)]
    pub typed_backends: backends::BackendConfigs,
}

/// `server:` — the HTTP listener and who may talk to it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub log_level: LogLevel,
    /// When set, every endpoint but `/health` requires this key.
    pub api_key: Option<String>,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Origins allowed by CORS; `"*"` allows any. Empty: no cross-origin access.
    pub cors_origins: Vec<String>,
    /// How long shutdown waits for open requests to finish before closing them.
    pub shutdown_grace_secs: u64,
    /// How long a connection may take to send a complete request head, counted from accept and
    /// from the end of its previous request (HTTP/1 keep-alive, HTTP/2 with no open stream);
    /// then it is closed. So it is also how long an idle connection is kept.
    pub header_read_timeout_secs: u64,
    /// How long a request's body may take to arrive, counted from its head; then 408.
    pub body_read_timeout_secs: u64,
    /// Most connections open at once; at the cap a new one replaces the connection idle the
    /// longest. Unset: derived from the descriptor limit (see `http::connections`).
    pub max_connections: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 8000,
            log_level: LogLevel::Info,
            api_key: None,
            max_body_bytes: 4 * 1024 * 1024,
            cors_origins: Vec::new(),
            shutdown_grace_secs: 10,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
            max_connections: None,
        }
    }
}

impl ServerConfig {
    /// Whether `host` only accepts connections from this machine.
    pub fn is_loopback(&self) -> bool {
        host_is_loopback(&self.host)
    }
}

/// Whether a host name or address only reaches this machine.
pub fn host_is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Log level names, accepting the predecessor's Python spellings (`INFO`, `WARNING`, `CRITICAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    #[serde(alias = "TRACE")]
    Trace,
    #[serde(alias = "DEBUG")]
    Debug,
    #[serde(alias = "INFO")]
    Info,
    #[serde(alias = "WARN", alias = "warning", alias = "WARNING")]
    Warn,
    #[serde(alias = "ERROR", alias = "critical", alias = "CRITICAL")]
    Error,
}

impl LogLevel {
    /// The directive understood by `tracing_subscriber::EnvFilter`.
    pub fn as_filter(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// `mcp_endpoint:` — lit-mux's own MCP server at `/mcp`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpEndpointConfig {
    /// Most `/mcp` sessions kept at once; a new one replaces the least recently used idle one.
    pub max_sessions: usize,
}

impl Default for McpEndpointConfig {
    fn default() -> Self {
        Self { max_sessions: 1000 }
    }
}

/// `storage:` — where sessions and messages are kept.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` or a plain path; empty means `$XDG_DATA_HOME/lit-mux/lit-mux.db`.
    pub url: Option<String>,
    /// How large SQLite's write-ahead log may grow (1 to 65,536): every write counts, and past
    /// half of it writes pause to start it over.
    pub max_wal_mb: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_wal_mb: 64,
        }
    }
}

/// `context:` — how much history is sent to a model.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    pub max_messages: usize,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self { max_messages: 50 }
    }
}

/// Longest client timeout accepted (an hour): a longer one would only let clients hold
/// connections, and far larger ones overflow the clock.
const MAX_CLIENT_TIMEOUT_SECS: u64 = 3600;
/// Largest `server.max_connections`: Linux's own ceiling on a process's descriptors.
const MAX_CONNECTIONS_SETTING: u64 = 1 << 20;
/// Largest `mcp_endpoint.max_sessions`; each session costs tens of kilobytes.
const MAX_SESSIONS_SETTING: u64 = 100_000;

/// Lets a section be written as an empty key (`mcp:`) and mean its defaults.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A configuration that could not be used. Always shown to the user; `start` exits with 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad YAML, a wrong type or an unknown key; the message names the key path and position.
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value of the right type that cannot work (a bad name, a duplicate, zero where it matters).
    #[error("invalid config{}: {key}: {message}", .path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Invalid {
        path: Option<PathBuf>,
        key: String,
        message: String,
    },
    #[error("invalid {MCP_SERVERS_ENV} entry \"{entry}\": {message}")]
    McpServersEnv { entry: String, message: String },
    #[error("cannot read .env file {path}: {message}")]
    DotEnv { path: PathBuf, message: String },
}

/// Whether the config came from a file or is the built-in defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    File,
    /// The file did not exist; defaults are in use.
    Defaults,
}

/// A config ready to use, with where it came from and what the user should be told.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub path: PathBuf,
    pub source: ConfigSource,
    /// Things to log once logging is up (e.g. an unset `${VAR}`).
    pub warnings: Vec<String>,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::File => "file",
            Self::Defaults => "defaults",
        })
    }
}

/// The config file to use: `--config`, else `LIT_MUX_CONFIG`, else
/// `$XDG_CONFIG_HOME/lit-mux/config.yaml`, else `~/.config/lit-mux/config.yaml`.
///
/// `explicit` is the `--config` flag (clap already folds `LIT_MUX_CONFIG` into it).
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(path) = non_empty_env(CONFIG_ENV) {
        return PathBuf::from(path);
    }
    xdg_dir("XDG_CONFIG_HOME", ".config")
        .join("lit-mux")
        .join("config.yaml")
}

/// `$VAR` when set to an absolute path, else `~/FALLBACK` (the XDG base-directory rule).
pub fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    if let Some(dir) = non_empty_env(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return dir;
    }
    home_dir().join(fallback)
}

fn home_dir() -> PathBuf {
    non_empty_env("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Loads `.env` from the working directory into the environment, not overriding variables that
/// are already set. Call before any thread is started: it writes the process environment.
pub fn load_dotenv() -> Result<Option<PathBuf>, ConfigError> {
    let path = PathBuf::from(".env");
    match dotenvy::from_path(&path) {
        Ok(()) => Ok(Some(path)),
        Err(dotenvy::Error::Io(err)) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(ConfigError::DotEnv {
            path,
            message: err.to_string(),
        }),
    }
}

/// Reads, expands, extends and validates the config at `path` (a missing file means defaults).
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let mut warnings = Vec::new();
    let (mut config, source) = match std::fs::read_to_string(path) {
        Ok(text) => (parse(&text, path, &mut warnings)?, ConfigSource::File),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            (Config::default(), ConfigSource::Defaults)
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if config
        .server
        .api_key
        .as_deref()
        .is_some_and(|key| key.trim().is_empty())
    {
        // Usually `${VAR}` of an unset VAR (the predecessor's default config has one). Without a
        // key only loopback clients are served, and `start` refuses any other address.
        config.server.api_key = None;
        warnings.push(
            "server.api_key is empty: no authentication, so only local clients are served"
                .to_owned(),
        );
    }
    if let Some(spec) = non_empty_env(MCP_SERVERS_ENV) {
        config.mcp.servers.extend(parse_mcp_servers_env(&spec)?);
    }
    let typed_backends = backends::parse_all(&config.backends, &mut warnings);
    let checked = config.validate().and(typed_backends.map(|typed| {
        config.typed_backends = typed;
    }));
    checked.map_err(|(key, mut message)| {
        // An unset `${VAR}` is the usual cause of an empty value: say so with the error.
        for warning in &warnings {
            message.push_str(&format!(" (note: {warning})"));
        }
        ConfigError::Invalid {
            path: (source == ConfigSource::File).then(|| path.to_path_buf()),
            key,
            message,
        }
    })?;
    Ok(LoadedConfig {
        config,
        path: path.to_path_buf(),
        source,
        warnings,
    })
}

/// Parses config text. Types and keys are checked on the text itself so that errors carry the
/// key path and line/column; `${VAR}` is expanded afterwards, on string values only.
pub fn parse(text: &str, path: &Path, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
    let parse_error = |err: yaml_serde::Error| ConfigError::Parse {
        path: path.to_path_buf(),
        message: describe_yaml_error(&err),
    };
    let mut tree: yaml_serde::Value = yaml_serde::from_str(text).map_err(parse_error)?;
    if tree.is_null() {
        // Empty file or comments only.
        return Ok(Config::default());
    }
    // Checked against the text for positions; the value itself is rebuilt after expansion.
    yaml_serde::from_str::<Config>(text).map_err(parse_error)?;
    expand_env_in_tree(&mut tree, &mut String::new(), warnings);
    yaml_serde::from_value(tree).map_err(parse_error)
}

/// yaml_serde's message, with the unknown-key case reworded to name the full key path
/// (`server.prot: unknown key` rather than `server: unknown field `prot``) and the position
/// added when the message lacks it.
fn describe_yaml_error(err: &yaml_serde::Error) -> String {
    let mut message = err.to_string();
    if let Some((section, rest)) = message.split_once(": unknown field `") {
        if let Some((key, expected)) = rest.split_once("`, ") {
            let full_key = if section.contains(' ') {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            };
            message = format!("{full_key}: unknown key; {expected}");
        }
    } else if let Some(key_and_rest) = message.strip_prefix("unknown field `")
        && let Some((key, expected)) = key_and_rest.split_once("`, ")
    {
        message = format!("{key}: unknown key; {expected}");
    }
    if let Some(location) = err.location().filter(|_| !message.contains(" at line ")) {
        message.push_str(&format!(
            " at line {} column {}",
            location.line(),
            location.column()
        ));
    }
    message
}

/// Expands `${VAR}` in every string value of the tree (not in keys). `key_path` is the path
/// of `value`, written as serde names it (`mcp.servers[0].env.TOKEN`).
fn expand_env_in_tree(
    value: &mut yaml_serde::Value,
    key_path: &mut String,
    warnings: &mut Vec<String>,
) {
    use yaml_serde::Value;
    let parent_len = key_path.len();
    match value {
        Value::String(text) => {
            let (expanded, missing) = expand_env(text);
            for name in missing {
                warnings.push(format!(
                    "environment variable {name} is not set; {key_path} expands it to an empty string"
                ));
            }
            *text = expanded;
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                key_path.push_str(&format!("[{index}]"));
                expand_env_in_tree(item, key_path, warnings);
                key_path.truncate(parent_len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                if !key_path.is_empty() {
                    key_path.push('.');
                }
                match key.as_str() {
                    Some(name) => key_path.push_str(name),
                    // A number or other scalar as a key: as the YAML wrote it.
                    None => {
                        key_path.push_str(yaml_serde::to_string(key).unwrap_or_default().trim_end())
                    }
                }
                expand_env_in_tree(item, key_path, warnings);
                key_path.truncate(parent_len);
            }
        }
        Value::Tagged(tagged) => expand_env_in_tree(&mut tagged.value, key_path, warnings),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Replaces each `${NAME}` with the variable's value; returns the names that were not set.
/// `$$` is not special and text without a closing brace is left as written.
pub fn expand_env(text: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return (out, missing);
        };
        let name = &after[..end];
        if is_env_name(name) {
            match std::env::var(name) {
                Ok(value) => out.push_str(&value),
                Err(_) => missing.push(name.to_owned()),
            }
        } else {
            out.push_str(&rest[start..start + 2 + end + 1]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    (out, missing)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Config {
    /// Checks what types cannot: returns the key path and what is wrong with it.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let invalid = |key: &str, message: &str| Err((key.to_owned(), message.to_owned()));
        if self.server.host.trim().is_empty() {
            return invalid("server.host", "must not be empty");
        }
        for (index, origin) in self.server.cors_origins.iter().enumerate() {
            let key = format!("server.cors_origins[{index}]");
            if origin != "*" && !is_origin(origin) {
                return Err((
                    key,
                    format!("\"{origin}\" is not an origin like https://app.example.com"),
                ));
            }
        }
        self.mcp.validate()?;
        self.check_ranges()
    }

    /// Every size, count and duration of these sections within its range, so that no setting
    /// can overflow a deadline (`Instant + Duration`), size an allocation or disable a limit.
    fn check_ranges(&self) -> Result<(), (String, String)> {
        let u64_of = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let settings: [(&str, u64, RangeInclusive<u64>); 7] = [
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
                1..=MAX_CLIENT_TIMEOUT_SECS,
            ),
            (
                "server.body_read_timeout_secs",
                self.server.body_read_timeout_secs,
                1..=MAX_CLIENT_TIMEOUT_SECS,
            ),
            (
                "mcp_endpoint.max_sessions",
                u64_of(self.mcp_endpoint.max_sessions),
                1..=MAX_SESSIONS_SETTING,
            ),
            (
                "server.max_body_bytes",
                u64_of(self.server.max_body_bytes),
                1..=MAX_BODY_BYTES,
            ),
            (
                "server.shutdown_grace_secs",
                self.server.shutdown_grace_secs,
                0..=MAX_SHUTDOWN_GRACE_SECS,
            ),
            (
                "storage.max_wal_mb",
                self.storage.max_wal_mb,
                1..=MAX_WAL_MB,
            ),
            (
                "context.max_messages",
                u64_of(self.context.max_messages),
                1..=MAX_CONTEXT_MESSAGES,
            ),
        ];
        if let Some(max) = self.server.max_connections {
            check_range(
                "server.max_connections",
                u64_of(max),
                &(1..=MAX_CONNECTIONS_SETTING),
            )?;
        }
        for (key, value, range) in settings {
            check_range(key, value, &range)?;
        }
        Ok(())
    }
}

/// Largest `server.max_body_bytes`: 1 GiB, since a body is held in memory whole.
pub const MAX_BODY_BYTES: u64 = 1 << 30;
/// Longest `server.shutdown_grace_secs`: one hour.
pub const MAX_SHUTDOWN_GRACE_SECS: u64 = 3600;
/// Largest `storage.max_wal_mb`: 64 GiB of log is far past any use, and the bound in bytes
/// must fit the WAL arithmetic.
pub const MAX_WAL_MB: u64 = 64 * 1024;
/// Most `context.max_messages`: each turn reads that many messages (times the backends).
pub const MAX_CONTEXT_MESSAGES: u64 = 10_000;

/// `Err((key, "must be from MIN to MAX, got VALUE"))` when `value` is outside `range`.
pub(crate) fn check_range(
    key: &str,
    value: u64,
    range: &RangeInclusive<u64>,
) -> Result<(), (String, String)> {
    if range.contains(&value) {
        return Ok(());
    }
    Err((
        key.to_owned(),
        format!(
            "must be from {} to {}, got {value}",
            range.start(),
            range.end()
        ),
    ))
}

/// `scheme://host[:port]` with nothing after it, as browsers send in `Origin`.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' '])
        && axum::http::HeaderValue::from_str(text).is_ok()
}

/// The commented config that `lit-mux init` writes, with `api_key` filled in.
pub fn default_config_text(api_key: &str) -> String {
    include_str!("template.yaml").replace("{{API_KEY}}", api_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_env_replaces_whole_and_embedded_references() {
        // PATH and HOME exist in every test environment; the other name is never set.
        let path = std::env::var("PATH").unwrap_or_default();
        let (out, missing) =
            expand_env("a${PATH}b ${LIT_MUX_TEST_NEVER_SET_X} ${not valid} ${open");
        assert_eq!(out, format!("a{path}b  ${{not valid}} ${{open"));
        assert_eq!(missing, vec!["LIT_MUX_TEST_NEVER_SET_X".to_owned()]);
    }

    #[test]
    fn origins_are_checked() {
        assert!(is_origin("https://app.example.com"));
        assert!(is_origin("http://localhost:3000"));
        assert!(!is_origin("app.example.com"));
        assert!(!is_origin("https://app.example.com/path"));
    }

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "127.8.0.1", "localhost", "::1", "[::1]"] {
            assert!(host_is_loopback(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "192.0.2.1", "example.com"] {
            assert!(!host_is_loopback(host), "{host}");
        }
    }

    #[test]
    fn the_init_template_parses_to_defaults_plus_key() {
        let mut warnings = Vec::new();
        let config = parse(
            &default_config_text("k-123"),
            Path::new("config.yaml"),
            &mut warnings,
        )
        .map_err(|e| e.to_string());
        let expected = Config {
            server: ServerConfig {
                api_key: Some("k-123".to_owned()),
                ..ServerConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(config, Ok(expected));
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
