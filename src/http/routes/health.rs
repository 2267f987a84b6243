//! `GET /health`: liveness, open to everyone (no API key), cheap enough to poll; `GET /metrics`:
//! the Prometheus exposition (behind the key like the rest).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;

/// The predecessor's health shape.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub version: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(metrics))
}

/// Prometheus / OpenMetrics text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The metrics", content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Liveness; needs no API key.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "Success", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy".to_owned(),
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        version: crate::VERSION.to_owned(),
    })
}
