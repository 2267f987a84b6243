//! What the store keeps and hands out, independent of any database: sessions, their messages,
//! the lean rows the context builder reads, and a page of a listing.

use serde_json::{Map, Value};

/// A session as the API shows it (the predecessor's `SessionResponse`).
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub name: Option<String>,
    pub backends: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub metadata: Map<String, Value>,
    /// Default generation options of its messages (`GenerationOptions` as JSON, only the
    /// options set).
    pub options: Map<String, Value>,
    pub message_count: i64,
}

impl Session {
    /// A session created now, with a fresh id and no messages yet.
    pub fn new(
        name: Option<&str>,
        backends: &[String],
        metadata: &Map<String, Value>,
        options: &Map<String, Value>,
    ) -> Self {
        let now = now();
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.map(str::to_owned),
            backends: backends.to_vec(),
            created_at: now.clone(),
            updated_at: now,
            metadata: metadata.clone(),
            options: options.clone(),
            message_count: 0,
        }
    }
}

/// A message as the API shows it (the predecessor's `MessageResponse`).
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub content: String,
    pub role: String,
    pub backend: Option<String>,
    pub model: Option<String>,
    pub timestamp: String,
    pub metadata: Map<String, Value>,
}

impl Message {
    /// The message as it is stored (fresh id, timestamp now), not stored yet: a caller knows
    /// its id before the write, and a stateless exchange builds its steps this way only.
    pub fn unsaved(message: NewMessage<'_>) -> Self {
        Self {
            // Time-ordered (UUIDv7): each append goes to the last leaf of the id index instead of
            // a random one, so a batch of rows shares its pages (1.9 instead of 3.1 WAL pages a
            // row in batches of 16, BENCHMARKS.md), and a large database reads no cold index
            // page per message.
            id: uuid::Uuid::now_v7().to_string(),
            content: message.content.to_owned(),
            role: message.role.to_owned(),
            backend: message.backend.map(str::to_owned),
            model: message.model.map(str::to_owned),
            timestamp: now(),
            metadata: message.metadata,
        }
    }
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub role: &'a str,
    pub content: &'a str,
    pub backend: Option<&'a str>,
    pub model: Option<&'a str>,
    pub metadata: Map<String, Value>,
}

/// A message as the context builder needs it: no metadata to decode.
#[derive(Debug, Clone)]
pub struct ContextMessage {
    pub role: String,
    pub content: String,
    pub backend: Option<String>,
    /// The user's call failed (metadata `status` is `failed`).
    pub failed: bool,
    /// The user's call was cut off while under way (metadata `status` is `interrupted`): the
    /// client left, or the server stopped.
    pub interrupted: bool,
    /// For a step of a tool loop, its metadata as JSON text: for a tool result (any mode), the
    /// tool, whether it failed and which call it answers; for an answer of a native loop
    /// (metadata `tool_mode` is `native`), its calls.
    pub tool_step: Option<String>,
}

/// Which part of a listing to return: from `offset`, at most `limit` items (all when `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Page {
    pub limit: Option<u64>,
    pub offset: u64,
}

/// Now, as stored: RFC 3339 UTC with microseconds and `+00:00`, which Python's
/// `datetime.fromisoformat` reads before 3.11 too (it refuses `Z` there). Fixed width, so text
/// order is time order.
fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// A stored timestamp as the API shows it: rows written before `+00:00` end in `Z`, the same
/// instant. Their order among newer rows holds as stored: both forms share the fixed-width
/// prefix up to the microseconds, which alone decides between different instants.
pub(crate) fn with_utc_offset(mut timestamp: String) -> String {
    if timestamp.ends_with('Z') {
        timestamp.pop();
        timestamp.push_str("+00:00");
    }
    timestamp
}
