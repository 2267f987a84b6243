//! The set of MCP servers: adding, removing and restarting them by name, the tool catalog, the
//! restart policy and the statistics.
//!
//! Invariants:
//! - Operations on one name are serialised (a per-name lock), so concurrent add/remove/restart
//!   of the same name never start two processes or leave one behind.
//! - The catalog only holds tools of `ready` servers: a server's tools leave with its process.
//! - Every child is stopped before its slot is dropped, and `shutdown` stops all concurrently.
//! - No lock of the registry is held across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rmcp::model::{CallToolResult, Tool};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::McpError;
use super::child::{ChildSpec, ExitInfo, McpChild, Started};
use crate::config::{McpConfig, McpServerConfig, RestartPolicy, is_valid_server_name};
use crate::telemetry::LatencyFamily;

/// Restart policy `on-failure`: first delay, its ceiling, and the budget.
const RESTART_FIRST_DELAY: Duration = Duration::from_secs(1);
const RESTART_MAX_DELAY: Duration = Duration::from_secs(30);
const RESTART_BUDGET: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(600);

/// Where a server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    Starting,
    Ready,
    /// The process ended by itself (see `exit_status`).
    Exited,
    /// It could not be started (see `last_error`).
    Failed,
    Stopping,
}

impl ServerState {
    pub const ALL: [ServerState; 5] = [
        Self::Starting,
        Self::Ready,
        Self::Exited,
        Self::Failed,
        Self::Stopping,
    ];
}

impl std::fmt::Display for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::Stopping => "stopping",
        };
        f.write_str(text)
    }
}

