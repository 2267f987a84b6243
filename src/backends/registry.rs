//! The configured backends by name, with cached health and bounded model listings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metered::{BackendMetrics, Metered};
use super::{
    Backend, BackendConfig, BackendError, BackendKind, ModelInfo, TimeoutStage, anthropic, echo,
    ollama, openai,
};

/// How long a health result is reused, so that polling `/backends` never floods a backend.
const HEALTH_CACHE: Duration = Duration::from_secs(5);
/// Longest a health check may take; an answer slower than this counts as unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest listing a backend's models may take, so that one stalled backend never holds up
/// `GET /models` for its full request timeout.
const MODELS_TIMEOUT: Duration = Duration::from_secs(10);

/// One configured backend: its settings and, when enabled, its client.
pub struct BackendEntry {
    pub name: String,
    pub config: BackendConfig,
    /// `None` when the backend is disabled.
    pub client: Option<Arc<dyn Backend>>,
    health: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl BackendEntry {
    /// Whether the backend answers, checked at most once per [`HEALTH_CACHE`]. Concurrent callers
    /// share one check.
    pub async fn healthy(&self) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        let mut cached = self.health.lock().await;
        if let Some((at, healthy)) = *cached
            && at.elapsed() < HEALTH_CACHE
        {
            return healthy;
        }
        let healthy = matches!(
            tokio::time::timeout(HEALTH_TIMEOUT, client.health()).await,
            Ok(Ok(()))
        );
        *cached = Some((Instant::now(), healthy));
        healthy
    }
}

impl BackendEntry {
    /// The backend's models, bounded by [`MODELS_TIMEOUT`]; `None` when it is disabled.
    pub async fn models(&self) -> Option<Result<Vec<ModelInfo>, BackendError>> {
        let client = self.client.as_ref()?;
        Some(
            match tokio::time::timeout(MODELS_TIMEOUT, client.models()).await {
                Ok(result) => result,
                Err(_) => Err(BackendError::Timeout {
                    backend: self.name.clone(),
                    stage: TimeoutStage::ListingModels,
                    secs: MODELS_TIMEOUT.as_secs(),
                }),
            },
        )
    }
}

/// Why a backend cannot be used for a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendLookupError {
    #[error("unknown backend {0:?}")]
    Unknown(String),
    #[error("backend {0:?} is disabled")]
    Disabled(String),
}

/// The configured backends by name. Cheap to clone.
#[derive(Clone)]
pub struct BackendRegistry {
    entries: Arc<BTreeMap<String, BackendEntry>>,
    metrics: BackendMetrics,
}

impl BackendRegistry {
    /// Builds a client for every enabled backend of `configs` (already validated).
    pub fn new(configs: &BTreeMap<String, BackendConfig>) -> Result<Self, BackendError> {
        let mut entries = BTreeMap::new();
        let metrics = BackendMetrics::default();
        for (name, config) in configs {
            let client: Option<Arc<dyn Backend>> = if config.enabled {
                Some(match &config.kind {
                    BackendKind::Echo => Arc::new(echo::EchoBackend::new(config)),
                    BackendKind::Ollama(settings) => {
                        Arc::new(ollama::OllamaBackend::new(name, config, settings)?)
                    }
                    BackendKind::OpenAi(settings) => {
                        Arc::new(openai::OpenAiBackend::new(name, config, settings)?)
                    }
                    BackendKind::Anthropic(settings) => {
                        Arc::new(anthropic::AnthropicBackend::new(name, config, settings)?)
                    }
                })
            } else {
                None
            };
            let client = client.map(|inner| -> Arc<dyn Backend> {
                Arc::new(Metered::wrap(name.clone(), inner, metrics.clone()))
            });
            entries.insert(
                name.clone(),
                BackendEntry {
                    name: name.clone(),
                    config: config.clone(),
                    client,
                    health: tokio::sync::Mutex::new(None),
                },
            );
        }
        Ok(Self {
            entries: Arc::new(entries),
            metrics,
        })
    }

    /// The counters of every backend's calls.
    pub fn metrics(&self) -> &BackendMetrics {
        &self.metrics
    }

    pub fn entries(&self) -> impl Iterator<Item = &BackendEntry> {
        self.entries.values()
    }

    pub fn get(&self, name: &str) -> Option<&BackendEntry> {
        self.entries.get(name)
    }

    /// The client of an enabled backend.
    pub fn client(&self, name: &str) -> Result<Arc<dyn Backend>, BackendLookupError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| BackendLookupError::Unknown(name.to_owned()))?;
        entry
            .client
            .clone()
            .ok_or_else(|| BackendLookupError::Disabled(name.to_owned()))
    }

    /// Names of the enabled backends.
    pub fn enabled_names(&self) -> Vec<String> {
        self.entries
            .values()
            .filter(|entry| entry.client.is_some())
            .map(|entry| entry.name.clone())
            .collect()
    }
}
