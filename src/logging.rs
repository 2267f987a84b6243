//! Logging: tracing to stderr through a bounded queue, text or JSON.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
/// How log lines are written.
pub enum LogFormat {
    Text,
    Json,
}

/// Log lines queued for stderr at most (a few hundred KiB); beyond that, new lines are dropped.
const LOG_LINES_QUEUED: usize = 4096;

/// Counts the log lines dropped because the queue was full.
static DROPPED_LOG_LINES: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Log lines dropped since the start because stderr did not keep up (`/metrics`).
pub fn dropped_log_lines() -> u64 {
    DROPPED_LOG_LINES
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Logs go to stderr through a queue and a thread of their own: a stderr that nobody reads (a
/// full pipe, a stalled log collector) must never stop the server, as a blocking write from a
/// runtime thread would once the pipe's 64 KiB are full. When the queue is full, lines are lost
/// rather than waited for.
/// Logs to stderr at the configured level; `RUST_LOG`, when set, overrides it. The returned
/// guard writes out the lines still queued when dropped.
pub fn init(level: &str, format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_LINES_QUEUED)
        .thread_name("lit-mux-log")
        .finish(std::io::stderr());
    let _ = DROPPED_LOG_LINES.set(writer.error_counter());
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(default_directives(level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    // A second initialisation (only possible in tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}

/// rmcp logs several INFO lines per MCP session and per child (service started, initialized,
/// stopped); at `info` that drowns lit-mux's own lines, so below `debug` it only reports problems.
fn default_directives(level: &str) -> String {
    match level {
        "info" => "info,rmcp=warn".to_owned(),
        _ => level.to_owned(),
    }
}
