//! `/mcp/…`: add, list, inspect, restart and remove MCP servers; their health.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::config::{McpServerConfig, RestartPolicy};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::mcp::hub::{ServerView, StatisticsView};
use crate::resources::{self, Resources};
use crate::server::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/mcp/servers", get(list_servers).post(add_server))
        .route("/mcp/servers/{name}", get(get_server).delete(remove_server))
        .route("/mcp/servers/{name}/logs", get(server_logs))
        .route("/mcp/servers/{name}/restart", post(restart_server))
        .route("/mcp/health", get(health))
}

/// `POST /mcp/servers`. Unknown fields are ignored, as the predecessor did.
#[derive(Debug, Deserialize)]
pub struct AddServer {
    pub name: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds; default 30.
    pub timeout: Option<u64>,
    #[serde(default)]
    pub restart: RestartPolicy,
}

#[derive(Debug, Serialize)]
pub struct ServerChanged {
    pub message: String,
    pub server: ServerView,
}

#[derive(Debug, Serialize)]
pub struct Message {
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct ServerList {
    pub servers: Vec<ServerView>,
    pub total: usize,
}

#[derive(Debug, Serialize)]
pub struct ServerLogs {
    pub name: String,
    pub logs: String,
}

async fn add_server(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AddServer>,
) -> Result<Json<ServerChanged>, ApiError> {
    let config = McpServerConfig {
        name: body.name,
        command: body.command,
        args: body.args,
        env: body.env,
        timeout: body.timeout.unwrap_or(30),
        restart: body.restart,
    };
    let server = state.mcp.add(config).await?;
    Ok(Json(ServerChanged {
        message: format!("MCP server {} added successfully", server.name),
        server,
    }))
}

async fn list_servers(State(state): State<AppState>) -> Json<ServerList> {
    let servers = state.mcp.list();
    Json(ServerList {
        total: servers.len(),
        servers,
    })
}

async fn get_server(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServerView>, ApiError> {
    Ok(Json(state.mcp.get(&name)?))
}

async fn remove_server(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Message>, ApiError> {
    state.mcp.remove(&name).await?;
    Ok(Json(Message {
        message: format!("MCP server {name} removed successfully"),
    }))
}

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

async fn server_logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServerLogs>, ApiError> {
    let logs = state.mcp.logs(&name)?;
    Ok(Json(ServerLogs { name, logs }))
}

/// One server in `/mcp/health`, in the predecessor's shape.
#[derive(Debug, Serialize)]
pub struct ServerHealth {
    pub running: bool,
    pub process_alive: bool,
    pub tools: usize,
    pub pid: Option<u32>,
    pub state: String,
}

#[derive(Debug, Serialize)]
pub struct McpHealth {
    pub servers: BTreeMap<String, ServerHealth>,
    pub total_tools: usize,
    pub statistics: StatisticsView,
    pub resources: Resources,
    pub cleaned_up: Vec<String>,
}

/// Reports every server, then removes the dead ones (listed in `cleaned_up`), as the
/// predecessor's health check did.
async fn health(State(state): State<AppState>) -> Json<McpHealth> {
    let servers: BTreeMap<String, ServerHealth> = state
        .mcp
        .list()
        .into_iter()
        .map(|server| {
            let alive = matches!(
                server.state,
                crate::mcp::hub::ServerState::Ready
                    | crate::mcp::hub::ServerState::Starting
                    | crate::mcp::hub::ServerState::Stopping
            ) && server.pid.is_some();
            let health = ServerHealth {
                running: server.running,
                process_alive: alive,
                tools: server.tool_count,
                pid: server.pid,
                state: server.state.to_string(),
            };
            (server.name, health)
        })
        .collect();
    let cleaned_up = state.mcp.clean_up_dead().await;
    Json(McpHealth {
        total_tools: servers.values().map(|s| s.tools).sum(),
        servers,
        statistics: state.mcp.statistics(),
        resources: resources::current(),
        cleaned_up,
    })
}
