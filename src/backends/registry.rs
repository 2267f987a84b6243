//! The configured backends by name, with cached health and bounded model listings.
//!
//! A crowd of callers costs a backend little: one health check per [`HEALTH_CACHE`], and one
//! model listing in flight at a time, shared by every caller that asks meanwhile, its success
//! reused for [`MODELS_CACHE`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, WeakShared};

use super::metered::{BackendMetrics, Metered};
use crate::config::backends::BackendConfigs;

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
/// How long a successful model listing is reused. A failure is not: the next caller asks again
/// (callers that asked while it was in flight share it).
const MODELS_CACHE: Duration = Duration::from_secs(5);

type ListingFuture = BoxFuture<'static, Result<Arc<Vec<ModelInfo>>, BackendError>>;

/// A backend's model listing: the one in flight, and the last success.
#[derive(Default)]
struct ModelListing {
    /// Weak, so that a listing every caller gave up on is dropped (its request cancelled)
    /// rather than kept half done for the next caller.
    in_flight: Option<WeakShared<ListingFuture>>,
    fresh: Option<(Instant, Arc<Vec<ModelInfo>>)>,
}

fn lock(listing: &Mutex<ModelListing>) -> std::sync::MutexGuard<'_, ModelListing> {
    // The state is two options, consistent whatever panicked while holding it.
    listing
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One configured backend: its settings and, when enabled, its client.
pub struct BackendEntry {
    pub name: String,
    pub config: BackendConfig,
    /// `None` when the backend is disabled.
    pub client: Option<Arc<dyn Backend>>,
    health: tokio::sync::Mutex<Option<(Instant, bool)>>,
    listing: Arc<Mutex<ModelListing>>,
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
    /// The backend's models, bounded by [`MODELS_TIMEOUT`]; `None` when it is disabled. Callers
    /// at the same time share one listing; a success is reused for [`MODELS_CACHE`].
    pub async fn models(&self) -> Option<Result<Arc<Vec<ModelInfo>>, BackendError>> {
        let client = self.client.as_ref()?;
        let listing = {
            let mut state = lock(&self.listing);
            if let Some((at, models)) = &state.fresh
                && at.elapsed() < MODELS_CACHE
            {
                return Some(Ok(models.clone()));
            }
            match state.in_flight.as_ref().and_then(WeakShared::upgrade) {
                Some(listing) => listing,
                None => {
                    let listing =
                        list_models(self.name.clone(), client.clone(), self.listing.clone())
                            .boxed()
                            .shared();
                    state.in_flight = listing.downgrade();
                    listing
                }
            }
        };
        Some(listing.await)
    }
}

/// One listing, bounded by [`MODELS_TIMEOUT`], recorded in `listing` when it ends.
async fn list_models(
    name: String,
    client: Arc<dyn Backend>,
    listing: Arc<Mutex<ModelListing>>,
) -> Result<Arc<Vec<ModelInfo>>, BackendError> {
    let result = match tokio::time::timeout(MODELS_TIMEOUT, client.models()).await {
        Ok(result) => result.map(Arc::new),
        Err(_) => Err(BackendError::Timeout {
            backend: name,
            stage: TimeoutStage::ListingModels,
            secs: MODELS_TIMEOUT.as_secs(),
        }),
    };
    let mut state = lock(&listing);
    state.in_flight = None;
    if let Ok(models) = &result {
        state.fresh = Some((Instant::now(), models.clone()));
    }
    result
}

/// Why a backend cannot be used for a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendLookupError {
    #[error("unknown backend \"{0}\"")]
    Unknown(String),
    #[error("backend \"{0}\" is disabled")]
    Disabled(String),
}

/// The configured backends by name, in the config's order. Cheap to clone.
#[derive(Clone)]
pub struct BackendRegistry {
    entries: Arc<[BackendEntry]>,
    /// Each name's place in `entries`.
    by_name: Arc<BTreeMap<String, usize>>,
    metrics: BackendMetrics,
}

impl BackendRegistry {
    /// Builds a client for every enabled backend of `configs` (already validated).
    pub fn new(configs: &BackendConfigs) -> Result<Self, BackendError> {
        let mut entries = Vec::with_capacity(configs.len());
        let metrics = BackendMetrics::default();
        for (name, config) in configs.iter() {
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
            entries.push(BackendEntry {
                name: name.clone(),
                config: config.clone(),
                client,
                health: tokio::sync::Mutex::new(None),
                listing: Arc::default(),
            });
        }
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(place, entry)| (entry.name.clone(), place))
            .collect();
        Ok(Self {
            entries: entries.into(),
            by_name: Arc::new(by_name),
            metrics,
        })
    }

    /// The counters of every backend's calls.
    pub fn metrics(&self) -> &BackendMetrics {
        &self.metrics
    }

    /// Every backend, in the config's order (the built-in `echo` last).
    pub fn entries(&self) -> impl Iterator<Item = &BackendEntry> {
        self.entries.iter()
    }

    pub fn get(&self, name: &str) -> Option<&BackendEntry> {
        self.by_name.get(name).map(|&place| &self.entries[place])
    }

    /// The client of an enabled backend.
    pub fn client(&self, name: &str) -> Result<Arc<dyn Backend>, BackendLookupError> {
        let entry = self
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
            .iter()
            .filter(|entry| entry.client.is_some())
            .map(|entry| entry.name.clone())
            .collect()
    }
}
