//! The client commands (`status`, `send`, `backends`, `sessions`, `tools`, `call`, `mcp …`):
//! each talks to a running server through [`ApiClient`] and prints what a person wants to read.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::ApiClient;
use super::{ClientArgs, Failure};
use crate::config;

/// Resolves the server URL and key: flags and environment first, then the config file.
fn connect(args: &ClientArgs) -> Result<ApiClient, Failure> {
    if let Some(url) = &args.url
        && !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        return Err(Failure::usage(format!(
            "--url \"{url}\" is not an http(s) URL like http://127.0.0.1:8000"
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

pub async fn status(mut args: ClientArgs) -> Result<(), Failure> {
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

pub async fn send(
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
pub async fn backends(args: ClientArgs) -> Result<(), Failure> {
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
pub async fn sessions(args: ClientArgs, limit: u32) -> Result<(), Failure> {
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
pub async fn show_session(args: ClientArgs, id: String) -> Result<(), Failure> {
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
pub async fn call(
    args: ClientArgs,
    tool: String,
    arguments: Option<String>,
) -> Result<(), Failure> {
    let Some((server, tool)) = tool.split_once('.') else {
        return Err(Failure::usage(format!(
            "expected SERVER.TOOL, got \"{tool}\""
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

pub async fn print_get(args: ClientArgs, path: &str) -> Result<(), Failure> {
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

/// What `lit-mux mcp add` asks the server to start.
pub struct NewServer {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<u64>,
    pub restart_on_failure: bool,
}

pub async fn mcp_add(client: ClientArgs, server: NewServer) -> Result<(), Failure> {
    let mut body = json!({
        "name": server.name,
        "command": server.command,
        "args": server.args,
        "env": server.env.into_iter().collect::<BTreeMap<_, _>>(),
    });
    if let Some(timeout) = server.timeout {
        body["timeout"] = json!(timeout);
    }
    if server.restart_on_failure {
        body["restart"] = json!("on-failure");
    }
    let api = connect(&client)?;
    print_json(&api.post("/mcp/servers", &body).await?);
    Ok(())
}

pub async fn mcp_remove(client: ClientArgs, name: String) -> Result<(), Failure> {
    let api = connect(&client)?;
    let answer = api
        .delete(&format!("/mcp/servers/{}", path_segment(&name)))
        .await?;
    print_message_or_json(&answer);
    Ok(())
}

pub async fn mcp_restart(client: ClientArgs, name: String) -> Result<(), Failure> {
    let api = connect(&client)?;
    let path = format!("/mcp/servers/{}/restart", path_segment(&name));
    print_message_or_json(&api.post(&path, &json!({})).await?);
    Ok(())
}

pub async fn mcp_logs(client: ClientArgs, name: String) -> Result<(), Failure> {
    let api = connect(&client)?;
    let answer = api
        .get(&format!("/mcp/servers/{}/logs", path_segment(&name)))
        .await?;
    match answer.get("logs").and_then(Value::as_str) {
        Some(text) => print!("{text}"),
        None => print_json(&answer),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_urls() {
        assert_eq!(local_url("0.0.0.0", 80), "http://127.0.0.1:80");
        assert_eq!(local_url("::", 80), "http://[::1]:80");
        assert_eq!(local_url("::1", 80), "http://[::1]:80");
        assert_eq!(local_url("localhost", 8000), "http://localhost:8000");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
