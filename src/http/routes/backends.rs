//! `GET /backends` and `GET /models`: the configured model backends, their health and models.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use futures_util::future::join_all;
use serde::Serialize;
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelsView {
    #[schema(value_type = Object)]
    pub models: BTreeMap<String, Vec<ModelInfo>>,
    pub total: usize,
    /// Backends whose models could not be listed, with why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, String>,
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
        models: BTreeMap::new(),
        total: 0,
        errors: BTreeMap::new(),
    };
    for (name, result) in join_all(lists).await {
        match result {
            // Disabled: not listed.
            None => {}
            Some(Ok(models)) => {
                view.total += models.len();
                view.models.insert(name, models.as_ref().clone());
            }
            Some(Err(err)) => {
                view.errors.insert(name, err.to_string());
            }
        }
    }
    Json(view)
}
