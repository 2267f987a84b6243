//! Writes lines to a pipe in the order they were handed over, whichever order their futures run.
//!
//! rmcp spawns every outgoing message as its own task, so two messages sent one after the other
//! (a `tools/call` and, a moment later, its `notifications/cancelled`) may be written in either
//! order if each send writes its own line when its task happens to run. A cancellation that
//! overtakes its request cancels nothing. Here the line is queued synchronously when the send is
//! made, and whichever send gets the pipe first writes every line queued before its own: the
//! pipe sees the lines in send order, with no extra task in between.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The pipe is closed (stop sequence, write error or a child that stopped reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the MCP server's stdin is closed")]
pub struct PipeClosed;

/// Lines queued, not yet taken by a writer.
#[derive(Default)]
struct Queue {
    lines: VecDeque<Vec<u8>>,
    /// Sequence number of the last line queued (the first line is 1).
    queued: u64,
}

/// The pipe, and how far down the queue it has got.
struct Pipe<W> {
    writer: Option<W>,
    /// Sequence number of the last line taken from the queue (written, or dropped once closed).
    taken: u64,
    /// Sequence number of the first line that was not written, once the pipe closed.
    closed_at: Option<u64>,
}

/// A shared, ordered writer of lines; cheap to clone.
pub struct OrderedWriter<W> {
    queue: Arc<Mutex<Queue>>,
    pipe: Arc<tokio::sync::Mutex<Pipe<W>>>,
    /// Cancelled to close the pipe: a write stuck on a full pipe gives up at once.
    close: CancellationToken,
}

impl<W> Clone for OrderedWriter<W> {
    fn clone(&self) -> Self {
        Self {
            queue: Arc::clone(&self.queue),
            pipe: Arc::clone(&self.pipe),
            close: self.close.clone(),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> OrderedWriter<W> {
    /// A writer over `writer` that closes it when `close` is cancelled.
    pub fn new(writer: W, close: CancellationToken) -> Self {
        Self {
            queue: Arc::default(),
            pipe: Arc::new(tokio::sync::Mutex::new(Pipe {
                writer: Some(writer),
                taken: 0,
                closed_at: None,
            })),
            close,
        }
    }

    /// Queues `line` now and returns the future that completes once it is written. The line's
    /// place in the pipe is fixed by this call, not by when the future runs.
    pub fn send(
        &self,
        line: Vec<u8>,
    ) -> impl Future<Output = Result<(), PipeClosed>> + Send + 'static {
        let seq = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.lines.push_back(line);
            queue.queued += 1;
            queue.queued
        };
        let this = self.clone();
        async move { this.write_through(seq).await }
    }

    /// Writes the queued lines up to `seq` (earlier sends may have written it already).
    async fn write_through(&self, seq: u64) -> Result<(), PipeClosed> {
        let mut pipe = self.pipe.lock().await;
        while pipe.taken < seq {
            let line = self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .lines
                .pop_front();
            pipe.taken += 1;
            let Some(line) = line else { break };
            let Some(writer) = pipe.writer.as_mut() else {
                continue;
            };
            let written = tokio::select! {
                written = async {
                    writer.write_all(&line).await?;
                    writer.flush().await
                } => written.is_ok(),
                () = self.close.cancelled() => false,
            };
            if !written {
                // Dropping the pipe closes it: the child sees EOF.
                pipe.writer = None;
                pipe.closed_at = Some(pipe.taken);
            }
        }
        match pipe.closed_at {
            Some(first_lost) if first_lost <= seq => Err(PipeClosed),
            _ => Ok(()),
        }
    }

    /// Closes the pipe: lines not yet written are dropped and their sends fail.
    pub async fn close(&self) {
        let mut pipe = self.pipe.lock().await;
        if pipe.writer.take().is_some() {
            pipe.closed_at = Some(pipe.taken + 1);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_reach_the_pipe_in_send_order_whatever_order_the_sends_run() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let writer = OrderedWriter::new(ours, CancellationToken::new());
        let sends: Vec<_> = (0..200)
            .map(|i| writer.send(format!("{i}\n").into_bytes()))
            .collect();
        // Run them newest first, each in its own task, as rmcp may.
        let tasks: Vec<_> = sends.into_iter().rev().map(tokio::spawn).collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(()));
        }
        drop(writer);
        let mut text = String::new();
        theirs.read_to_string(&mut text).await.unwrap();
        let expected: String = (0..200).map(|i| format!("{i}\n")).collect();
        assert_eq!(text, expected);
    }

    #[tokio::test]
    async fn after_close_sends_fail_and_earlier_ones_still_succeed() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let writer = OrderedWriter::new(ours, CancellationToken::new());
        assert_eq!(writer.send(b"first\n".to_vec()).await, Ok(()));
        let pending = writer.send(b"second\n".to_vec());
        writer.close().await;
        assert_eq!(pending.await, Err(PipeClosed));
        assert_eq!(writer.send(b"third\n".to_vec()).await, Err(PipeClosed));
        drop(writer);
        let mut text = String::new();
        theirs.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "first\n");
    }

    #[tokio::test]
    async fn a_pipe_nobody_reads_is_given_up_when_closing() {
        let (ours, _theirs) = tokio::io::duplex(8);
        let close = CancellationToken::new();
        let writer = OrderedWriter::new(ours, close.clone());
        let stuck = tokio::spawn(writer.send(vec![b'x'; 1024]));
        let queued_behind = writer.send(b"later\n".to_vec());
        close.cancel();
        assert_eq!(stuck.await.unwrap(), Err(PipeClosed));
        assert_eq!(queued_behind.await, Err(PipeClosed));
    }
}
