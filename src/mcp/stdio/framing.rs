//! The stdio framing of MCP: one JSON-RPC message per line on the child's stdin and stdout, and
//! the rmcp transport made of the two pipes.
//!
//! A child's stdout is untrusted: lines that are not JSON-RPC are skipped (and their logging is
//! rate-limited), and a line longer than `mcp.max_message_bytes` is never held in memory.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::service::RoleClient;
use rmcp::transport::Transport;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

use super::ordered_writer::{OrderedWriter, PipeClosed};
use super::stderr::truncate_chars;

/// Reads newline-delimited JSON-RPC from stdout. Lines that are not JSON-RPC are logged and
/// skipped. A line longer than `max_bytes` is never held in memory: it is skipped as it streams
/// by, and the request it answers (its id is looked for at both ends) fails clearly.
///
/// All state lives in the struct, so [`next_message`](Self::next_message) is cancel-safe: rmcp
/// polls it inside a `select!`.
pub(super) struct StdoutReader {
    reader: BufReader<ChildStdout>,
    line: Vec<u8>,
    oversize: Option<OversizeLine>,
    max_bytes: usize,
    name: String,
    skipped: SkippedLines,
}

impl StdoutReader {
    pub(super) fn new(stdout: ChildStdout, max_bytes: usize, name: String) -> Self {
        Self {
            reader: BufReader::with_capacity(64 * 1024, stdout),
            line: Vec::new(),
            oversize: None,
            max_bytes,
            name,
            skipped: SkippedLines::default(),
        }
    }

    /// The next message, or `None` at EOF or on a read error.
    async fn next_message(&mut self) -> Option<ServerJsonRpcMessage> {
        loop {
            let buffer = match self.reader.fill_buf().await {
                Ok(buffer) if !buffer.is_empty() => buffer,
                _ => return None,
            };
            let (chunk, line_ends) = match buffer.iter().position(|&b| b == b'\n') {
                Some(end) => (&buffer[..end], true),
                None => (buffer, false),
            };
            match &mut self.oversize {
                Some(big) => big.push(chunk),
                None if self.line.len() + chunk.len() > self.max_bytes => {
                    let mut big = OversizeLine::new(&self.line);
                    big.push(chunk);
                    self.oversize = Some(big);
                    self.line = Vec::new();
                }
                None => self.line.extend_from_slice(chunk),
            }
            let consumed = chunk.len() + usize::from(line_ends);
            self.reader.consume(consumed);
            if !line_ends {
                continue;
            }
            let message = match self.oversize.take() {
                Some(big) => big.into_error_response(&self.name, self.max_bytes),
                None => parse_message(&self.line, &self.name, &mut self.skipped),
            };
            self.line.clear();
            if message.is_some() {
                return message;
            }
        }
    }
}

impl Drop for StdoutReader {
    fn drop(&mut self) {
        self.skipped.report(&self.name);
    }
}

/// Skipped stdout lines logged one by one per minute; the rest are counted.
const SKIPPED_LINES_LOGGED_PER_MINUTE: u32 = 20;
const SKIPPED_LINES_WINDOW: Duration = Duration::from_secs(60);

/// Keeps a child that writes junk on stdout without end from writing lit-mux's log without end.
struct SkippedLines {
    window_start: Instant,
    logged: u32,
    unlogged: u64,
}

impl Default for SkippedLines {
    fn default() -> Self {
        Self {
            window_start: Instant::now(),
            logged: 0,
            unlogged: 0,
        }
    }
}

impl SkippedLines {
    /// Whether one more skipped line may be logged.
    fn admit(&mut self, name: &str) -> bool {
        if self.window_start.elapsed() >= SKIPPED_LINES_WINDOW {
            self.report(name);
            *self = Self::default();
        }
        if self.logged < SKIPPED_LINES_LOGGED_PER_MINUTE {
            self.logged += 1;
            return true;
        }
        if self.unlogged == 0 {
            tracing::warn!(
                server = %name,
                "more stdout lines that are not JSON-RPC messages: counted, not logged, until the minute is over"
            );
        }
        self.unlogged += 1;
        false
    }

    /// Logs how many lines were skipped without a line of their own, if any.
    fn report(&mut self, name: &str) {
        if self.unlogged > 0 {
            tracing::warn!(
                server = %name,
                lines = self.unlogged,
                "skipped stdout lines that are not JSON-RPC messages (not logged one by one)"
            );
            self.unlogged = 0;
        }
    }
}

fn parse_message(
    line: &[u8],
    name: &str,
    skipped: &mut SkippedLines,
) -> Option<ServerJsonRpcMessage> {
    let text = line.trim_ascii();
    if text.is_empty() {
        return None;
    }
    match serde_json::from_slice::<ServerJsonRpcMessage>(text) {
        Ok(message) => Some(message),
        Err(_) if !skipped.admit(name) => None,
        Err(err) => {
            tracing::warn!(
                server = %name,
                error = %err,
                "skipping a stdout line that is not a JSON-RPC message: {}",
                truncate_chars(&String::from_utf8_lossy(text), 200)
            );
            None
        }
    }
}

