//! The `backends:` section, typed: which kind each entry is, its settings and its timeouts.
//!
//! Entries are written flat (`type`, `enabled`, `default_model`, kind-specific keys); a key that
//! does not belong to the entry's kind is an error naming it. The predecessor's entries still load:
//! `ollama` and `chatgpt` without a `type`, `chatgpt.model` as the default model, and
//! `claude_desktop` with a warning. A built-in `echo` backend exists unless configured otherwise.
//! The backends keep the order of the file, the built-in `echo` after them: lists of backends
//! show them in that order, as the predecessor did.

use std::time::Duration;

use serde::Deserialize;

/// One backend's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub enabled: bool,
    pub default_model: String,
    /// Sent as the system prompt when the session sets none.
    pub system_prompt: Option<String>,
    pub timeouts: Timeouts,
    /// Most requests in flight to the backend at once (each holds one connection); more wait
    /// for a free one, up to the first-byte timeout.
    pub max_connections: usize,
    /// How the backend's models call MCP tools.
    pub tool_mode: ToolMode,
    /// Options the backend's API cannot honour (e.g. `seed` on Anthropic) are dropped, and
    /// logged at debug, instead of refused with a 400.
    pub drop_unsupported_params: bool,
}

/// `max_connections` when the entry sets none: enough for a team's concurrent chats, far below
/// what a crowd of clients would otherwise open.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// The largest `max_connections` accepted.
pub const MAX_MAX_CONNECTIONS: usize = 4096;

/// How a backend's models call tools: the provider's native tool calling, or the JSON-in-text
/// protocol any model can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolMode {
    Native,
    Prompt,
    /// Native where the wire format has it; prompt mode for a model the server says cannot use
    /// tools.
    Auto,
}

impl BackendConfig {
    /// Whether the backend's wire format has native tool calling (echo's has: it answers a
    /// user message that is a call of an offered tool with that call).
    pub fn supports_native_tools(&self) -> bool {
        true
    }
    /// The built-in echo backend, present when the config has no `echo` entry.
    pub fn builtin_echo() -> Self {
        Self {
            kind: BackendKind::Echo,
            enabled: true,
            default_model: "echo".to_owned(),
            system_prompt: None,
            timeouts: Timeouts::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tool_mode: ToolMode::Prompt,
            drop_unsupported_params: false,
        }
    }
}

/// The wire format of a backend and the settings only that format has.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendKind {
    Ollama(OllamaSettings),
    OpenAi(OpenAiSettings),
    Anthropic(AnthropicSettings),
    Echo,
}

impl BackendKind {
    /// The `type` value that selects this kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Ollama(_) => "ollama",
            Self::OpenAi(_) => "openai",
            Self::Anthropic(_) => "anthropic",
            Self::Echo => "echo",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OllamaSettings {
    /// `http://host:port`, without a trailing slash.
    pub host: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiSettings {
    /// Up to and including the version, e.g. `https://api.openai.com/v1`; no trailing slash.
    pub base_url: String,
    /// Sent as `Authorization: Bearer`; local servers usually need none.
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnthropicSettings {
    /// Without the `/v1` path, e.g. `https://api.anthropic.com`; no trailing slash.
    pub base_url: String,
    pub api_key: String,
    /// The `anthropic-version` header.
    pub version: String,
    /// Anthropic requires a bound on the answer's length.
    pub max_tokens: u32,
}

/// How long a backend may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open the connection.
    pub connect: Duration,
    /// From sending the request to the response's headers (a local model may first load).
    pub first_byte: Duration,
    /// For the whole exchange, streamed body included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(300),
            total: Duration::from_secs(600),
        }
    }
}

/// An entry as written in the file, before its kind decides which keys it may have.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: Option<String>,
    enabled: Option<bool>,
    default_model: Option<String>,
    /// The predecessor's `chatgpt.model`.
    model: Option<String>,
    system_prompt: Option<String>,
    tool_mode: Option<String>,
    connect_timeout_secs: Option<u64>,
    first_byte_timeout_secs: Option<u64>,
    timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    host: Option<String>,
    base_url: Option<String>,
    api_key: Option<String>,
    anthropic_version: Option<String>,
    max_tokens: Option<u32>,
    drop_unsupported_params: Option<bool>,
}