/// Counters behind `/mcp/health` and the metrics: the same counters, registered in the metrics
/// registry by [`register`](Self::register). Cheap to clone (each is an `Arc`).
#[derive(Debug, Clone)]
pub struct Statistics {
    pub servers_created: Counter,
    pub servers_failed: Counter,
    pub servers_removed: Counter,
    pub restarts: Counter,
    pub total_requests: Counter,
    pub failed_requests: Counter,
    /// Tool calls by server, tool and outcome.
    tool_calls: Family<ToolLabels, Counter>,
    tool_latency: LatencyFamily<ToolTimeLabels>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    server: String,
    tool: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolTimeLabels {
    server: String,
    tool: String,
}

impl Default for Statistics {
    fn default() -> Self {
        Self {
            servers_created: Counter::default(),
            servers_failed: Counter::default(),
            servers_removed: Counter::default(),
            restarts: Counter::default(),
            total_requests: Counter::default(),
            failed_requests: Counter::default(),
            tool_calls: Family::default(),
            tool_latency: crate::telemetry::latency_family(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct StatisticsView {
    pub servers_created: u64,
    pub servers_failed: u64,
    pub servers_removed: u64,
    /// Restarts by the API or after a failure (`lit_mux_mcp_restarts_total` in /metrics).
    pub restarts: u64,
    pub total_requests: u64,
    pub failed_requests: u64,
}

impl Statistics {
    fn view(&self) -> StatisticsView {
        StatisticsView {
            servers_created: self.servers_created.get(),
            servers_failed: self.servers_failed.get(),
            servers_removed: self.servers_removed.get(),
            restarts: self.restarts.get(),
            total_requests: self.total_requests.get(),
            failed_requests: self.failed_requests.get(),
        }
    }

    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        let counters = [
            (
                "mcp_server_starts",
                "MCP servers started successfully",
                &self.servers_created,
            ),
            (
                "mcp_server_start_failures",
                "MCP server starts that failed",
                &self.servers_failed,
            ),
            (
                "mcp_server_removals",
                "MCP servers removed",
                &self.servers_removed,
            ),
            (
                "mcp_restarts",
                "MCP server restarts, by the API or after a failure",
                &self.restarts,
            ),
            (
                "mcp_tool_requests",
                "Tool calls (/mcp/health total_requests)",
                &self.total_requests,
            ),
            (
                "mcp_tool_request_failures",
                "Tool calls that failed or returned an error result",
                &self.failed_requests,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "tool_calls",
            "Tool calls by server, tool and outcome",
            self.tool_calls.clone(),
        );
        registry.register(
            "tool_call_duration_seconds",
            "Time a tool call took, by server and tool",
            self.tool_latency.clone(),
        );
    }

    /// Counts one call. Calls that reached no tool are counted under `_unknown`, so that
    /// made-up names cannot create label values.
    fn record_call(
        &self,
        server: &str,
        tool: &str,
        result: &Result<CallToolResult, McpError>,
        elapsed: Duration,
    ) {
        let outcome = match result {
            Ok(result) if result.is_error == Some(true) => "tool_error",
            Ok(_) => "ok",
            Err(McpError::UnknownServer(_) | McpError::UnknownTool { .. }) => "unknown",
            Err(McpError::Timeout { .. }) => "timeout",
            Err(McpError::Died { .. }) => "died",
            Err(McpError::NotReady { .. } | McpError::Disabled) => "not_ready",
            Err(_) => "protocol_error",
        };
        let (server, tool) = if outcome == "unknown" {
            ("_unknown".to_owned(), "_unknown".to_owned())
        } else {
            (server.to_owned(), tool.to_owned())
        };
        self.tool_latency
            .get_or_create(&ToolTimeLabels {
                server: server.clone(),
                tool: tool.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.tool_calls
            .get_or_create(&ToolLabels {
                server,
                tool,
                outcome,
            })
            .inc();
    }
}

/// Whether another restart fits the budget (at most `RESTART_BUDGET` in `RESTART_WINDOW`);
/// forgets restarts older than the window.
fn restart_allowed(recent: &mut VecDeque<Instant>, now: Instant) -> bool {
    while recent
        .front()
        .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
    {
        recent.pop_front();
    }
    recent.len() < RESTART_BUDGET
}

/// 1 s, 2 s, 4 s … up to 30 s.
fn next_restart_delay(delay: Duration) -> Duration {
    (delay * 2).min(RESTART_MAX_DELAY)
}

/// How a server ended, for the API.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExitView {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub description: String,
}

impl From<&ExitInfo> for ExitView {
    fn from(exit: &ExitInfo) -> Self {
        Self {
            code: exit.code,
            signal: exit.signal,
            description: exit.description.clone(),
        }
    }
}

/// `{name, version}` the server announced.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfoView {
    pub name: String,
    pub version: String,
}

/// One server as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub state: ServerState,
    pub running: bool,
    pub pid: Option<u32>,
    pub uptime_seconds: Option<f64>,
    pub restarts: u32,
    pub restart: RestartPolicy,
    pub timeout: u64,
    pub exit_status: Option<ExitView>,
    pub tool_count: usize,
    pub tools: Vec<String>,
    pub server_info: Option<ServerInfoView>,
    pub protocol_version: Option<String>,
    pub last_error: Option<String>,
}

/// One tool in the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogTool {
    pub name: String,
    pub description: String,
    pub server: String,
    /// The tool's JSON Schema for its arguments.
    pub parameters: serde_json::Value,
}

/// One tool of a ready server exactly as the server described it (schemas, annotations, `_meta`),
/// for clients that speak MCP themselves.
#[derive(Debug, Clone)]
pub struct ServedTool {
    pub server: String,
    pub tool: Tool,
}

/// A server's slot: its config and what is known of its current process.
struct Slot {
    config: McpServerConfig,
    state: ServerState,
    child: Option<Arc<McpChild>>,
    tools: Vec<Tool>,
    /// Bumped at each (re)start so a stale supervisor never updates a newer process's slot.
    generation: u64,
    restarts: u32,
    recent_restarts: VecDeque<Instant>,
    exit: Option<ExitInfo>,
    last_error: Option<String>,
    /// Cancelled when the slot is removed: ends its supervisor and any pending restart.
    removed: CancellationToken,
}

impl Slot {
    fn new(config: McpServerConfig) -> Self {
        Self {
            config,
            state: ServerState::Starting,
            child: None,
            tools: Vec::new(),
            generation: 0,
            restarts: 0,
            recent_restarts: VecDeque::new(),
            exit: None,
            last_error: None,
            removed: CancellationToken::new(),
        }
    }

    fn view(&self) -> ServerView {
        let live = self
            .child
            .as_ref()
            .filter(|_| self.state == ServerState::Ready);
        ServerView {
            name: self.config.name.clone(),
            command: self.config.command.clone(),
            args: self.config.args.clone(),
            state: self.state,
            running: self.state == ServerState::Ready,
            pid: self.child.as_ref().map(|c| c.pid()),
            uptime_seconds: live.map(|c| (c.uptime().as_secs_f64() * 1000.0).round() / 1000.0),
            restarts: self.restarts,
            restart: self.config.restart,
            timeout: self.config.timeout,
            exit_status: self.exit.as_ref().map(ExitView::from),
            tool_count: self.tools.len(),
            tools: self.tools.iter().map(|t| t.name.to_string()).collect(),
            server_info: self.child.as_ref().map(|c| ServerInfoView {
                name: c.server_info().name.clone(),
                version: c.server_info().version.clone(),
            }),
            protocol_version: self.child.as_ref().map(|c| c.protocol_version().to_owned()),
            last_error: self.last_error.clone(),
        }
    }
}

type Slots = BTreeMap<String, Arc<Mutex<Slot>>>;

struct HubInner {
    settings: McpConfig,
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

    /// Adds and starts a server; answers once it is ready or has failed (and is gone).
    pub async fn add(&self, config: McpServerConfig) -> Result<ServerView, McpError> {
        if !self.inner.settings.enabled {
            return Err(McpError::Disabled);
        }
        self.check_new_server(&config)?;
        self.add_inner(config, false).await
    }

    fn check_new_server(&self, config: &McpServerConfig) -> Result<(), McpError> {
        if !is_valid_server_name(&config.name) {
            return Err(McpError::InvalidRequest(format!(
                "Invalid server name {:?}: use 1 to 64 of A-Z a-z 0-9 _ -",
                config.name
            )));
        }
        if config.command.trim().is_empty() {
            return Err(McpError::InvalidRequest(
                "command must not be empty".to_owned(),
            ));
        }
        if let Some(field) = config.nul_byte() {
            return Err(McpError::InvalidRequest(format!(
                "{field} contains a NUL byte, which a process's command line and environment cannot hold"
            )));
        }
        if config.timeout == 0 {
            return Err(McpError::InvalidRequest(
                "timeout must be at least 1 second".to_owned(),
            ));
        }
        if let Some(allowed) = &self.inner.settings.allowed_commands
            && !allowed.iter().any(|c| c == &config.command)
        {
            return Err(McpError::NotAllowed(format!(
                "Command {:?} is not in mcp.allowed_commands",
                config.command
            )));
        }
        Ok(())
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

    /// Starts the process for `slot` and records the outcome. Called with the name lock held.
    /// Boxed because it is reached again from the supervisor it spawns (restart on failure).
    fn launch<'a>(
        &'a self,
        slot: &'a Arc<Mutex<Slot>>,
        config: &'a McpServerConfig,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<ServerView, McpError>> + Send + 'a>> {
        Box::pin(self.launch_inner(slot, config))
    }

    async fn launch_inner(
        &self,
        slot: &Arc<Mutex<Slot>>,
        config: &McpServerConfig,
    ) -> Result<ServerView, McpError> {
        let generation = {
            let mut slot = lock(slot);
            slot.state = ServerState::Starting;
            slot.generation += 1;
            slot.generation
        };
        let spec = ChildSpec {
            name: config.name.clone(),
            command: config.command.clone(),
            args: config.args.clone(),
            env: config.env.clone(),
            timeout: Duration::from_secs(config.timeout),
            max_message_bytes: self.inner.settings.max_message_bytes,
        };
        match McpChild::start(&spec).await {
            Ok(Started {
                child,
                tools,
                tools_changed,
            }) => {
                self.inner.stats.servers_created.inc();
                let child = Arc::new(child);
                tracing::info!(server = %config.name, pid = child.pid(), tools = tools.len(), "MCP server ready");
                let view = {
                    let mut slot = lock(slot);
                    slot.state = ServerState::Ready;
                    slot.child = Some(Arc::clone(&child));
                    slot.tools = tools;
                    slot.exit = None;
                    slot.last_error = None;
                    slot.view()
                };
                self.catalog_changed();
                let hub = self.clone();
                let slot = Arc::clone(slot);
                self.inner.tasks.spawn(async move {
                    hub.supervise(slot, child, generation, tools_changed).await;
                });
                Ok(view)
            }
            Err(failure) => {
                self.inner.stats.servers_failed.inc();
                tracing::warn!(server = %config.name, "MCP server {failure}");
                let mut slot = lock(slot);
                slot.state = ServerState::Failed;
                slot.child = None;
                slot.tools.clear();
                slot.exit = failure.exit.clone();
                slot.last_error = Some(failure.to_string());
                Err(McpError::StartFailed {
                    server: config.name.clone(),
                    failure,
                })
            }
        }
    }

    /// Follows one process: tool-list changes while it runs, then its exit, then the restart
    /// policy.
    async fn supervise(
        &self,
        slot: Arc<Mutex<Slot>>,
        child: Arc<McpChild>,
        generation: u64,
        mut tools_changed: tokio::sync::mpsc::Receiver<()>,
    ) {
        let removed = lock(&slot).removed.clone();
        let exit = loop {
            tokio::select! {
                exit = child.exited() => break exit,
                Some(()) = tools_changed.recv() => {
                    match child.list_tools().await {
                        Ok(tools) => {
                            let mut slot = lock(&slot);
                            if slot.generation == generation && slot.state == ServerState::Ready {
                                tracing::info!(server = %child.name(), tools = tools.len(), "MCP tool list changed");
                                slot.tools = tools;
                                self.catalog_changed();
                            }
                        }
                        Err(err) => tracing::warn!(server = %child.name(), error = %err, "cannot refresh the tool list"),
                    }
                }
                () = removed.cancelled() => return,
            }
        };
        let config = {
            let mut slot = lock(&slot);
            if slot.generation != generation || slot.state == ServerState::Stopping {
                return;
            }
            slot.state = ServerState::Exited;
            slot.tools.clear();
            slot.exit = Some(exit.clone());
            slot.last_error = Some(format!("process {}", exit.description));
            slot.config.clone()
        };
        self.catalog_changed();
        tracing::warn!(server = %config.name, exit = %exit.description, "MCP server exited");
        // Close the protocol side and make sure nothing of the group lingers.
        child.stop().await;
        if config.restart == RestartPolicy::OnFailure && !exit.success() {
            self.restart_after_failure(slot, generation).await;
        }
    }

    /// `restart: on-failure`: retries with a doubling delay while the budget lasts.
    async fn restart_after_failure(&self, slot: Arc<Mutex<Slot>>, mut generation: u64) {
        let mut delay = RESTART_FIRST_DELAY;
        loop {
            let (removed, config) = {
                let mut slot = lock(&slot);
                if !restart_allowed(&mut slot.recent_restarts, Instant::now()) {
                    slot.state = ServerState::Failed;
                    slot.last_error = Some(format!(
                        "{} restarts within {} minutes; not restarting again",
                        RESTART_BUDGET,
                        RESTART_WINDOW.as_secs() / 60
                    ));
                    return;
                }
                (slot.removed.clone(), slot.config.clone())
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = removed.cancelled() => return,
                () = self.inner.shutting_down.cancelled() => return,
            }
            let name_lock = self.name_lock(&config.name);
            let serialised = name_lock.lock().await;
            {
                let mut slot = lock(&slot);
                // Removed, restarted by hand, or already replaced while we waited.
                if removed.is_cancelled() || slot.generation != generation {
                    return;
                }
                slot.restarts += 1;
                self.inner.stats.restarts.inc();
                slot.recent_restarts.push_back(Instant::now());
            }
            tracing::info!(server = %config.name, "restarting MCP server after failure");
            let outcome = self.launch(&slot, &config).await;
            drop(serialised);
            self.release_name_lock(&config.name, name_lock);
            if outcome.is_ok() {
                return;
            }
            generation = lock(&slot).generation;
            delay = next_restart_delay(delay);
        }
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
        let child = {
            let mut slot = lock(&slot);
            slot.state = ServerState::Stopping;
            slot.tools.clear();
            slot.removed.cancel();
            slot.child.clone()
        };
        self.catalog_changed();
        if let Some(child) = child {
            child.stop().await;
        }
        lock(&self.inner.slots).remove(name);
        self.inner.stats.servers_removed.inc();
        tracing::info!(server = %name, "MCP server removed");
        Ok(())
    }

    /// Stops the server's process and starts a new one with the same config.
    pub async fn restart(&self, name: &str) -> Result<ServerView, McpError> {
        let name_lock = self.name_lock(name);
        let serialised = name_lock.lock().await;
        let result = async {
            let slot = lock(&self.inner.slots)
                .get(name)
                .cloned()
                .ok_or_else(|| McpError::UnknownServer(name.to_owned()))?;
            let (child, config) = {
                let mut slot = lock(&slot);
                slot.state = ServerState::Stopping;
                slot.tools.clear();
                (slot.child.take(), slot.config.clone())
            };
            self.catalog_changed();
            if let Some(child) = child {
                child.stop().await;
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

    /// What the server's process last wrote to stderr.
    pub fn logs(&self, name: &str) -> Result<String, McpError> {
        let slot = self.slot(name)?;
        let slot = lock(&slot);
        Ok(match &slot.child {
            Some(child) => child.stderr_text(),
            None => slot.last_error.clone().unwrap_or_default(),
        })
    }

    /// Every tool of every ready server, ordered by server then tool name.
    pub fn catalog(&self) -> Vec<CatalogTool> {
        self.served_tools()
            .into_iter()
            .map(|served| CatalogTool {
                name: served.tool.name.to_string(),
                description: served
                    .tool
                    .description
                    .as_deref()
                    .unwrap_or_default()
                    .to_owned(),
                parameters: serde_json::Value::Object((*served.tool.input_schema).clone()),
                server: served.server,
            })
            .collect()
    }

    /// The same tools, in the same order, with everything their servers said about them.
    pub fn served_tools(&self) -> Vec<ServedTool> {
        let mut tools = Vec::new();
        for slot in self.slots() {
            let slot = lock(&slot);
            if slot.state != ServerState::Ready {
                continue;
            }
            tools.extend(slot.tools.iter().map(|tool| ServedTool {
                server: slot.config.name.clone(),
                tool: tool.clone(),
            }));
        }
        tools
    }

    /// Calls `tool` on `server`, counting the request and its failure.
    pub async fn call_tool(
        &self,
        server: &str,
        tool: &str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<CallToolResult, McpError> {
        self.inner.stats.total_requests.inc();
        let started = Instant::now();
        let result = self.call_tool_inner(server, tool, arguments).await;
        if result.as_ref().map_or(true, |r| r.is_error == Some(true)) {
            self.inner.stats.failed_requests.inc();
        }
        self.inner
            .stats
            .record_call(server, tool, &result, started.elapsed());
        result
    }

    async fn call_tool_inner(
        &self,
        server: &str,
        tool: &str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<CallToolResult, McpError> {
        let child = {
            let slot = self.slot(server)?;
            let slot = lock(&slot);
            if let (ServerState::Exited, Some(exit)) = (slot.state, &slot.exit) {
                return Err(McpError::Died {
                    server: server.to_owned(),
                    exit: exit.description.clone(),
                    stderr_tail: String::new(),
                });
            }
            if slot.state != ServerState::Ready {
                return Err(McpError::NotReady {
                    server: server.to_owned(),
                    state: slot.state.to_string(),
                });
            }
            if !slot.tools.iter().any(|t| t.name == tool) {
                return Err(McpError::UnknownTool {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                });
            }
            slot.child.clone().ok_or_else(|| McpError::NotReady {
                server: server.to_owned(),
                state: slot.state.to_string(),
            })?
        };
        child.call_tool(tool, arguments).await
    }

    /// Removes servers whose process is gone (`exited`, `failed`) and returns their names, as
    /// the predecessor's health check did.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_1_s_to_30_s() {
        let mut delays = vec![RESTART_FIRST_DELAY];
        while delays.len() < 8 {
            delays.push(next_restart_delay(delays[delays.len() - 1]));
        }
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn at_most_5_restarts_in_10_minutes() {
        let start = Instant::now();
        let mut recent = VecDeque::new();
        for i in 0..5 {
            assert!(restart_allowed(&mut recent, start + Duration::from_secs(i)));
            recent.push_back(start + Duration::from_secs(i));
        }
        assert!(!restart_allowed(
            &mut recent,
            start + Duration::from_secs(60)
        ));
        // Once the first falls out of the window, one more is allowed.
        assert!(restart_allowed(
            &mut recent,
            start + Duration::from_secs(601)
        ));
        assert_eq!(recent.len(), 4);
    }
}
