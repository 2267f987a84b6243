//! Sampling and generation options: what a client may ask of a model beyond the conversation
//! (temperature, length, stop sequences, output format, tool choice...), in OpenAI's names and
//! shapes, which every front door of lit-mux speaks. Each backend maps them to its wire, or
//! refuses one it cannot honour ([`Unsupported`]) unless its config drops those.
//!
//! Invariants: a [`GenerationOptions`] that passed [`GenerationOptions::check`] holds only
//! values inside OpenAI's ranges; a backend sends no option it was not given (save the length
//! bound Anthropic requires, which its config supplies).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An option outside its range: which one (as the request names it), and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidOption {
    pub option: &'static str,
    pub message: String,
}

impl InvalidOption {
    fn new(option: &'static str, message: impl Into<String>) -> Self {
        Self {
            option,
            message: message.into(),
        }
    }
}

/// Options for one model call; `None` leaves the backend's own default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// The answer's length bound in tokens (OpenAI's `max_completion_tokens` is the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSequences>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// The end user, for the provider's abuse monitoring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// How many answers to produce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
}

/// Stop sequences: OpenAI takes one string or a list; kept as a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "OneOrMany")]
pub struct StopSequences(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for StopSequences {
    fn from(value: OneOrMany) -> Self {
        match value {
            OneOrMany::One(one) => Self(vec![one]),
            OneOrMany::Many(many) => Self(many),
        }
    }
}

/// The answer's format: free text, any JSON object, or JSON following a schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// OpenAI's `json_schema` format: a name, the schema, and whether it is followed strictly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ToolChoiceWire", into = "ToolChoiceWire")]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    /// This function, by name.
    Function(String),
}

/// OpenAI's shapes of `tool_choice`: a mode, or `{"type": "function", "function": {"name"}}`.
#[derive(Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "\"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}"
)]
enum ToolChoiceWire {
    Mode(String),
    Named {
        #[serde(rename = "type")]
        kind: String,
        function: NamedFunction,
    },
}

#[derive(Serialize, Deserialize)]
struct NamedFunction {
    name: String,
}

impl TryFrom<ToolChoiceWire> for ToolChoice {
    type Error = String;

    fn try_from(wire: ToolChoiceWire) -> Result<Self, String> {
        match wire {
            ToolChoiceWire::Mode(mode) => match mode.as_str() {
                "auto" => Ok(Self::Auto),
                "none" => Ok(Self::None),
                "required" => Ok(Self::Required),
                other => Err(format!(
                    "\"{other}\" is not a tool choice: use auto, none, required or a function"
                )),
            },
            ToolChoiceWire::Named { kind, function } if kind == "function" => {
                Ok(Self::Function(function.name))
            }
            ToolChoiceWire::Named { kind, .. } => Err(format!(
                "a tool choice of type \"{kind}\" is not supported: use type function"
            )),
        }
    }
}

impl From<ToolChoice> for ToolChoiceWire {
    fn from(choice: ToolChoice) -> Self {
        match choice {
            ToolChoice::Auto => Self::Mode("auto".to_owned()),
            ToolChoice::None => Self::Mode("none".to_owned()),
            ToolChoice::Required => Self::Mode("required".to_owned()),
            ToolChoice::Function(name) => Self::Named {
                kind: "function".to_owned(),
                function: NamedFunction { name },
            },
        }
    }
}

impl ToolChoice {
    /// OpenAI's JSON for the choice (also Ollama-style servers').
    pub fn openai_json(&self) -> Value {
        serde_json::to_value(ToolChoiceWire::from(self.clone())).unwrap_or(Value::Null)
    }
}

