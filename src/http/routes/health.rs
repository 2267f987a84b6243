//! `GET /health`: liveness and the state of the storage, open to everyone (no API key), cheap
//! enough to poll (nothing written: the store's cached state and a `stat` of its files);
//! `GET /metrics`: the Prometheus exposition (behind the key like the rest).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;

/// The predecessor's health shape, with what was checked.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `healthy`, or `unhealthy` when a check failed.
    pub status: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub version: String,
    pub checks: HealthChecks,
}

/// Each check: `ok`, or why it failed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthChecks {
    /// Whether sessions can be read and written: `ok`, or the failure (the database file
    /// deleted or replaced under the server, the last write failed for a full disk).
    pub storage: String,
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

/// Liveness and storage; needs no API key.
#[utoipa::path(get, path = "/health", tag = "operations", responses(
    (status = 200, description = "Healthy", body = Health),
    (status = 503, description = "A check failed (see `checks`)", body = Health)))]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (status, storage) = match state.store.health() {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    };
    let health = Health {
        status: if status == StatusCode::OK {
            "healthy"
        } else {
            "unhealthy"
        }
        .to_owned(),
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
        version: crate::VERSION.to_owned(),
        checks: HealthChecks { storage },
    };
    (status, Json(health))
}
