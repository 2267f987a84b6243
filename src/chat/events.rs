//! What a reply emits as it is produced, and where it goes: a [`Sink`].
//!
//! A streamed reply's events go to the client through a bounded channel, so that a slow client
//! slows the backend down instead of making lit-mux buffer the answer; a reply the client waits
//! for whole sends its events nowhere, and its final answer is the loop's result. Either way
//! the sink says when the client has left, which cancels whatever the reply is waiting on.

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ChatError, Interruption};
use crate::backends::BackendError;
use crate::store::Message;

/// Events in flight between a backend and a slow client, per stream.
pub(crate) const EVENT_BUFFER: usize = 64;

/// One event of a streamed reply. Every event names its backend, so that the interleaved events
/// of a broadcast can be told apart.
#[derive(Debug)]
pub enum ReplyEvent {
    /// More text of the answer.
    Delta { backend: String, text: String },
    /// The model called a tool; `server` is `None` when no server has the tool, and `tool` is
    /// then the name the model wrote.
    ToolCall {
        backend: String,
        server: Option<String>,
        tool: String,
        arguments: Value,
    },
    /// The tool's result, as fed back to the model.
    ToolResult {
        backend: String,
        server: Option<String>,
        tool: String,
        content: String,
        is_error: bool,
        duration_ms: u64,
    },
    /// The answer is complete and stored: the stored message.
    Done(Message),
    /// The reply failed; what it left is stored and marked.
    Error { backend: String, error: ChatError },
}

impl ReplyEvent {
    /// The `error` event of `backend`'s failure.
    pub(crate) fn failure(backend: &str, err: BackendError) -> Self {
        Self::Error {
            backend: backend.to_owned(),
            error: ChatError::Backend(err),
        }
    }
}

/// The client has left: nobody receives events any more.
#[derive(Debug)]
pub(crate) struct ClientGone;

/// Where a reply's events go. Each also holds the service's stopping token: the reply stops
/// as if its client had left when the server stops, and [`interruption`](Self::interruption)
/// tells the two apart.
pub(crate) enum Sink {
    /// To a client receiving them as they come: the model's answers are streamed.
    Stream(mpsc::Sender<ReplyEvent>, CancellationToken),
    /// Nowhere: the client waits for the final answer, and the model answers whole. The first
    /// token is cancelled when the client leaves (a child of the second: also when the server
    /// stops).
    Collect(CancellationToken, CancellationToken),
}

impl Sink {
    /// Resolves once the client has left or the server is stopping.
    pub(crate) async fn closed(&self) {
        match self {
            Self::Stream(events, stopping) => tokio::select! {
                () = events.closed() => {}
                () = stopping.cancelled() => {}
            },
            Self::Collect(left, _) => left.cancelled().await,
        }
    }

    /// Why the reply was cut off, once [`closed`](Self::closed) resolved.
    pub(crate) fn interruption(&self) -> Interruption {
        let (Self::Stream(_, stopping) | Self::Collect(_, stopping)) = self;
        if stopping.is_cancelled() {
            Interruption::ShuttingDown
        } else {
            Interruption::ClientLeft
        }
    }

    /// Sends the event `make` builds (only built for a stream); the server stopping counts as
    /// the client gone.
    pub(crate) async fn send(&self, make: impl FnOnce() -> ReplyEvent) -> Result<(), ClientGone> {
        match self {
            Self::Stream(_, stopping) if stopping.is_cancelled() => Err(ClientGone),
            Self::Stream(events, _) => events.send(make()).await.map_err(|_| ClientGone),
            Self::Collect(..) => Ok(()),
        }
    }

    /// Why what a failed reply left is incomplete: the interruption, when the reply was cut
    /// off before the failure; else the failure.
    pub(crate) fn reason(&self, err: &dyn std::fmt::Display) -> String {
        match self {
            Self::Collect(left, _) if left.is_cancelled() => self.interruption().to_string(),
            _ => err.to_string(),
        }
    }
}