/// The typed backends by name, in the order of the config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendConfigs(Vec<(String, BackendConfig)>);

impl BackendConfigs {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &BackendConfig)> {
        self.0.iter().map(|(name, config)| (name, config))
    }

    pub fn get(&self, name: &str) -> Option<&BackendConfig> {
        self.iter()
            .find(|(entry, _)| *entry == name)
            .map(|(_, config)| config)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Index<&str> for BackendConfigs {
    type Output = BackendConfig;

    /// The backend named `name`; only for a name known to be there (tests).
    fn index(&self, name: &str) -> &BackendConfig {
        match self.get(name) {
            Some(config) => config,
            None => unreachable!("no backend named {name}"),
        }
    }
}

/// Types every entry of `backends:`, keeping their order; returns the key path and message of
/// the first problem. Ends with the built-in `echo` backend unless an entry named `echo` exists.
pub fn parse_all(
    entries: &yaml_serde::Mapping,
    warnings: &mut Vec<String>,
) -> Result<BackendConfigs, (String, String)> {
    let mut backends: Vec<(String, BackendConfig)> = Vec::with_capacity(entries.len() + 1);
    for (name, value) in entries {
        let Some(name) = name.as_str() else {
            return Err((
                "backends".to_owned(),
                "every backend name must be a string".to_owned(),
            ));
        };
        let key = format!("backends.{name}");
        if !is_valid_backend_name(name) {
            return Err((
                key,
                "is not a valid backend name (1 to 64 of A-Z a-z 0-9 _ -)".to_owned(),
            ));
        }
        if name == "claude_desktop" && value.get("type").is_none() {
            // The predecessor's entry, whatever old keys it carries (`automation`, ...).
            warnings.push(
                "backends.claude_desktop is no longer supported and was skipped: \
                 use a backend with `type: anthropic` and an api_key instead"
                    .to_owned(),
            );
            continue;
        }
        let raw: RawEntry = if value.is_null() {
            RawEntry::default()
        } else {
            yaml_serde::from_value(value.clone()).map_err(|err| (key.clone(), err.to_string()))?
        };
        backends.push((name.to_owned(), parse_entry(name, raw, &key, warnings)?));
    }
    if !backends.iter().any(|(name, _)| name == "echo") {
        backends.push(("echo".to_owned(), BackendConfig::builtin_echo()));
    }
    Ok(BackendConfigs(backends))
}

/// Whether `name` may name a backend: `[A-Za-z0-9_-]{1,64}` (model ids are `backend/model`).
pub fn is_valid_backend_name(name: &str) -> bool {
    super::is_valid_server_name(name)
}

fn parse_entry(
    name: &str,
    raw: RawEntry,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<BackendConfig, (String, String)> {
    let fail = |field: &str, message: String| Err((format!("{key}.{field}"), message));
    let type_name = match raw.kind.as_deref() {
        Some(kind) => kind.to_owned(),
        // The predecessor's entries had no type: their name said it.
        None => match name {
            "ollama" | "echo" => name.to_owned(),
            "chatgpt" => "openai".to_owned(),
            _ => {
                return fail(
                    "type",
                    "is required: one of ollama, openai, anthropic, echo".to_owned(),
                );
            }
        },
    };
    let timeouts = parse_timeouts(&raw, key)?;
    let default_model = match (raw.default_model, raw.model) {
        (Some(_), Some(_)) => {
            return fail(
                "model",
                "is the old name of default_model; set only one of them".to_owned(),
            );
        }
        (Some(model), None) | (None, Some(model)) => Some(model),
        (None, None) => None,
    };
    if default_model
        .as_deref()
        .is_some_and(|m| m.trim().is_empty())
    {
        return fail("default_model", "must not be empty".to_owned());
    }

    // Keys a kind does not have are errors, so that a misplaced key is never silently ignored.
    let unused = |allowed: &[&str]| -> Result<(), (String, String)> {
        let present = [
            ("host", raw.host.is_some()),
            ("base_url", raw.base_url.is_some()),
            ("api_key", raw.api_key.is_some()),
            ("anthropic_version", raw.anthropic_version.is_some()),
            ("max_tokens", raw.max_tokens.is_some()),
            ("max_connections", raw.max_connections.is_some()),
        ];
        match present
            .iter()
            .find(|(field, set)| *set && !allowed.contains(field))
        {
            Some((field, _)) => Err((
                format!("{key}.{field}"),
                format!("is not a setting of type {type_name}"),
            )),
            None => Ok(()),
        }
    };

    let mut disabled = false;
    let (kind, fallback_model) = match type_name.as_str() {
        "ollama" => {
            unused(&["host", "base_url", "max_connections"])?;
            if raw.host.is_some() && raw.base_url.is_some() {
                return fail(
                    "base_url",
                    "is another name for host; set only one".to_owned(),
                );
            }
            let host = raw
                .host
                .or(raw.base_url)
                .unwrap_or_else(|| "http://localhost:11434".to_owned());
            (
                BackendKind::Ollama(OllamaSettings {
                    host: checked_url(&host, &format!("{key}.host"))?,
                }),
                "llama3.1",
            )
        }
        "openai" => {
            unused(&["base_url", "api_key", "max_connections"])?;
            let base_url = raw
                .base_url
                .unwrap_or_else(|| "https://api.openai.com/v1".to_owned());
            (
                BackendKind::OpenAi(OpenAiSettings {
                    base_url: checked_url(&base_url, &format!("{key}.base_url"))?,
                    api_key: non_empty(raw.api_key, &format!("{key}.api_key"), warnings),
                }),
                "gpt-4o-mini",
            )
        }
        "anthropic" => {
            unused(&[
                "base_url",
                "api_key",
                "anthropic_version",
                "max_tokens",
                "max_connections",
            ])?;
            let base_url = raw
                .base_url
                .unwrap_or_else(|| "https://api.anthropic.com".to_owned());
            let given = raw.api_key.is_some();
            let api_key = non_empty(raw.api_key, &format!("{key}.api_key"), warnings);
            if api_key.is_none() && !given {
                return fail("api_key", "is required for type anthropic".to_owned());
            }
            // Present but empty (an unset `${VAR}`): the server still starts, without this
            // backend, rather than not at all for want of one secret.
            if api_key.is_none() && raw.enabled != Some(false) {
                warnings.push(format!(
                    "{key} is disabled: its api_key is empty and type anthropic needs one"
                ));
                disabled = true;
            }
            let api_key = api_key.unwrap_or_default();
            if let Some(max_tokens) = raw.max_tokens {
                super::check_range(
                    &format!("{key}.max_tokens"),
                    u64::from(max_tokens),
                    &(1..=MAX_ANTHROPIC_MAX_TOKENS),
                )?;
            }
            (
                BackendKind::Anthropic(AnthropicSettings {
                    base_url: checked_url(&base_url, &format!("{key}.base_url"))?,
                    api_key,
                    version: raw
                        .anthropic_version
                        .unwrap_or_else(|| "2023-06-01".to_owned()),
                    max_tokens: raw.max_tokens.unwrap_or(4096),
                }),
                "claude-sonnet-4-5",
            )
        }
        "echo" => {
            unused(&[])?;
            (BackendKind::Echo, "echo")
        }
        other => {
            return fail(
                "type",
                format!("\"{other}\" is not a backend type: use ollama, openai, anthropic or echo"),
            );
        }
    };
    let max_connections = match raw.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(n @ 1..=MAX_MAX_CONNECTIONS) => n,
        Some(n) => {
            return fail(
                "max_connections",
                format!("is {n}: it must be between 1 and {MAX_MAX_CONNECTIONS}"),
            );
        }
    };
    let tool_mode = match raw.tool_mode.as_deref() {
        // Echo follows the prompt protocol unless told otherwise: what a user types is then
        // what the tool loop scans, as before echo had native calls.
        None if matches!(kind, BackendKind::Echo) => ToolMode::Prompt,
        None | Some("auto") => ToolMode::Auto,
        Some("prompt") => ToolMode::Prompt,
        Some("native") => ToolMode::Native,
        Some(other) => {
            return fail(
                "tool_mode",
                format!("\"{other}\" is not a tool mode: use native, prompt or auto"),
            );
        }
    };
    Ok(BackendConfig {
        kind,
        tool_mode,
        enabled: raw.enabled.unwrap_or(true) && !disabled,
        default_model: default_model.unwrap_or_else(|| fallback_model.to_owned()),
        system_prompt: raw.system_prompt.filter(|p| !p.trim().is_empty()),
        timeouts,
        max_connections,
        drop_unsupported_params: raw.drop_unsupported_params.unwrap_or(false),
    })
}

/// Longest backend timeout: one day. A larger one would overflow the deadline it sets.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Largest `max_tokens` of an anthropic backend.
pub const MAX_ANTHROPIC_MAX_TOKENS: u64 = 1_000_000;

fn parse_timeouts(raw: &RawEntry, key: &str) -> Result<Timeouts, (String, String)> {
    let defaults = Timeouts::default();
    let seconds = |value: Option<u64>, field: &str, default: Duration| match value {
        Some(secs) => {
            super::check_range(&format!("{key}.{field}"), secs, &(1..=MAX_TIMEOUT_SECS))?;
            Ok::<_, (String, String)>(Duration::from_secs(secs))
        }
        None => Ok(default),
    };
    let timeouts = Timeouts {
        connect: seconds(
            raw.connect_timeout_secs,
            "connect_timeout_secs",
            defaults.connect,
        )?,
        first_byte: seconds(
            raw.first_byte_timeout_secs,
            "first_byte_timeout_secs",
            defaults.first_byte,
        )?,
        total: seconds(raw.timeout_secs, "timeout_secs", defaults.total)?,
    };
    // A first-byte bound longer than the total one would never apply.
    Ok(Timeouts {
        first_byte: timeouts.first_byte.min(timeouts.total),
        ..timeouts
    })
}

/// An http(s) URL, returned without its trailing slash.
fn checked_url(text: &str, key: &str) -> Result<String, (String, String)> {
    let trimmed = text.trim().trim_end_matches('/');
    match reqwest::Url::parse(trimmed) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(trimmed.to_owned())
        }
        _ => Err((
            key.to_owned(),
            format!("\"{text}\" is not an http(s) URL like http://localhost:11434"),
        )),
    }
}

