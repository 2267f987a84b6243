//! The set of MCP servers: adding, removing and restarting them by name, the tool catalog, the
//! restart policy and the statistics.
//!
//! Invariants:
//! - Operations on one name are serialised (a per-name lock), so concurrent add/remove/restart
//!   of the same name never start two connections or leave one behind.
//! - The catalog only holds tools of `ready` servers: a server's tools leave with its
//!   connection.
//! - Every connection is stopped before its slot is dropped, and `shutdown` stops all
//!   concurrently.
//! - No lock of the registry is held across an `.await`.
//!
//! The hub reaches a server only through [`McpConnection`](crate::mcp::connection::McpConnection):
//! it knows nothing of processes, pipes or signals, and a new transport changes nothing here.
//! Split by concern: [`slot`] (a server's record and states), [`supervise`] (starting, following
//! and restarting), [`catalog`] (the ready servers' tools and calls to them), [`stats`] (the
//! counters) and [`views`] (what the API shows).

mod catalog;
mod slot;
mod stats;
mod supervise;
mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::catalog::{CatalogTool, ServedTool};
pub use self::slot::ServerState;
use self::slot::Slot;
pub use self::stats::{Statistics, StatisticsView};
pub use self::views::{ExitView, ServerInfoView, ServerView};
use super::McpError;
use super::launch::{ChildEnvironment, LaunchPolicy};
use crate::config::{McpConfig, McpServerConfig, is_valid_server_name};

type Slots = BTreeMap<String, Arc<Mutex<Slot>>>;

struct HubInner {
    settings: McpConfig,
    /// What the API may start (`allowed_commands`, `allowed_env`).
    policy: LaunchPolicy,
    /// What every child gets of lit-mux's environment, read once at start.
    child_environment: ChildEnvironment,
    slots: Mutex<Slots>,
    name_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    stats: Statistics,
    tasks: TaskTracker,
    shutting_down: CancellationToken,
    /// Bumped whenever the catalog (the ready servers' tools) may have changed.
    catalog_version: tokio::sync::watch::Sender<u64>,
}

