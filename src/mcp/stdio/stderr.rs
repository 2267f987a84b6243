//! A child's stderr: always drained, so the child never blocks writing it, into a bounded ring
//! that `/mcp/servers/{name}/logs` and error messages read.
//!
//! A line longer than [`STDERR_LINE_BYTES`] keeps its first part, then `… [truncated, N bytes]`
//! (N the whole line's length), so one huge line neither fills the ring nor vanishes from it.
//! Bytes reach the ring as they arrive, before their line ends, so a child's last words show
//! even when it never ends the line.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::process::ChildStderr;
use tokio_util::sync::CancellationToken;

/// How much of a child's stderr is kept.
pub(super) const STDERR_RING_BYTES: usize = 64 * 1024;
/// How much of one line is kept: a quarter of the ring, so the ring always holds whole lines.
pub(super) const STDERR_LINE_BYTES: usize = 16 * 1024;
/// How many characters of a line go into lit-mux's own (debug) log.
const LOGGED_LINE_CHARS: usize = 500;

/// Reads stderr into the ring until EOF or `io_stop`; logs each line at debug level.
pub(super) async fn drain_stderr(
    stderr: ChildStderr,
    ring: Arc<StderrRing>,
    name: String,
    io_stop: CancellationToken,
    done: CancellationToken,
) {
    let mut stderr = stderr;
    let mut buffer = vec![0u8; 8192];
    let mut lines = LineCutter::new(STDERR_LINE_BYTES, tracing::enabled!(tracing::Level::DEBUG));
    loop {
        let read = tokio::select! {
            read = stderr.read(&mut buffer) => read,
            () = io_stop.cancelled() => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                ring.push(&lines.cut(&buffer[..n], &name));
            }
        }
    }
    ring.push(&lines.finish(&name));
    done.cancel();
}

/// Cuts every line of a byte stream to its first `limit` bytes, and marks the cut.
struct LineCutter {
    limit: usize,
    /// Bytes of the current line seen so far, kept or not.
    current: usize,
    /// The start of the current line, for the debug log (`None`: not logging).
    logged: Option<Vec<u8>>,
}

impl LineCutter {
    fn new(limit: usize, log: bool) -> Self {
        Self {
            limit,
            current: 0,
            logged: log.then(Vec::new),
        }
    }

    /// What of `chunk` the ring keeps: all of it while no line in it goes past the limit.
    fn cut<'a>(&mut self, chunk: &'a [u8], name: &str) -> Cow<'a, [u8]> {
        let last_newline = chunk.iter().rposition(|&b| b == b'\n');
        let longest = chunk
            .split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, line)| {
                if i == 0 {
                    self.current + line.len()
                } else {
                    line.len()
                }
            })
            .max()
            .unwrap_or(0);
        if longest <= self.limit && self.logged.is_none() {
            self.current = match last_newline {
                Some(at) => chunk.len() - at - 1,
                None => self.current + chunk.len(),
            };
            return Cow::Borrowed(chunk);
        }
        let mut kept = Vec::with_capacity(chunk.len().min(self.limit + 64));
        let mut segments = chunk.split(|&b| b == b'\n').peekable();
        while let Some(segment) = segments.next() {
            self.take(segment, &mut kept);
            if segments.peek().is_some() {
                self.end_line(&mut kept, name);
                kept.push(b'\n');
            }
        }
        Cow::Owned(kept)
    }

    /// What is left to keep at EOF: the mark of a cut last line without its newline.
    fn finish(&mut self, name: &str) -> Vec<u8> {
        let mut kept = Vec::new();
        if self.current > 0 {
            self.end_line(&mut kept, name);
        }
        kept
    }

    fn take(&mut self, segment: &[u8], kept: &mut Vec<u8>) {
        let room = self.limit.saturating_sub(self.current);
        kept.extend_from_slice(&segment[..segment.len().min(room)]);
        if let Some(logged) = self.logged.as_mut() {
            let room = (LOGGED_LINE_CHARS * 4).saturating_sub(logged.len());
            logged.extend_from_slice(&segment[..segment.len().min(room)]);
        }
        self.current += segment.len();
    }

    fn end_line(&mut self, kept: &mut Vec<u8>, name: &str) {
        let marker = if self.current > self.limit {
            format!("… [truncated, {} bytes]", self.current)
        } else {
            String::new()
        };
        kept.extend_from_slice(marker.as_bytes());
        if let Some(logged) = self.logged.as_mut() {
            let line = String::from_utf8_lossy(logged);
            tracing::debug!(server = %name, "stderr: {}{marker}", truncate_chars(&line, LOGGED_LINE_CHARS));
            logged.clear();
        }
        self.current = 0;
    }
}

/// The last bytes a child wrote to stderr.
#[derive(Debug)]
pub struct StderrRing {
    bytes: Mutex<VecDeque<u8>>,
    capacity: usize,
}

impl StderrRing {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            bytes: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    pub(super) fn push(&self, chunk: &[u8]) {
        let mut bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let keep = chunk.len().min(self.capacity);
        bytes.extend(&chunk[chunk.len() - keep..]);
        let excess = bytes.len().saturating_sub(self.capacity);
        bytes.drain(..excess);
    }

    /// Everything kept, starting at a line boundary when the ring has wrapped.
    pub fn text(&self) -> String {
        let bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let (front, back) = bytes.as_slices();
        let mut all = Vec::with_capacity(bytes.len());
        all.extend_from_slice(front);
        all.extend_from_slice(back);
        let start = if bytes.len() >= self.capacity {
            all.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1)
        } else {
            0
        };
        String::from_utf8_lossy(&all[start..]).into_owned()
    }

    /// The last `lines` non-empty lines, joined with " | ", each cut to 300 characters.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.text();
        let mut last: Vec<&str> = text
            .lines()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(lines)
            .collect();
        last.reverse();
        last.iter()
            .map(|l| truncate_chars(l.trim_end(), 300))
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

pub(super) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stderr_ring_keeps_the_end_from_a_line_start() {
        let ring = StderrRing::new(16);
        ring.push(b"first line\nsecond line\nthird\n");
        assert_eq!(ring.text(), "third\n");
        assert_eq!(ring.tail(5), "third");
        let small = StderrRing::new(1024);
        small.push(b"a\n\nb\nc\n");
        assert_eq!(small.tail(2), "b | c");
    }

    #[test]
    fn a_long_line_keeps_its_start_and_says_how_long_it_was() {
        let mut cutter = LineCutter::new(4, false);
        let mut kept = Vec::new();
        for chunk in [&b"ab"[..], b"cdefg", b"h\nok\nxyz12", b"345"] {
            kept.extend_from_slice(&cutter.cut(chunk, "test"));
        }
        kept.extend_from_slice(&cutter.finish("test"));
        assert_eq!(
            String::from_utf8_lossy(&kept),
            "abcd… [truncated, 8 bytes]\nok\nxyz1… [truncated, 8 bytes]"
        );
    }
}
