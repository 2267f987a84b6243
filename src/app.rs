//! Wiring: the one place that constructs the services (store, backends, MCP hub, chat, metrics)
//! and hands them to the HTTP layer. `cli` parses the arguments and calls [`serve`].

use std::io::Write;
use std::sync::Arc;

use crate::config::{ConfigSource, LoadedConfig};
use crate::http::{self, AppState, ShutdownSignals};
use crate::logging::LogFormat;
use crate::mcp::hub::McpHub;
use crate::mcp::orphan_guard;

/// Why the server could not start; its text is the whole message for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

/// Starts logging and the async runtime, serves until a shutdown signal, and lets the orphan
/// guard go once every MCP child is gone.
pub fn run(loaded: LoadedConfig, log_format: LogFormat) -> Result<(), StartError> {
    // Kept to the end: dropping it writes out the lines still queued.
    let _log_writer = crate::logging::init(loaded.config.server.log_level.as_filter(), log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lit-mux")
        .build()
        .map_err(|err| StartError(format!("cannot start the async runtime: {err}")))?;
    let outcome = runtime.block_on(serve(loaded));
    orphan_guard::shutdown();
    outcome
}

/// How long shutdown waits, once the HTTP server has stopped, for replies that are storing what
/// they produced (their clients are gone, so this is only their last writes).
const REPLIES_AT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// Builds every service from the loaded configuration, serves the API until SIGINT or SIGTERM,
/// then shuts down in order: the HTTP server and the MCP children, the replies still storing,
/// the store.
pub async fn serve(loaded: LoadedConfig) -> Result<(), StartError> {
    match loaded.source {
        ConfigSource::File => tracing::info!(path = %loaded.path.display(), "config loaded"),
        ConfigSource::Defaults => tracing::info!(
            path = %loaded.path.display(),
            "no config file found there; using defaults (lit-mux init writes one)"
        ),
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let config = Arc::new(loaded.config);
    let server = &config.server;
    if server.api_key.is_none() {
        tracing::warn!("no server.api_key set: the API is open to anyone who can reach it");
    }
    if config.mcp.enabled && config.mcp.allowed_commands.is_none() {
        tracing::warn!(
            "mcp.allowed_commands is not set: any key holder can run programs on this machine (POST /mcp/servers)"
        );
    }
    let store = crate::store::open(&config.storage)
        .await
        .map_err(|err| StartError(err.to_string()))?;
    // Questions whose answers were under way when the server last stopped (killed, or cut off
    // at the end of a shutdown) get their ending before anything new is asked.
    match store.interrupt_pending().await {
        Ok(0) => {}
        Ok(count) => tracing::warn!(
            count,
            "messages in flight when lit-mux last stopped are marked interrupted"
        ),
        Err(err) => {
            return Err(StartError(format!(
                "cannot mark interrupted messages: {err}"
            )));
        }
    }
    let backends = crate::backends::BackendRegistry::new(&config.typed_backends)
        .map_err(|err| StartError(err.to_string()))?;
    let signals = ShutdownSignals::install()
        .map_err(|err| StartError(format!("cannot install signal handlers: {err}")))?;
    let listener = tokio::net::TcpListener::bind((server.host.as_str(), server.port))
        .await
        .map_err(|err| {
            StartError(format!(
                "cannot listen on {}:{}: {err}",
                server.host, server.port
            ))
        })?;
    let address = listener
        .local_addr()
        .map_err(|err| StartError(format!("cannot read the listening address: {err}")))?;
    tracing::info!(%address, version = crate::VERSION, "listening");
    // One plain line on stdout, whatever the log format, for scripts and tests to wait on.
    println!("lit-mux {} listening on http://{address}", crate::VERSION);
    let _ = std::io::stdout().flush();

    let limits = http::ServeLimits::from_config(server, crate::descriptor_limit::raise());
    tracing::debug!(max_connections = limits.max_connections, "connection cap");
    orphan_guard::install();
    let mcp = McpHub::new(config.mcp.clone());
    mcp.start_configured(&config.mcp.servers);
    let chat = crate::chat::ChatService::new(
        store.clone(),
        backends.clone(),
        mcp.clone(),
        config.context.max_messages,
    );
    let metrics = http::metrics::Metrics::new(&mcp, &backends);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = http::router(AppState {
        config: Arc::clone(&config),
        mcp: mcp.clone(),
        backends,
        chat: chat.clone(),
        store: store.clone(),
        metrics,
        shutdown: shutdown.clone(),
    });
    let on_shutdown = async {
        shutdown.cancel();
        mcp.shutdown().await;
    };
    http::serve(listener, app, signals, limits, on_shutdown, || {
        chat.interrupt_replies()
    })
    .await;
    // Whatever still runs (its client gone) stops now and marks what it leaves interrupted.
    chat.interrupt_replies();
    chat.finish(REPLIES_AT_SHUTDOWN).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
