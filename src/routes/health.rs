//! `GET /health`: liveness, open to everyone (no API key), cheap enough to poll.

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

async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy".to_owned(),
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        version: crate::VERSION.to_owned(),
    })
}
