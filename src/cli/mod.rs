//! The command line: clap definitions, `init` and `start`, and the client commands that talk to
//! a running server.
//!
//! Exit codes: 0 success; 1 a runtime failure (server down, an API error, a port in use);
//! 2 a usage or configuration error (clap's own code for bad arguments).

pub mod client;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::config;
use crate::mcp::orphan_guard;
use client::{ApiClient, ClientError};

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
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
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
    if let Command::OrphanGuard = cli.command {
        return orphan_guard::run();
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
            init(&config::config_path(config.config.as_deref()), force)
        }
        Command::Start(args) => start(args),
        Command::OrphanGuard => Ok(()),
        Command::Status(client) => block_on(status(client)),
        Command::Send {
            message,
            backend,
            session,
            model,
            client,
        } => block_on(send(client, message, backend, session, model)),
        Command::Backends(client) => block_on(backends(client)),
        Command::Sessions {
            command: None,
            limit,
            client,
        } => block_on(sessions(client, limit)),
        Command::Sessions {
            command: Some(SessionsCommand::Show { id, client }),
            ..
        } => block_on(show_session(client, id)),
        Command::Tools(client) => block_on(print_get(client, "/tools")),
        Command::Call {
            tool,
            arguments,
            client,
        } => block_on(call(client, tool, arguments)),
        Command::Mcp(McpCommand::List(client)) => block_on(print_get(client, "/mcp/servers")),
        Command::Mcp(McpCommand::Add {
            name,
            command,
            args,
            env,
            timeout,
            restart_on_failure,
            client,
        }) => {
            let mut body = json!({
                "name": name,
                "command": command,
                "args": args,
                "env": env.into_iter().collect::<BTreeMap<_, _>>(),
            });
            if let Some(timeout) = timeout {
                body["timeout"] = json!(timeout);
            }
            if restart_on_failure {
                body["restart"] = json!("on-failure");
            }
            block_on(async move {
                let api = connect(&client)?;
                print_json(&api.post("/mcp/servers", &body).await?);
                Ok(())
            })
        }
        Command::Mcp(McpCommand::Remove { name, client }) => block_on(async move {
            let api = connect(&client)?;
            let answer = api
                .delete(&format!("/mcp/servers/{}", path_segment(&name)))
                .await?;
            print_message_or_json(&answer);
            Ok(())
        }),
        Command::Mcp(McpCommand::Restart { name, client }) => block_on(async move {
            let api = connect(&client)?;
            let path = format!("/mcp/servers/{}/restart", path_segment(&name));
            print_message_or_json(&api.post(&path, &json!({})).await?);
            Ok(())
        }),
        Command::Mcp(McpCommand::Logs { name, client }) => block_on(async move {
            let api = connect(&client)?;
            let answer = api
                .get(&format!("/mcp/servers/{}/logs", path_segment(&name)))
                .await?;
            match answer.get("logs").and_then(Value::as_str) {
                Some(text) => print!("{text}"),
                None => print_json(&answer),
            }
            Ok(())
        }),
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

fn init(path: &Path, force: bool) -> Result<(), Failure> {
    let key = generate_api_key()
        .map_err(|err| Failure::runtime(format!("cannot generate an API key: {err}")))?;
    write_new_config(path, &config::default_config_text(&key), force)?;
    println!("Wrote {}", path.display());
    println!("API key (printed only this once; it is stored in that file):");
    println!("  {key}");
    println!("Start the server with: lit-mux start");
    Ok(())
}

/// 32 random bytes from the OS, hex-encoded, with a prefix that makes the key recognisable.
fn generate_api_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("lmx_{hex}"))
}

/// Writes the file readable by its owner only (it holds the API key), refusing to replace an
/// existing one unless `force`.
fn write_new_config(path: &Path, text: &str, force: bool) -> Result<(), Failure> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |what: &str, err: std::io::Error| {
        Failure::runtime(format!("cannot {what} {}: {err}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|err| failed("create the folder for", err))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::runtime(format!(
                "{} already exists; use --force to overwrite it",
                path.display()
            ))
        } else {
            failed("write", err)
        }
    })?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|err| failed("set permissions on", err))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|err| failed("write", err))
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

/// Resolves the server URL and key: flags and environment first, then the config file.
fn connect(args: &ClientArgs) -> Result<ApiClient, Failure> {
    if let Some(url) = &args.url
        && !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        return Err(Failure::usage(format!(
            "--url {url:?} is not an http(s) URL like http://127.0.0.1:8000"
        )));
    }
    let (url, api_key) = match (&args.url, &args.api_key) {
        (Some(url), Some(key)) => (url.clone(), Some(key.clone())),
        _ => {
            let loaded = config::load(&config::config_path(args.config.config.as_deref()))?;
            let server = loaded.config.server;
            let url = args
                .url
                .clone()
                .unwrap_or_else(|| local_url(&server.host, server.port));
            (url, args.api_key.clone().or(server.api_key))
        }
    };
    Ok(ApiClient::new(
        &url,
        api_key,
        Duration::from_secs(args.request_timeout.max(1)),
    )?)
}

