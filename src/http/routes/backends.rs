//! `GET /backends` and `GET /models`: the configured model backends, their health and models.

use axum::Json;
use axum::extract::State;
use futures_util::future::join_all;
use serde::{Serialize, Serializer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::backends::ModelInfo;
use crate::http::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_backends))
        .routes(routes!(list_models))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackendView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub enabled: bool,
    pub healthy: bool,
    pub default_model: String,
}

// The backends in the config's order: kept as lists, written as JSON objects in that order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelsView {
    #[schema(value_type = Object)]
    #[serde(serialize_with = "in_order")]
    pub models: Vec<(String, Vec<ModelInfo>)>,
    pub total: usize,
    /// Backends whose models could not be listed, with why.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "in_order")]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub errors: Vec<(String, String)>,
}

/// `entries` as one JSON object, in their order.
fn in_order<S: Serializer, T: Serialize>(
    entries: &[(String, T)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(entries.iter().map(|(name, value)| (name, value)))
}

/// Health is checked concurrently and cached a few seconds per backend.
#[utoipa::path(get, path = "/backends", tag = "backends", responses((status = 200, description = "Success", body = Vec<BackendView>)))]
async fn list_backends(State(state): State<AppState>) -> Json<Vec<BackendView>> {
    let views = state.backends.entries().map(|entry| async move {
        BackendView {
            name: entry.name.clone(),
            kind: entry.config.kind.type_name(),
            enabled: entry.config.enabled,
            healthy: entry.healthy().await,
            default_model: entry.config.default_model.clone(),
        }
    });
    Json(join_all(views).await)
}

/// Every enabled backend's models, asked concurrently; one failing does not hide the others.
#[utoipa::path(get, path = "/models", tag = "backends", responses((status = 200, description = "Success", body = ModelsView)))]
async fn list_models(State(state): State<AppState>) -> Json<ModelsView> {
    let lists = state
        .backends
        .entries()
        .map(|entry| async move { (entry.name.clone(), entry.models().await) });
    let mut view = ModelsView {
        models: Vec::new(),
        total: 0,
        errors: Vec::new(),
    };
    for (name, result) in join_all(lists).await {
        match result {
            // Disabled: not listed.
            None => {}
            Some(Ok(models)) => {
                view.total += models.len();
                view.models.push((name, models.as_ref().clone()));
            }
            Some(Err(err)) => {
                view.errors.push((name, err.to_string()));
            }
        }
    }
    Json(view)
}