/// `None` for an absent key, and for a present but empty one (usually an unset `${VAR}`, for
/// which a warning already names the variable), with a warning that the key is left out.
fn non_empty(value: Option<String>, key: &str, warnings: &mut Vec<String>) -> Option<String> {
    match value {
        Some(text) if text.trim().is_empty() => {
            warnings.push(format!("{key} is empty and is left out"));
            None
        }
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<BackendConfigs, (String, String)> {
        let entries: yaml_serde::Mapping = yaml_serde::from_str(yaml).unwrap();
        parse_all(&entries, &mut Vec::new())
    }

    #[test]
    fn predecessor_entries_load_without_a_type() {
        let mut warnings = Vec::new();
        let entries: yaml_serde::Mapping = yaml_serde::from_str(
            "ollama: {enabled: true, host: 'http://gpu:11434/', default_model: qwen3}\n\
             chatgpt: {enabled: false, api_key: sk-1, model: gpt-4.1, base_url: 'http://vllm:8000/v1'}\n\
             claude_desktop: {enabled: true}\n",
        )
        .unwrap();
        let backends = parse_all(&entries, &mut warnings).unwrap();
        assert_eq!(
            backends["ollama"].kind,
            BackendKind::Ollama(OllamaSettings {
                host: "http://gpu:11434".to_owned()
            })
        );
        assert_eq!(backends["ollama"].default_model, "qwen3");
        assert_eq!(backends["chatgpt"].kind.type_name(), "openai");
        assert_eq!(backends["chatgpt"].default_model, "gpt-4.1");
        assert!(!backends["chatgpt"].enabled);
        assert!(!backends.contains_key("claude_desktop"));
        assert!(backends.contains_key("echo"));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("type: anthropic"), "{warnings:?}");
    }

    #[test]
    fn keys_of_another_kind_are_errors() {
        let err = parse("local: {type: openai, host: 'http://x'}").unwrap_err();
        assert_eq!(err.0, "backends.local.host");
        assert!(err.1.contains("type openai"), "{err:?}");
    }

    #[test]
    fn anthropic_needs_a_key_and_an_entry_needs_a_type() {
        assert_eq!(
            parse("claude: {type: anthropic}").unwrap_err().0,
            "backends.claude.api_key"
        );
        assert_eq!(
            parse("mine: {host: x}").unwrap_err().0,
            "backends.mine.type"
        );
        assert!(
            parse("x: {type: gemini}")
                .unwrap_err()
                .1
                .contains("not a backend type")
        );
    }

    #[test]
    fn urls_and_timeouts_are_checked() {
        assert_eq!(
            parse("o: {type: ollama, host: 'localhost:11434'}")
                .unwrap_err()
                .0,
            "backends.o.host"
        );
        assert_eq!(
            parse("o: {type: ollama, timeout_secs: 0}").unwrap_err().0,
            "backends.o.timeout_secs"
        );
        let too_long =
            parse("o: {type: ollama, first_byte_timeout_secs: 18446744073709551615}").unwrap_err();
        assert_eq!(
            too_long,
            (
                "backends.o.first_byte_timeout_secs".to_owned(),
                "must be from 1 to 86400, got 18446744073709551615".to_owned()
            )
        );
        let backends = parse("o: {type: ollama, timeout_secs: 5}").unwrap();
        assert_eq!(backends["o"].timeouts.first_byte, Duration::from_secs(5));
    }

    #[test]
    fn backends_keep_the_file_order_with_the_builtin_echo_last() {
        let names = |yaml: &str| -> Vec<String> {
            parse(yaml)
                .unwrap()
                .iter()
                .map(|(name, _)| name.clone())
                .collect()
        };
        assert_eq!(
            names("zeta: {type: ollama}\nalpha: {type: openai}\n"),
            ["zeta", "alpha", "echo"]
        );
        assert_eq!(
            names("zeta: {type: ollama}\necho: {}\nalpha: {type: openai}\n"),
            ["zeta", "echo", "alpha"]
        );
    }

    #[test]
    fn tool_mode_defaults_to_auto_and_to_prompt_for_echo() {
        let backends = parse(
            "o: {type: ollama}\np: {type: openai, tool_mode: prompt}\necho: {}\n\
             e2: {type: echo, tool_mode: native}",
        )
        .unwrap();
        assert_eq!(backends["o"].tool_mode, ToolMode::Auto);
        assert_eq!(backends["p"].tool_mode, ToolMode::Prompt);
        assert_eq!(backends["echo"].tool_mode, ToolMode::Prompt);
        assert_eq!(backends["e2"].tool_mode, ToolMode::Native);
        assert!(
            parse("o: {type: ollama, tool_mode: json}")
                .unwrap_err()
                .1
                .contains("not a tool mode")
        );
    }

    #[test]
    fn max_connections_is_bounded_and_only_for_networked_kinds() {
        let backends = parse("o: {type: ollama}\np: {type: openai, max_connections: 3}").unwrap();
        assert_eq!(backends["o"].max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(backends["p"].max_connections, 3);
        for bad in ["0", "4097"] {
            let err = parse(&format!("o: {{type: ollama, max_connections: {bad}}}")).unwrap_err();
            assert_eq!(err.0, "backends.o.max_connections");
            assert!(err.1.contains("between 1 and 4096"), "{err:?}");
        }
        assert_eq!(
            parse("echo: {max_connections: 2}").unwrap_err().0,
            "backends.echo.max_connections"
        );
    }

    #[test]
    fn unsupported_params_are_refused_unless_the_entry_drops_them() {
        let backends = parse(
            "o: {type: ollama}\nc: {type: anthropic, api_key: k, drop_unsupported_params: true}",
        )
        .unwrap();
        assert!(!backends["o"].drop_unsupported_params);
        assert!(backends["c"].drop_unsupported_params);
        assert!(!backends["echo"].drop_unsupported_params);
    }

    #[test]
    fn echo_can_be_disabled() {
        let backends = parse("echo: {enabled: false}").unwrap();
        assert!(!backends["echo"].enabled);
    }
}