/// The URL a client on this machine uses for a server listening on `host:port`.
fn local_url(host: &str, port: u16) -> String {
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" | "[::]" => "[::1]",
        other => other,
    };
    if host.contains(':') && !host.starts_with('[') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

async fn status(mut args: ClientArgs) -> Result<(), Failure> {
    args.request_timeout = args.request_timeout.min(10);
    let api = connect(&args)?;
    let answer = api
        .get("/health")
        .await
        .map_err(|err| Failure::runtime(format!("lit-mux is not healthy: {err}")))?;
    match (
        answer.get("status").and_then(Value::as_str),
        answer.get("version").and_then(Value::as_str),
    ) {
        (Some("healthy"), Some(version)) => {
            println!("lit-mux {version} is healthy at {}", api.base_url());
            Ok(())
        }
        _ => Err(Failure::runtime(format!(
            "lit-mux at {} is not healthy: {answer}",
            api.base_url()
        ))),
    }
}

async fn send(
    args: ClientArgs,
    message: String,
    backend: Option<String>,
    session: Option<String>,
    model: Option<String>,
) -> Result<(), Failure> {
    if message.trim().is_empty() {
        // Before a session is made for it: the server would refuse it after that.
        return Err(Failure::usage("the message is empty".to_owned()));
    }
    let api = connect(&args)?;
    let session_id = match session {
        Some(id) => id,
        None => {
            let backends = vec![backend.clone().unwrap_or_else(|| "echo".to_owned())];
            let created = api
                .post("/sessions", &json!({ "backends": backends }))
                .await?;
            let id = created
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| Failure::runtime(format!("no session id in {created}")))?
                .to_owned();
            eprintln!("session {id}");
            id
        }
    };
    let mut body = json!({ "content": message });
    if let Some(backend) = backend {
        body["backend"] = json!(backend);
    }
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    let path = format!("/sessions/{}/message", path_segment(&session_id));
    let mut spinner = Some(Spinner::start());
    let opened = api.post_events(&path, &body).await;
    let mut stdout = std::io::stdout();
    let mut events = match opened {
        Ok(events) => events,
        Err(err) => {
            if let Some(spinner) = spinner.take() {
                spinner.stop();
            }
            return Err(err.into());
        }
    };
    loop {
        let event = events.next().await;
        if let Some(spinner) = spinner.take() {
            spinner.stop();
        }
        match event? {
            Some((name, data)) if name == "delta" => {
                let _ = write!(stdout, "{}", data["text"].as_str().unwrap_or_default());
                let _ = stdout.flush();
            }
            Some((name, _)) if name == "done" => {
                println!();
                return Ok(());
            }
            Some((name, data)) if name == "error" => {
                println!();
                return Err(Failure::runtime(
                    data["detail"].as_str().unwrap_or("the backend failed"),
                ));
            }
            // Tool steps go to stderr, so that stdout holds the answer alone.
            Some((name, data)) if name == "tool_call" => {
                let _ = stdout.flush();
                let tool = match data["server"].as_str() {
                    Some(server) => format!("{server}.{}", data["tool"].as_str().unwrap_or("?")),
                    None => data["tool"].as_str().unwrap_or("?").to_owned(),
                };
                eprintln!("\n→ {tool} {}", data["arguments"]);
            }
            Some((name, data)) if name == "tool_result" => {
                let outcome = if data["is_error"] == json!(true) {
                    "failed"
                } else {
                    "done"
                };
                eprintln!("← {outcome} in {} ms", data["duration_ms"]);
            }
            // Events this version does not know are skipped.
            Some(_) => {}
            None => {
                println!();
                return Err(Failure::runtime("the answer ended before it was complete"));
            }
        }
    }
}

/// A spinner on stderr while waiting for the first token; only on a terminal.
struct Spinner {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Spinner {
    fn start() -> Self {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Self { task: None };
        }
        let task = tokio::spawn(async {
            let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut ticks = tokio::time::interval(Duration::from_millis(80));
            for frame in frames.iter().cycle() {
                ticks.tick().await;
                eprint!("\r{frame} waiting for the model");
            }
        });
        Self { task: Some(task) }
    }

    fn stop(self) {
        if let Some(task) = self.task {
            task.abort();
            // Erase the spinner's line.
            eprint!("\r\x1b[2K");
        }
    }
}

