//! `/mcp/…`: add, list, inspect, restart and remove MCP servers; their health.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::mcp::{MAX_ARG_BYTES, MAX_ENV_NAME_BYTES, MAX_ENV_VALUE_BYTES, MAX_ENV_VARS};
use crate::config::{
    McpServerConfig, McpTransport, RestartPolicy, StdioTransport, default_mcp_timeout,
};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::resources::{self, Resources};
use crate::mcp::hub::{ServerView, StatisticsView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_servers, add_server))
        .routes(routes!(get_server, remove_server))
        .routes(routes!(server_logs))
        .routes(routes!(restart_server))
        .routes(routes!(health))
        .routes(routes!(clean_up))
}

/// `POST /mcp/servers`. Unknown fields are ignored, as the predecessor did. The sizes are in
/// bytes (a schema's lengths count characters, which are one byte each in ASCII).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "everything", "command": "npx",
    "args": ["-y", "@modelcontextprotocol/server-everything"], "timeout": 30, "restart": "never"}))]
pub struct AddServer {
    /// 1 to 64 of A-Z a-z 0-9 _ -.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "everything")]
    pub name: String,
    /// A program name (looked up in lit-mux's `PATH` when `mcp.allowed_commands` is set) or a
    /// path; at most 4096 bytes, not blank, no NUL.
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\x00]*[^\x00\s][^\x00]*$",
        example = "npx"
    )]
    pub command: String,
    /// At most 256, each at most 16 KiB, no NUL.
    #[serde(default)]
    #[schema(max_items = 256, value_type = Vec<ArgSchema>)]
    pub args: Vec<String>,
    /// The server's own variables, beside the few it gets of lit-mux's environment; at most
    /// 256, names at most 256 bytes (not empty, no `=`), values at most 32 KiB, no NUL. Only
    /// names `mcp.allowed_env` allows.
    #[serde(default)]
    #[schema(value_type = EnvSchema)]
    pub env: BTreeMap<String, String>,
    /// Seconds for the handshake and each call; default 30.
    #[schema(minimum = 1, maximum = 3600, example = 30)]
    #[serde(default, deserialize_with = "crate::http::whole_numbers::optional")]
    pub timeout: Option<u64>,
    /// Default `never`.
    #[serde(default)]
    #[schema(value_type = RestartSchema)]
    pub restart: RestartPolicy,
}

/// One of `args`: at most 16 KiB, no NUL.
struct ArgSchema;

impl utoipa::PartialSchema for ArgSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(MAX_ARG_BYTES))
            .pattern(Some(NO_NUL))
            .into()
    }
}

impl utoipa::ToSchema for ArgSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ServerArgument")
    }
}

/// `env`: at most 256 variables; a name is 1 to 256 bytes without `=` or NUL, a value at most
/// 32 KiB without NUL.
struct EnvSchema;

impl utoipa::PartialSchema for EnvSchema {
    fn schema() -> RefOr<Schema> {
        let value = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(MAX_ENV_VALUE_BYTES))
            .pattern(Some(NO_NUL));
        let name = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_ENV_NAME_BYTES))
            .pattern(Some("^[^=\\x00]*$"));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(value))
            .property_names(Some(name))
            .max_properties(Some(MAX_ENV_VARS))
            .examples([serde_json::json!({"GITHUB_TOKEN": "ghp_..."})])
            .into()
    }
}

impl utoipa::ToSchema for EnvSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ServerEnvironment")
    }
}

const NO_NUL: &str = "^[^\\x00]*$";

/// What `POST /mcp/servers` accepts as `restart` (the config's `RestartPolicy`).
#[derive(utoipa::ToSchema)]
#[schema(as = RestartPolicy, rename_all = "kebab-case")]
#[allow(dead_code)]
enum RestartSchema {
    Never,
    OnFailure,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerChanged {
    pub message: String,
    #[schema(value_type = Object)]
    pub server: ServerView,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = McpMessage)]
pub struct Message {
    pub message: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerList {
    #[schema(value_type = Vec<Object>)]
    pub servers: Vec<ServerView>,
    pub total: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerLogs {
    pub name: String,
    pub logs: String,
}

/// Starts an MCP server (stdio child process) and discovers its tools.
#[utoipa::path(post, path = "/mcp/servers", tag = "mcp", request_body = AddServer,
    responses((status = 200, description = "Success", body = ServerChanged), (status = 400, description = "A value that cannot work", body = crate::http::error::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Malformed JSON, a wrong field type, or a value out of its range", body = crate::http::error::ErrorBody),
        (status = 403, description = "Refused by mcp.allowed_commands or mcp.allowed_env", body = crate::http::error::ErrorBody),
        (status = 409, description = "The name exists", body = crate::http::error::ErrorBody),
        (status = 502, description = "Start or handshake failed", body = crate::http::error::ErrorBody),
        (status = 503, description = "MCP is disabled (mcp.enabled: false)", body = crate::http::error::ErrorBody),
        (status = 504, description = "The handshake timed out", body = crate::http::error::ErrorBody)))]
async fn add_server(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AddServer>,
) -> Result<Json<ServerChanged>, ApiError> {
    let config = McpServerConfig {
        name: body.name,
        transport: McpTransport::Stdio(StdioTransport {
            command: body.command,
            args: body.args,
            env: body.env,
        }),
        timeout: body.timeout.unwrap_or_else(default_mcp_timeout),
        restart: body.restart,
    };
    let server = state.mcp.add(config).await?;
    Ok(Json(ServerChanged {
        message: format!("MCP server {} added successfully", server.name),
        server,
    }))
}

/// Every MCP server and its state.
#[utoipa::path(get, path = "/mcp/servers", tag = "mcp", responses((status = 200, description = "Success", body = ServerList)))]
async fn list_servers(State(state): State<AppState>) -> Json<ServerList> {
    let servers = state.mcp.list();
    Json(ServerList {
        total: servers.len(),
        servers,
    })
}

/// One server: state, pid, uptime, restarts, exit status, tools, server info, last error.
#[utoipa::path(get, path = "/mcp/servers/{name}", tag = "mcp", params(("name" = String, Path)),
    responses((status = 200, description = "Success", body = Object), (status = 404, description = "Not found", body = crate::http::error::ErrorBody)))]
