//! `GET /health`: liveness, open to everyone (no API key), cheap enough to poll; `GET /metrics`:
//! the Prometheus exposition (behind the key like the rest).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::server::AppState;

/// The predecessor's health shape.
#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub version: String,
}

pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

pub fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy".to_owned(),
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        version: crate::VERSION.to_owned(),
    })
}