/// `lit-mux backends`: one line per backend.
async fn backends(args: ClientArgs) -> Result<(), Failure> {
    let api = connect(&args)?;
    let list = api.get("/backends").await?;
    let rows: Vec<[String; 4]> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let state = match (b["enabled"].as_bool(), b["healthy"].as_bool()) {
                (Some(false), _) => "disabled",
                (_, Some(true)) => "healthy",
                _ => "unreachable",
            };
            [
                text_of(&b["name"]),
                text_of(&b["type"]),
                state.to_owned(),
                text_of(&b["default_model"]),
            ]
        })
        .collect();
    print_table(["NAME", "TYPE", "STATE", "DEFAULT MODEL"], &rows);
    Ok(())
}

/// `lit-mux sessions`: the newest sessions, one line each.
async fn sessions(args: ClientArgs, limit: u32) -> Result<(), Failure> {
    let api = connect(&args)?;
    let list = api.get(&format!("/sessions?limit={limit}")).await?;
    let rows: Vec<[String; 5]> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let backends: Vec<String> = s["backends"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text_of)
                .collect();
            [
                text_of(&s["id"]),
                text_of(&s["name"]),
                backends.join(","),
                text_of(&s["message_count"]),
                text_of(&s["updated_at"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no sessions yet (lit-mux send MESSAGE starts one)");
        return Ok(());
    }
    print_table(["ID", "NAME", "BACKENDS", "MESSAGES", "UPDATED"], &rows);
    Ok(())
}

/// `lit-mux sessions show ID`: the session, then its conversation.
async fn show_session(args: ClientArgs, id: String) -> Result<(), Failure> {
    let api = connect(&args)?;
    let session = api.get(&format!("/sessions/{}", path_segment(&id))).await?;
    let messages = api
        .get(&format!("/sessions/{}/messages", path_segment(&id)))
        .await?;
    println!("session  {}", text_of(&session["id"]));
    if !session["name"].is_null() {
        println!("name     {}", text_of(&session["name"]));
    }
    println!("backends {}", session["backends"]);
    println!("created  {}", text_of(&session["created_at"]));
    for message in messages.as_array().into_iter().flatten() {
        let who = match (message["role"].as_str(), message["backend"].as_str()) {
            (Some("assistant"), Some(backend)) => {
                format!("{backend} ({})", text_of(&message["model"]))
            }
            (Some(role), _) => role.to_owned(),
            (None, _) => "?".to_owned(),
        };
        let failed = message["metadata"]["status"] == json!("failed");
        println!(
            "\n[{}] {who}{}",
            text_of(&message["timestamp"]),
            if failed { " (failed)" } else { "" }
        );
        println!("{}", text_of(&message["content"]));
    }
    Ok(())
}

/// A JSON value as plain text (strings without their quotes, null as empty).
fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, widths from the widest cell.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `lit-mux call server.tool JSON`: prints the tool's text content, or the whole result.
async fn call(args: ClientArgs, tool: String, arguments: Option<String>) -> Result<(), Failure> {
    let Some((server, tool)) = tool.split_once('.') else {
        return Err(Failure::usage(format!(
            "expected SERVER.TOOL, got {tool:?}"
        )));
    };
    let arguments: Value = match arguments.as_deref() {
        None | Some("") => json!({}),
        Some(text) => serde_json::from_str(text)
            .map_err(|err| Failure::usage(format!("the arguments are not valid JSON: {err}")))?,
    };
    let api = connect(&args)?;
    let path = format!("/tools/{}/{}", path_segment(server), path_segment(tool));
    let result = api.post(&path, &arguments).await?;
    let texts: Vec<&str> = result["content"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item["text"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if texts.is_empty() {
        print_json(&result);
    } else {
        println!("{}", texts.join("\n"));
    }
    if result["is_error"] == json!(true) {
        return Err(Failure::runtime("the tool reported an error"));
    }
    Ok(())
}

async fn print_get(args: ClientArgs, path: &str) -> Result<(), Failure> {
    let api = connect(&args)?;
    print_json(&api.get(path).await?);
    Ok(())
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

fn print_message_or_json(value: &Value) {
    match value.get("message").and_then(Value::as_str) {
        Some(message) => println!("{message}"),
        None => print_json(value),
    }
}

/// Percent-encodes a value used as one path segment.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn local_urls() {
        assert_eq!(local_url("0.0.0.0", 80), "http://127.0.0.1:80");
        assert_eq!(local_url("::", 80), "http://[::1]:80");
        assert_eq!(local_url("::1", 80), "http://[::1]:80");
        assert_eq!(local_url("localhost", 8000), "http://localhost:8000");
    }

    #[test]
    fn api_keys_are_random_and_long() {
        let (a, b) = (generate_api_key(), generate_api_key());
        assert!(matches!((&a, &b), (Ok(a), Ok(b)) if a != b && a.len() == 68));
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