/// The ends of a line too long to keep.
struct OversizeLine {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: usize,
}

const OVERSIZE_KEPT: usize = 4096;

impl OversizeLine {
    fn new(start: &[u8]) -> Self {
        let mut line = Self {
            head: Vec::with_capacity(OVERSIZE_KEPT),
            tail: VecDeque::with_capacity(OVERSIZE_KEPT),
            total: 0,
        };
        line.push(start);
        line
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len();
        let room = OVERSIZE_KEPT.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        let keep = bytes.len().min(OVERSIZE_KEPT);
        self.tail.extend(&bytes[bytes.len() - keep..]);
        while self.tail.len() > OVERSIZE_KEPT {
            self.tail.pop_front();
        }
    }

    /// An error response for the request this line answered, so that the caller fails at once.
    fn into_error_response(self, name: &str, max_bytes: usize) -> Option<ServerJsonRpcMessage> {
        let tail: Vec<u8> = self.tail.into_iter().collect();
        let id = find_response_id(&self.head, &tail);
        tracing::warn!(
            server = %name,
            bytes = self.total,
            limit = max_bytes,
            id = ?id,
            "skipped a message larger than mcp.max_message_bytes"
        );
        let id = id?;
        let response = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": -32603,
                "message": format!(
                    "the server's response is larger than mcp.max_message_bytes ({} bytes > {max_bytes}); it was discarded",
                    self.total
                ),
            },
        });
        serde_json::from_value(response).ok()
    }
}

/// Finds the `"id"` of a JSON-RPC response from the ends of its text: members before
/// `"result"`/`"error"` at the start, or the last `"id"` at the end.
fn find_response_id(head: &[u8], tail: &[u8]) -> Option<serde_json::Value> {
    let head_text = String::from_utf8_lossy(head);
    let body_start = ["\"result\"", "\"error\""]
        .iter()
        .filter_map(|key| head_text.find(key))
        .min()
        .unwrap_or(head_text.len());
    if let Some(id) = id_after_key(&head_text[..body_start], false) {
        return Some(id);
    }
    id_after_key(&String::from_utf8_lossy(tail), true)
}

fn id_after_key(text: &str, last: bool) -> Option<serde_json::Value> {
    let positions: Vec<usize> = text.match_indices("\"id\"").map(|(i, _)| i).collect();
    let ordered: Box<dyn Iterator<Item = &usize>> = if last {
        Box::new(positions.iter().rev())
    } else {
        Box::new(positions.iter())
    };
    for &position in ordered {
        let rest = text[position + 4..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let mut values =
            serde_json::Deserializer::from_str(rest.trim_start()).into_iter::<serde_json::Value>();
        if let Some(Ok(value)) = values.next()
            && (value.is_number() || value.is_string())
        {
            return Some(value);
        }
    }
    None
}

/// The rmcp transport over the child's stdin and stdout.
pub(super) struct ChildTransport {
    pub(super) stdout: StdoutReader,
    /// Shared with send futures, which rmcp runs concurrently; keeps their lines in send order.
    pub(super) stdin: OrderedWriter<ChildStdin>,
    pub(super) io_stop: CancellationToken,
    /// Cancelled when stdout ends (EOF or a read error) or a write to stdin fails.
    pub(super) pipe_lost: CancellationToken,
}

impl Transport<RoleClient> for ChildTransport {
    type Error = PipeClosed;

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        // Serialised and queued here, synchronously: the order of sends is the order on the pipe.
        let queued = serde_json::to_vec(&item).map(|mut line| {
            line.push(b'\n');
            self.stdin.send(line)
        });
        let pipe_lost = self.pipe_lost.clone();
        async move {
            let written = match queued {
                Ok(written) => written.await,
                Err(_) => return Err(PipeClosed),
            };
            if written.is_err() {
                pipe_lost.cancel();
            }
            written
        }
    }

    async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        tokio::select! {
            message = self.stdout.next_message() => {
                if message.is_none() {
                    self.pipe_lost.cancel();
                }
                message
            }
            () = self.io_stop.cancelled() => None,
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.stdin.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_ids_are_found_at_either_end() {
        let head = br#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"id":7,"text":"xxxx"#;
        assert_eq!(
            find_response_id(head, b"xxxx\"}]}}"),
            Some(serde_json::json!(42))
        );
        let head = br#"{"result":{"content":[{"id":7,"text":"xxxx"#;
        let tail = br#"xxxx"}]},"jsonrpc":"2.0","id":"req-9"}"#;
        assert_eq!(
            find_response_id(head, tail),
            Some(serde_json::json!("req-9"))
        );
        assert_eq!(find_response_id(b"xxxx", b"xxxx"), None);
    }

    #[test]
    fn oversize_lines_keep_only_their_ends() {
        let mut line = OversizeLine::new(b"{\"id\":1,");
        for _ in 0..1000 {
            line.push(&[b'x'; 1000]);
        }
        assert_eq!(line.total, 1_000_008);
        assert_eq!(line.head.len(), OVERSIZE_KEPT);
        assert_eq!(line.tail.len(), OVERSIZE_KEPT);
    }
}
