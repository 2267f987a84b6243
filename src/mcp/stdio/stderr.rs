//! A child's stderr: always drained, so the child never blocks writing it, into a bounded ring
//! that `/mcp/servers/{name}/logs` and error messages read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::process::ChildStderr;
use tokio_util::sync::CancellationToken;

/// How much of a child's stderr is kept.
pub(super) const STDERR_RING_BYTES: usize = 64 * 1024;

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
    loop {
        let read = tokio::select! {
            read = stderr.read(&mut buffer) => read,
            () = io_stop.cancelled() => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = &buffer[..n];
                if tracing::enabled!(tracing::Level::DEBUG) {
                    for line in String::from_utf8_lossy(chunk).lines() {
                        tracing::debug!(server = %name, "stderr: {}", truncate_chars(line, 500));
                    }
                }
                ring.push(chunk);
            }
        }
    }
    done.cancel();
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
}
