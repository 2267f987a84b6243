//! Serving the router on a listener, and graceful shutdown: SIGINT and SIGTERM stop accepting,
//! open requests get a grace period, then every connection is closed and `serve` returns.

use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::http::self_wake::PollAgainOnSelfWake;

/// How long to serve and how long to wait for clients.
#[derive(Debug, Clone, Copy)]
pub struct ServeTimeouts {
    /// Longest time a client may take to send a request's headers; then its connection is
    /// closed, so idle or malicious clients cannot hold connections (and descriptors) forever.
    pub header_read: Duration,
    /// How long shutdown waits for open requests before closing them.
    pub shutdown_grace: Duration,
}

impl ServeTimeouts {
    pub fn from_config(server: &ServerConfig) -> Self {
        Self {
            header_read: Duration::from_secs(server.header_read_timeout_secs),
            shutdown_grace: Duration::from_secs(server.shutdown_grace_secs),
        }
    }
}

/// Serves `app` on `listener` until `signals` fires; then runs `on_shutdown` (stopping the MCP
/// children) while open requests get up to the grace period to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    mut signals: ShutdownSignals,
    timeouts: ServeTimeouts,
    on_shutdown: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    builder.http2().timer(TokioTimer::new());
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
        // Small request/response exchanges must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
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
            }
        });
    };

    tracing::info!(signal, "shutting down");
    drop(listener);
    let drain = async {
        tokio::select! {
            () = connections.shutdown() => {}
            () = tokio::time::sleep(timeouts.shutdown_grace) => tracing::warn!(
                grace_secs = timeouts.shutdown_grace.as_secs(),
                "requests still open after the shutdown grace period were closed"
            ),
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