/// The MCP servers of this lit-mux. Cheap to clone.
#[derive(Clone)]
pub struct McpHub {
    inner: Arc<HubInner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the registry down with it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl McpHub {
    pub fn new(settings: McpConfig) -> Self {
        Self {
            inner: Arc::new(HubInner {
                policy: LaunchPolicy::new(&settings),
                child_environment: ChildEnvironment::from_process(&settings.inherit_env),
                settings,
                slots: Mutex::new(BTreeMap::new()),
                name_locks: Mutex::new(HashMap::new()),
                stats: Statistics::default(),
                tasks: TaskTracker::new(),
                shutting_down: CancellationToken::new(),
                catalog_version: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// Changes whenever the catalog may have: a server became ready, changed its tools, exited,
    /// or is being stopped.
    pub fn catalog_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.catalog_version.subscribe()
    }

    fn catalog_changed(&self) {
        self.inner
            .catalog_version
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    pub fn statistics(&self) -> StatisticsView {
        self.inner.stats.view()
    }

    /// The counters themselves, for the metrics registry.
    pub fn statistics_handles(&self) -> Statistics {
        self.inner.stats.clone()
    }

    /// Starts the configured servers concurrently, in the background: the API does not wait for
    /// them, and one that fails shows as `failed`.
    pub fn start_configured(&self, servers: &[McpServerConfig]) {
        if !self.inner.settings.enabled {
            return;
        }
        for config in servers.iter().cloned() {
            let hub = self.clone();
            self.inner.tasks.spawn(async move {
                let name = config.name.clone();
                if let Err(err) = hub.add_inner(config, true).await {
                    tracing::warn!(server = %name, error = %err, "configured MCP server did not start");
                }
            });
        }
    }

    /// Adds and starts a server asked for through the API; answers once it is ready or has
    /// failed (and is gone). A server the policy refuses is neither started nor listed.
    pub async fn add(&self, config: McpServerConfig) -> Result<ServerView, McpError> {
        if !self.inner.settings.enabled {
            return Err(McpError::Disabled);
        }
        let config = self.admit(config)?;
        self.add_inner(config, false).await
    }

    /// Checks a server asked for through the API; returns it as it will run (under
    /// `allowed_commands`, its program by absolute path).
    fn admit(&self, mut config: McpServerConfig) -> Result<McpServerConfig, McpError> {
        if !is_valid_server_name(&config.name) {
            return Err(McpError::InvalidRequest(format!(
                "Invalid server name \"{}\": use 1 to 64 of A-Z a-z 0-9 _ -",
                config.name
            )));
        }
        if let Some((field, problem)) = config.transport.problem() {
            return Err(McpError::InvalidRequest(format!("{field} {problem}")));
        }
        if let Some((field, message)) = config.out_of_range() {
            return Err(McpError::OutOfRange { field, message });
        }
        config.transport = self
            .inner
            .policy
            .admit(&config.transport)
            .map_err(McpError::NotAllowed)?;
        Ok(config)
    }

    /// `keep_failed`: a server from the config stays listed as `failed`; one added through the
    /// API is forgotten, so that the same name can be tried again.
    async fn add_inner(
        &self,
        config: McpServerConfig,
        keep_failed: bool,
    ) -> Result<ServerView, McpError> {
        let name = config.name.clone();
        let name_lock = self.name_lock(&name);
        let _serialised = name_lock.lock().await;
        let slot = {
            let mut slots = lock(&self.inner.slots);
            if slots.contains_key(&name) {
                return Err(McpError::AlreadyExists(name));
            }
            let slot = Arc::new(Mutex::new(Slot::new(config.clone())));
            slots.insert(name.clone(), Arc::clone(&slot));
            slot
        };
        let result = self.launch(&slot, &config).await;
        if result.is_err() && !keep_failed {
            lock(&self.inner.slots).remove(&name);
        }
        drop(_serialised);
        self.release_name_lock(&name, name_lock);
        result
    }

    /// Stops and forgets a server.
    pub async fn remove(&self, name: &str) -> Result<(), McpError> {
        let name_lock = self.name_lock(name);
        let serialised = name_lock.lock().await;
        let result = self.remove_locked(name).await;
        drop(serialised);
        self.release_name_lock(name, name_lock);
        result
    }

    async fn remove_locked(&self, name: &str) -> Result<(), McpError> {
        let slot = lock(&self.inner.slots)
            .get(name)
            .cloned()
            .ok_or_else(|| McpError::UnknownServer(name.to_owned()))?;
        let connection = {
            let mut slot = lock(&slot);
            slot.state = ServerState::Stopping;
            slot.tools.clear();
            slot.removed.cancel();
            slot.connection.clone()
        };
        self.catalog_changed();
        if let Some(connection) = connection {
            connection.stop().await;
        }
        lock(&self.inner.slots).remove(name);
        self.inner.stats.servers_removed.inc();
        tracing::info!(server = %name, "MCP server removed");
        Ok(())
    }

    /// Stops the server's connection and starts a new one with the same config.
    pub async fn restart(&self, name: &str) -> Result<ServerView, McpError> {
        let name_lock = self.name_lock(name);
        let serialised = name_lock.lock().await;
        let result = async {
            let slot = lock(&self.inner.slots)
                .get(name)
                .cloned()
                .ok_or_else(|| McpError::UnknownServer(name.to_owned()))?;
            let (connection, config) = {
                let mut slot = lock(&slot);
                slot.state = ServerState::Stopping;
                slot.tools.clear();
                (slot.connection.take(), slot.config.clone())
            };
            self.catalog_changed();
            if let Some(connection) = connection {
                connection.stop().await;
            }
            lock(&slot).restarts += 1;
            self.inner.stats.restarts.inc();
            self.launch(&slot, &config).await
        }
        .await;
        drop(serialised);
        self.release_name_lock(name, name_lock);
        result
    }

    pub fn list(&self) -> Vec<ServerView> {
        self.slots().iter().map(|slot| lock(slot).view()).collect()
    }

    pub fn get(&self, name: &str) -> Result<ServerView, McpError> {
        let slot = self.slot(name)?;
        let view = lock(&slot).view();
        Ok(view)
    }

    /// What the server last wrote for its operator (stdio: its stderr), else its last error.
    pub fn logs(&self, name: &str) -> Result<String, McpError> {
        let slot = self.slot(name)?;
        let slot = lock(&slot);
        Ok(slot
            .connection
            .as_ref()
            .and_then(|connection| connection.logs())
            .or_else(|| slot.last_error.clone())
            .unwrap_or_default())
    }

    /// Removes servers whose connection is gone (`exited`, `failed`) and returns their names:
    /// the predecessor's health check did this on every GET; here only an explicit request
    /// does, so a dead server and its `last_error` stay visible until then.
    pub async fn clean_up_dead(&self) -> Vec<String> {
        let dead: Vec<String> = self
            .slots_named()
            .into_iter()
            .filter(|(_, slot)| {
                matches!(lock(slot).state, ServerState::Exited | ServerState::Failed)
            })
            .map(|(name, _)| name)
            .collect();
        let mut cleaned = Vec::new();
        for name in dead {
            // Re-checked under the name lock: a restart may have revived it meanwhile.
            let name_lock = self.name_lock(&name);
            let serialised = name_lock.lock().await;
            let still_dead = lock(&self.inner.slots).get(&name).is_some_and(|slot| {
                matches!(lock(slot).state, ServerState::Exited | ServerState::Failed)
            });
            if still_dead && self.remove_locked(&name).await.is_ok() {
                cleaned.push(name.clone());
            }
            drop(serialised);
            self.release_name_lock(&name, name_lock);
        }
        cleaned
    }

    /// Stops every server concurrently and waits for the hub's tasks.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.cancel();
        let names: Vec<String> = self.slots_named().into_iter().map(|(n, _)| n).collect();
        let stops = names.iter().map(|name| self.remove(name));
        futures_util::future::join_all(stops).await;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn slot(&self, name: &str) -> Result<Arc<Mutex<Slot>>, McpError> {
        lock(&self.inner.slots)
            .get(name)
            .cloned()
            .ok_or_else(|| McpError::UnknownServer(name.to_owned()))
    }

    fn slots(&self) -> Vec<Arc<Mutex<Slot>>> {
        lock(&self.inner.slots).values().cloned().collect()
    }

    fn slots_named(&self) -> Vec<(String, Arc<Mutex<Slot>>)> {
        lock(&self.inner.slots)
            .iter()
            .map(|(n, s)| (n.clone(), Arc::clone(s)))
            .collect()
    }

    fn name_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            lock(&self.inner.name_locks)
                .entry(name.to_owned())
                .or_default(),
        )
    }

    /// Forgets the lock of a name nobody uses any more, so churn of names does not grow memory.
    fn release_name_lock(&self, name: &str, ours: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = lock(&self.inner.name_locks);
        // Two references: the map's and ours. Anyone else waiting holds a third.
        if Arc::strong_count(&ours) == 2 && !lock(&self.inner.slots).contains_key(name) {
            locks.remove(name);
        }
    }
}