async fn get_server(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServerView>, ApiError> {
    Ok(Json(state.mcp.get(&name)?))
}

/// Stops the server (its whole process group) and removes it.
#[utoipa::path(delete, path = "/mcp/servers/{name}", tag = "mcp", params(("name" = String, Path)),
    responses((status = 200, description = "Success", body = Message), (status = 404, description = "Not found", body = crate::http::error::ErrorBody)))]
async fn remove_server(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Message>, ApiError> {
    state.mcp.remove(&name).await?;
    Ok(Json(Message {
        message: format!("MCP server {name} removed successfully"),
    }))
}

/// Stops the server's process and starts a new one.
#[utoipa::path(post, path = "/mcp/servers/{name}/restart", tag = "mcp", params(("name" = String, Path)),
    responses((status = 200, description = "Success", body = ServerChanged), (status = 404, description = "Not found", body = crate::http::error::ErrorBody),
        (status = 502, description = "The new process failed to start or to shake hands", body = crate::http::error::ErrorBody),
        (status = 503, description = "MCP is disabled", body = crate::http::error::ErrorBody),
        (status = 504, description = "The handshake timed out", body = crate::http::error::ErrorBody)))]
async fn restart_server(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServerChanged>, ApiError> {
    let server = state.mcp.restart(&name).await?;
    Ok(Json(ServerChanged {
        message: format!("MCP server {name} restarted successfully"),
        server,
    }))
}

/// The tail of the server's stderr.
#[utoipa::path(get, path = "/mcp/servers/{name}/logs", tag = "mcp", params(("name" = String, Path)),
    responses((status = 200, description = "Success", body = ServerLogs), (status = 404, description = "Not found", body = crate::http::error::ErrorBody)))]
async fn server_logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServerLogs>, ApiError> {
    let logs = state.mcp.logs(&name)?;
    Ok(Json(ServerLogs { name, logs }))
}

/// One server in `/mcp/health`, in the predecessor's shape, with why it ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerHealth {
    pub running: bool,
    pub process_alive: bool,
    pub tools: usize,
    pub pid: Option<u32>,
    pub state: String,
    /// Why an `exited` or `failed` server ended; kept until the server is removed.
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct McpHealth {
    pub servers: BTreeMap<String, ServerHealth>,
    pub total_tools: usize,
    #[schema(value_type = Object)]
    pub statistics: StatisticsView,
    #[schema(value_type = Object)]
    pub resources: Resources,
    /// Always empty: kept from the predecessor, whose health check removed dead servers. A GET
    /// changes nothing; `POST /mcp/health/cleanup` removes them.
    pub cleaned_up: Vec<String>,
}

/// The servers removed by `POST /mcp/health/cleanup`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CleanedUp {
    pub cleaned_up: Vec<String>,
}

/// Reports every server, dead ones (`exited`, `failed`) with their `last_error`. It removes
/// nothing: a page any browser loads may send a GET, so a GET changes no state.
#[utoipa::path(get, path = "/mcp/health", tag = "mcp", operation_id = "mcp_health", responses((status = 200, description = "Success", body = McpHealth)))]
async fn health(State(state): State<AppState>) -> Json<McpHealth> {
    let servers: BTreeMap<String, ServerHealth> = state
        .mcp
        .list()
        .into_iter()
        .map(|server| {
            let pid = server.pid.flatten();
            let alive = matches!(
                server.state,
                crate::mcp::hub::ServerState::Ready
                    | crate::mcp::hub::ServerState::Starting
                    | crate::mcp::hub::ServerState::Stopping
            ) && pid.is_some();
            let health = ServerHealth {
                running: server.running,
                process_alive: alive,
                tools: server.tool_count,
                pid,
                state: server.state.to_string(),
                last_error: server.last_error,
            };
            (server.name, health)
        })
        .collect();
    Json(McpHealth {
        total_tools: servers.values().map(|s| s.tools).sum(),
        servers,
        statistics: state.mcp.statistics(),
        resources: resources::current(),
        cleaned_up: Vec::new(),
    })
}

/// Removes the servers whose connection is gone (`exited`, `failed`) and lists them, as the
/// predecessor's health check did on GET.
#[utoipa::path(post, path = "/mcp/health/cleanup", tag = "mcp", operation_id = "mcp_clean_up",
    responses((status = 200, description = "The removed servers", body = CleanedUp),
        (status = 401, description = "Missing or wrong API key", body = crate::http::error::ErrorBody)))]
async fn clean_up(State(state): State<AppState>) -> Json<CleanedUp> {
    Json(CleanedUp {
        cleaned_up: state.mcp.clean_up_dead().await,
    })
}