/// Largest `max_tokens`: more than any model's context holds.
pub const MAX_TOKENS: u64 = 100_000_000;
/// Most stop sequences (OpenAI's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest stop sequence, in characters.
pub const MAX_STOP_CHARS: usize = 1000;
/// Longest `user`, in characters (Anthropic's `metadata.user_id` bound).
pub const MAX_USER_CHARS: usize = 256;
/// Largest `top_logprobs` (OpenAI's).
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Largest `n` (OpenAI's).
pub const MAX_N: u32 = 128;
/// Longest name of a JSON schema format or of a chosen tool.
pub const MAX_NAME_CHARS: usize = 256;

impl GenerationOptions {
    /// Every option's name, as clients write it.
    pub const NAMES: [&'static str; 15] = [
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "logprobs",
        "top_logprobs",
        "n",
    ];

    /// The first value outside OpenAI's range, as a message naming the option and the range.
    pub fn check(&self) -> Result<(), InvalidOption> {
        let decimals = [
            ("temperature", self.temperature, 0.0, 2.0),
            ("top_p", self.top_p, 0.0, 1.0),
            ("presence_penalty", self.presence_penalty, -2.0, 2.0),
            ("frequency_penalty", self.frequency_penalty, -2.0, 2.0),
        ];
        for (name, value, min, max) in decimals {
            if let Some(value) = value.filter(|v| !(min..=max).contains(v)) {
                return Err(InvalidOption::new(
                    name,
                    format!("{name} must be from {min} to {max}, got {value}"),
                ));
            }
        }
        if let Some(value) = self.max_tokens.filter(|v| !(1..=MAX_TOKENS).contains(v)) {
            return Err(InvalidOption::new(
                "max_tokens",
                format!("max_tokens must be from 1 to {MAX_TOKENS}, got {value}"),
            ));
        }
        if let Some(StopSequences(stops)) = &self.stop {
            if stops.len() > MAX_STOP_SEQUENCES {
                return Err(InvalidOption::new(
                    "stop",
                    format!(
                        "stop holds at most {MAX_STOP_SEQUENCES} sequences, got {}",
                        stops.len()
                    ),
                ));
            }
            if stops
                .iter()
                .any(|s| s.is_empty() || s.chars().count() > MAX_STOP_CHARS)
            {
                return Err(InvalidOption::new(
                    "stop",
                    format!("each stop sequence must be 1 to {MAX_STOP_CHARS} characters"),
                ));
            }
        }
        if let Some(ResponseFormat::JsonSchema { json_schema }) = &self.response_format {
            let name_ok = (1..=64).contains(&json_schema.name.len())
                && json_schema
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !name_ok {
                return Err(InvalidOption::new(
                    "response_format",
                    "response_format.json_schema.name must be 1 to 64 of a-z A-Z 0-9 _ -"
                        .to_owned(),
                ));
            }
            if json_schema
                .schema
                .as_ref()
                .is_some_and(|schema| !schema.is_object())
            {
                return Err(InvalidOption::new(
                    "response_format",
                    "response_format.json_schema.schema must be an object".to_owned(),
                ));
            }
        }
        if let Some(ToolChoice::Function(name)) = &self.tool_choice
            && (name.is_empty() || name.chars().count() > MAX_NAME_CHARS)
        {
            return Err(InvalidOption::new(
                "tool_choice",
                format!("tool_choice.function.name must be 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        if let Some(user) = self
            .user
            .as_ref()
            .filter(|u| u.chars().count() > MAX_USER_CHARS)
        {
            return Err(InvalidOption::new(
                "user",
                format!(
                    "user must be at most {MAX_USER_CHARS} characters, got {}",
                    user.chars().count()
                ),
            ));
        }
        if let Some(value) = self.top_logprobs {
            if value > MAX_TOP_LOGPROBS {
                return Err(InvalidOption::new(
                    "top_logprobs",
                    format!("top_logprobs must be from 0 to {MAX_TOP_LOGPROBS}, got {value}"),
                ));
            }
            if self.logprobs != Some(true) {
                return Err(InvalidOption::new(
                    "top_logprobs",
                    "top_logprobs needs logprobs: true".to_owned(),
                ));
            }
        }
        if let Some(value) = self.n.filter(|n| !(1..=MAX_N).contains(n)) {
            return Err(InvalidOption::new(
                "n",
                format!("n must be from 1 to {MAX_N}, got {value}"),
            ));
        }
        Ok(())
    }

    /// These options over `defaults`, option by option: a value given here wins.
    pub fn over(self, defaults: &GenerationOptions) -> GenerationOptions {
        let defaults = defaults.clone();
        GenerationOptions {
            temperature: self.temperature.or(defaults.temperature),
            top_p: self.top_p.or(defaults.top_p),
            max_tokens: self.max_tokens.or(defaults.max_tokens),
            stop: self.stop.or(defaults.stop),
            seed: self.seed.or(defaults.seed),
            presence_penalty: self.presence_penalty.or(defaults.presence_penalty),
            frequency_penalty: self.frequency_penalty.or(defaults.frequency_penalty),
            response_format: self.response_format.or(defaults.response_format),
            tool_choice: self.tool_choice.or(defaults.tool_choice),
            parallel_tool_calls: self.parallel_tool_calls.or(defaults.parallel_tool_calls),
            user: self.user.or(defaults.user),
            logprobs: self.logprobs.or(defaults.logprobs),
            top_logprobs: self.top_logprobs.or(defaults.top_logprobs),
            n: self.n.or(defaults.n),
        }
    }

    /// More than one answer asked for.
    pub fn wants_several(&self) -> bool {
        self.n.is_some_and(|n| n > 1)
    }

    /// The options set that change what a model is asked, by name: those a backend must honour
    /// or refuse. Neutral values (`n: 1`, `logprobs: false`, `response_format: text`,
    /// `parallel_tool_calls: true`) ask nothing of a backend that lacks the option.
    pub fn asked(&self) -> Vec<&'static str> {
        let asked = [
            ("temperature", self.temperature.is_some()),
            ("top_p", self.top_p.is_some()),
            ("max_tokens", self.max_tokens.is_some()),
            ("stop", self.stop.is_some()),
            ("seed", self.seed.is_some()),
            ("presence_penalty", self.presence_penalty.is_some()),
            ("frequency_penalty", self.frequency_penalty.is_some()),
            (
                "response_format",
                self.response_format
                    .as_ref()
                    .is_some_and(|f| *f != ResponseFormat::Text),
            ),
            ("tool_choice", self.tool_choice.is_some()),
            (
                "parallel_tool_calls",
                self.parallel_tool_calls == Some(false),
            ),
            ("user", self.user.is_some()),
            ("logprobs", self.logprobs == Some(true)),
            ("top_logprobs", self.top_logprobs.is_some()),
            ("n", self.wants_several()),
        ];
        asked
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect()
    }
}

/// What a backend does with options its wire cannot honour.
#[derive(Debug, Clone, Copy)]
pub struct Unsupported<'a> {
    pub backend: &'a str,
    /// `drop_unsupported_params` of the backend's config.
    pub drop: bool,
}

impl Unsupported<'_> {
    /// Refuses the options of `unsupported` among `asked` ([`GenerationOptions::asked`]), or,
    /// with `drop`, logs them and goes on: the backend's wire has no field for them anyway.
    pub fn refuse(
        &self,
        asked: &[&'static str],
        unsupported: &[&'static str],
    ) -> Result<(), super::BackendError> {
        let given: Vec<&str> = asked
            .iter()
            .copied()
            .filter(|name| unsupported.contains(name))
            .collect();
        if given.is_empty() {
            return Ok(());
        }
        if self.drop {
            tracing::debug!(backend = self.backend, dropped = ?given, "options the backend cannot honour are dropped");
            return Ok(());
        }
        let verb = if given.len() == 1 { "is" } else { "are" };
        Err(super::BackendError::CannotTake {
            backend: self.backend.to_owned(),
            message: format!(
                "{} {verb} not supported by its API (set drop_unsupported_params: true in its \
                 config to drop such options instead)",
                given.join(", ")
            ),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_shapes_are_read_and_written_back() {
        let options: GenerationOptions = serde_json::from_value(json!({
            "stop": "END",
            "tool_choice": {"type": "function", "function": {"name": "add"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}},
        }))
        .unwrap();
        assert_eq!(options.stop, Some(StopSequences(vec!["END".to_owned()])));
        assert_eq!(
            options.tool_choice,
            Some(ToolChoice::Function("add".to_owned()))
        );
        assert_eq!(
            serde_json::to_value(&options).unwrap(),
            json!({
                "stop": ["END"],
                "tool_choice": {"type": "function", "function": {"name": "add"}},
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}},
            })
        );
        let err = serde_json::from_value::<GenerationOptions>(json!({"tool_choice": "sometimes"}))
            .unwrap_err();
        assert!(err.to_string().contains("not a tool choice"), "{err}");
    }

    #[test]
    fn values_outside_openai_ranges_are_refused() {
        let bad = [
            json!({"temperature": 2.5}),
            json!({"stop": ["a", "b", "c", "d", "e"]}),
            json!({"top_logprobs": 3}),
            json!({"logprobs": true, "top_logprobs": 21}),
            json!({"n": 0}),
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "bad name"}}}),
        ];
        for options in bad {
            let parsed: GenerationOptions = serde_json::from_value(options.clone()).unwrap();
            assert!(parsed.check().is_err(), "{options}");
        }
    }

    #[test]
    fn a_message_overrides_the_defaults_option_by_option() {
        let defaults = GenerationOptions {
            temperature: Some(0.1),
            seed: Some(7),
            ..Default::default()
        };
        let message = GenerationOptions {
            temperature: Some(0.9),
            ..Default::default()
        };
        let merged = message.over(&defaults);
        assert_eq!((merged.temperature, merged.seed), (Some(0.9), Some(7)));
    }
}
