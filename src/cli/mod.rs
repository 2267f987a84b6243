//! The command line: clap definitions, `init` and `start`, and the client commands that talk to
//! a running server.
//!
//! Exit codes: 0 success; 1 a runtime failure (server down, an API error, a port in use);
//! 2 a usage or configuration error (clap's own code for bad arguments).

pub mod client;
mod commands;
mod init;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config;
use crate::mcp::orphan_guard;
use client::ClientError;

#[derive(Debug, Parser)]
#[command(
    name = "lit-mux",
    version,
    about = "One HTTP endpoint in front of all your AI models and MCP tools",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented default config file with a freshly generated API key.
    Init {
        #[command(flatten)]
        config: ConfigArg,
        /// Overwrite an existing config file.
        #[arg(long)]
        force: bool,
    },
    /// Run the server in the foreground until SIGINT or SIGTERM.
    Start(StartArgs),
    /// Check whether the server answers (exit 0 when healthy, 1 when not).
    Status(ClientArgs),
    /// Send a message to a backend and print the reply.
    Send {
        /// The message text.
        message: String,
        /// Backend to answer (default: the session's first backend, or "echo" for a new session).
        #[arg(long, short)]
        backend: Option<String>,
        /// Continue this session instead of creating one.
        #[arg(long, short)]
        session: Option<String>,
        /// Model to use for this message.
        #[arg(long, short)]
        model: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the configured AI backends and their health.
    Backends(ClientArgs),
    /// List sessions (newest first), or show one with its messages.
    Sessions {
        #[command(subcommand)]
        command: Option<SessionsCommand>,
        /// How many sessions to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the tools of every running MCP server.
    Tools(ClientArgs),
    /// Call a tool directly: `lit-mux call server.tool '{"arg": 1}'`.
    Call {
        /// The tool, as SERVER.TOOL.
        tool: String,
        /// The arguments, a JSON object (default: none).
        arguments: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manage MCP servers.
    #[command(subcommand)]
    Mcp(McpCommand),
    /// Internal: the helper that kills MCP process groups if lit-mux dies.
    #[command(name = "__orphan-guard", hide = true)]
    OrphanGuard,
    /// Internal: the process between lit-mux and one MCP server that keeps every descendant of
    /// the server from outliving it.
    #[command(name = "__mcp-keeper", hide = true)]
    McpKeeper {
        /// The soft open-file limit the server gets (lit-mux's own, before it raised it).
        #[arg(long = "nofile-soft")]
        nofile_soft: Option<u64>,
        /// The server's program and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Show a session and its whole conversation.
    Show {
        /// The session id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// List MCP servers and their state.
    List(ClientArgs),
    /// Start an MCP server and add it to the catalog.
    Add {
        /// Server name: 1 to 64 of A-Z a-z 0-9 _ -.
        name: String,
        /// Command to run (speaks MCP over stdio).
        command: String,
        /// Arguments for the command.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
        /// Environment for the server, KEY=VALUE (repeatable).
        #[arg(long = "env", short, value_parser = parse_key_value)]
        env: Vec<(String, String)>,
        /// Seconds allowed for the handshake and each tool call.
        #[arg(long)]
        timeout: Option<u64>,
        /// Restart the server when it exits with a failure.
        #[arg(long)]
        restart_on_failure: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop an MCP server and remove it.
    Remove {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the last lines an MCP server wrote to stderr.
    Logs {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop an MCP server's process and start a new one.
    Restart {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Config file [default: $XDG_CONFIG_HOME/lit-mux/config.yaml]
    #[arg(long, env = config::CONFIG_ENV, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Address to listen on (overrides server.host).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on (overrides server.port; 0 picks a free one).
    #[arg(long, short)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
    /// Listen on a non-loopback address without an API key. Anyone who can reach the port can
    /// then start programs on this machine through the MCP endpoints.
    #[arg(long)]
    pub allow_unauthenticated: bool,
}

/// How client commands find the server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL [default: from the config's server.host and server.port]
    #[arg(long, env = "LIT_MUX_URL")]
    pub url: Option<String>,
    /// API key [default: the config's server.api_key]
    #[arg(long, env = "LIT_MUX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Seconds to wait for the server's answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got \"{text}\"")),
    }
}

/// A command that did not succeed: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn runtime(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<config::ConfigError> for Failure {
    fn from(err: config::ConfigError) -> Self {
        Self::usage(err.to_string())
    }
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        Self::runtime(err.to_string())
    }
}

/// Runs a parsed command line. Loads `.env` first, while the process has one thread.
pub fn run(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::OrphanGuard => return orphan_guard::run(),
        Command::McpKeeper {
            nofile_soft,
            command,
        } => return crate::mcp::stdio::keeper::run(*nofile_soft, command),
        _ => {}
    }
    let outcome = config::load_dotenv()
        .map_err(Failure::from)
        .and_then(|_| dispatch(cli.command));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Init { config, force } => {
            init::init(&config::config_path(config.config.as_deref()), force)
        }
        Command::Start(args) => start(args),
        Command::OrphanGuard | Command::McpKeeper { .. } => Ok(()),
        Command::Status(client) => block_on(commands::status(client)),
        Command::Send {
            message,
            backend,
            session,
            model,
            client,
        } => block_on(commands::send(client, message, backend, session, model)),
        Command::Backends(client) => block_on(commands::backends(client)),
        Command::Sessions {
            command: None,
            limit,
            client,
        } => block_on(commands::sessions(client, limit)),
        Command::Sessions {
            command: Some(SessionsCommand::Show { id, client }),
            ..
        } => block_on(commands::show_session(client, id)),
        Command::Tools(client) => block_on(commands::print_get(client, "/tools")),
        Command::Call {
            tool,
            arguments,
            client,
        } => block_on(commands::call(client, tool, arguments)),
        Command::Mcp(McpCommand::List(client)) => {
            block_on(commands::print_get(client, "/mcp/servers"))
        }
        Command::Mcp(McpCommand::Add {
            name,
            command,
            args,
            env,
            timeout,
            restart_on_failure,
            client,
        }) => {
            let server = commands::NewServer {
                name,
                command,
                args,
                env,
                timeout,
                restart_on_failure,
            };
            block_on(commands::mcp_add(client, server))
        }
        Command::Mcp(McpCommand::Remove { name, client }) => {
            block_on(commands::mcp_remove(client, name))
        }
        Command::Mcp(McpCommand::Restart { name, client }) => {
            block_on(commands::mcp_restart(client, name))
        }
        Command::Mcp(McpCommand::Logs { name, client }) => {
            block_on(commands::mcp_logs(client, name))
        }
    }
}

/// Runs a client command on a small single-threaded runtime.
fn block_on(future: impl Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::runtime(format!("cannot start the async runtime: {err}")))?
        .block_on(future)
}

fn start(args: StartArgs) -> Result<(), Failure> {
    let path = config::config_path(args.config.config.as_deref());
    let mut loaded = config::load(&path)?;
    if let Some(host) = args.host {
        loaded.config.server.host = host;
    }
    if let Some(port) = args.port {
        loaded.config.server.port = port;
    }
    loaded
        .config
        .validate()
        .map_err(|(key, message)| Failure::usage(format!("{key}: {message}")))?;
    let server = &loaded.config.server;
    if server.api_key.is_none() && !server.is_loopback() && !args.allow_unauthenticated {
        return Err(Failure::usage(format!(
            "refusing to listen on {} without an API key: anyone who can reach it could start \
             programs on this machine. Set server.api_key (lit-mux init writes one), listen on \
             127.0.0.1, or pass --allow-unauthenticated",
            server.host
        )));
    }
    crate::app::run(loaded, args.log_format).map_err(|err| Failure::runtime(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
