//! `/tools`: the catalog of every ready server's tools, and calling one directly.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBytes, parse_json};
use crate::mcp::hub::CatalogTool;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tools))
        .routes(routes!(call_tool))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolList {
    /// `[{name, description, server, parameters}]`
    #[schema(value_type = Vec<Object>)]
    pub tools: Vec<CatalogTool>,
    pub total: usize,
}

/// A tool's result, in the predecessor's snake_case shape.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolResult {
    #[schema(value_type = Vec<Object>)]
    pub content: serde_json::Value,
    pub is_error: bool,
    #[schema(value_type = Option<Object>)]
    pub structured_content: Option<serde_json::Value>,
}

/// Every tool of every ready MCP server.
#[utoipa::path(get, path = "/tools", tag = "tools", responses((status = 200, description = "Success", body = ToolList)))]
async fn list_tools(State(state): State<AppState>) -> Json<ToolList> {
    let tools = state.mcp.catalog();
    Json(ToolList {
        total: tools.len(),
        tools,
    })
}

/// The body is the arguments object; an empty body means no arguments.
#[utoipa::path(post, path = "/tools/{server}/{tool}", tag = "tools",
    params(("server" = String, Path), ("tool" = String, Path)),
    request_body(content = Object, description = "The tool's arguments"),
    responses((status = 200, description = "Success", body = ToolResult),
        (status = 400, description = "The server refused the call's arguments or method", body = crate::http::error::ErrorBody),
        (status = 404, description = "Unknown server or tool", body = crate::http::error::ErrorBody),
        (status = 422, description = "The body is not a JSON object", body = crate::http::error::ErrorBody),
        (status = 502, description = "The server died", body = crate::http::error::ErrorBody),
        (status = 503, description = "The server is not ready", body = crate::http::error::ErrorBody),
        (status = 504, description = "The call timed out", body = crate::http::error::ErrorBody)))]
async fn call_tool(
    State(state): State<AppState>,
    Path((server, tool)): Path<(String, String)>,
    JsonBytes(body): JsonBytes,
) -> Result<Json<ToolResult>, ApiError> {
    let arguments = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match parse_json::<serde_json::Value>(&body)? {
            serde_json::Value::Object(map) => Some(map),
            serde_json::Value::Null => None,
            other => {
                return Err(ApiError::Unprocessable(format!(
                    "Tool arguments must be a JSON object, not {}",
                    json_kind(&other)
                )));
            }
        }
    };
    let result = state.mcp.call_tool(&server, &tool, arguments).await?;
    Ok(Json(ToolResult {
        content: serde_json::to_value(&result.content).unwrap_or_default(),
        is_error: result.is_error.unwrap_or(false),
        structured_content: result.structured_content,
    }))
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
