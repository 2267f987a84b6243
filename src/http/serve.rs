//! Serving the router on a listener, and graceful shutdown: SIGINT and SIGTERM stop accepting,
//! open requests get a grace period, then every connection is closed and `serve` returns.
//!
//! Invariants: every accepted connection is registered with [`Connections`] (or refused at
//! once), so the cap on connections and the idle timeout hold for all of them from accept on,
//! whatever their protocol; a failed accept (out of descriptors) backs off instead of spinning.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::http::connection_service::ConnectionService;
use crate::http::connections::{CloseReason, Connections, default_max_connections};
use crate::http::self_wake::PollAgainOnSelfWake;

/// How long clients may take, how many may connect, and how long shutdown waits for them.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Longest time a connection may go without a request under way (from accept, between
    /// requests): a request head must be complete within it. Then the connection is closed, so
    /// idle or malicious clients cannot hold connections (and descriptors) forever.
    pub header_read: Duration,
    /// Longest time a request's body may take to arrive after its head; then 408.
    pub body_read: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long shutdown waits for open requests before closing them.
    pub shutdown_grace: Duration,
}

impl ServeLimits {
    /// The limits the config sets; `descriptor_limit` (the soft RLIMIT_NOFILE) gives the default
    /// cap on connections.
    pub fn from_config(server: &ServerConfig, descriptor_limit: u64) -> Self {
        Self {
            header_read: Duration::from_secs(server.header_read_timeout_secs),
            body_read: Duration::from_secs(server.body_read_timeout_secs),
            max_connections: server
                .max_connections
                .unwrap_or_else(|| default_max_connections(descriptor_limit)),
            shutdown_grace: Duration::from_secs(server.shutdown_grace_secs),
        }
    }
}

/// How long, once the grace period is over and `on_grace_end` has cut off the replies still
/// running, their streams get to deliver their final event before their connections are closed.
const FINAL_EVENTS: Duration = Duration::from_secs(2);

/// Serves `app` on `listener` until `signals` fires; then runs `on_shutdown` (stopping the MCP
/// children) while open requests get up to the grace period to finish. Requests still open at
/// its end are cut off by `on_grace_end` (each reply ends with a final event saying so) and get
/// [`FINAL_EVENTS`] to deliver it; then every connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    mut signals: ShutdownSignals,
    limits: ServeLimits,
    on_shutdown: impl Future<Output = ()>,
    on_grace_end: impl FnOnce(),
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's own header timeout covers an HTTP/1 head once hyper reads one; the connection's
    // idle watch below covers the rest (before the protocol is known, HTTP/2).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    builder.http2().timer(TokioTimer::new());
    let open = Connections::new(limits.max_connections);
    let connections = GracefulShutdown::new();
    // Connections still open when the grace period ends are dropped (their sockets close), so
    // that replies streaming to them see their client gone and store what they have.
    let close_connections = tokio_util::sync::CancellationToken::new();
    let connection_tasks = tokio_util::task::TaskTracker::new();

    let signal = loop {
        let (stream, peer) = tokio::select! {
            signal = signals.recv() => break signal,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection aborted before it was accepted.
                    // Back off briefly instead of spinning; the signal still ends the wait.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::select! {
                        signal = signals.recv() => break signal,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let Some(registered) = open.admit() else {
            // Every connection has a request under way: refused at once (closed), so the client
            // can retry rather than wait on a socket nobody reads.
            tracing::debug!(%peer, max_connections = limits.max_connections,
                "connection refused: at server.max_connections and none is idle");
            continue;
        };
        let registered = Arc::new(registered);
        // Small request/response exchanges must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(ConnectionService::new(
            app.clone(),
            Arc::clone(&registered),
            limits.body_read,
        ));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = PollAgainOnSelfWake::new(connections.watch(connection));
        let close = close_connections.clone();
        connection_tasks.spawn(async move {
            tokio::select! {
                result = connection => if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                },
                () = close.cancelled() => {}
                reason = registered.closing(limits.header_read) => match reason {
                    CloseReason::IdleTimeout => tracing::debug!(%peer, "idle connection closed"),
                    CloseReason::Evicted => tracing::debug!(
                        %peer, "idle connection closed to make room for a new one"
                    ),
                },
            }
        });
    };

    tracing::info!(signal, "shutting down");
    drop(listener);
    let drain = async {
        let drained = connections.shutdown();
        tokio::pin!(drained);
        if tokio::time::timeout(limits.shutdown_grace, &mut drained)
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!(
            grace_secs = limits.shutdown_grace.as_secs(),
            "replies still running after the shutdown grace period are interrupted"
        );
        on_grace_end();
        if tokio::time::timeout(FINAL_EVENTS, drained).await.is_err() {
            tracing::warn!("requests still open after their final events were closed");
        }
    };
    tokio::join!(drain, on_shutdown);
    close_connections.cancel();
    connection_tasks.close();
    connection_tasks.wait().await;
}

/// SIGINT and SIGTERM handlers. Installed eagerly, before the server announces itself, so that a
/// signal sent as soon as the address is printed already means "shut down gracefully".
pub struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Must be called inside the tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves with the name of the first signal received.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
