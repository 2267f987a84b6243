//! Starting a server's connection, following it while it lives, and the restart policy.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::slot::{ServerState, Slot};
use super::views::ServerView;
use super::{McpHub, lock};
use crate::config::{McpServerConfig, RestartPolicy};
use crate::mcp::McpError;
use crate::mcp::connection::{ConnectSpec, Connected, McpConnection};
use crate::mcp::transports;

/// Restart policy `on-failure`: first delay, its ceiling, and the budget.
const RESTART_FIRST_DELAY: Duration = Duration::from_secs(1);
const RESTART_MAX_DELAY: Duration = Duration::from_secs(30);
const RESTART_BUDGET: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(600);

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

impl McpHub {
    /// Connects to the server of `slot` and records the outcome. Called with the name lock held.
    /// Boxed because it is reached again from the supervisor it spawns (restart on failure).
    pub(super) fn launch<'a>(
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
        let spec = ConnectSpec {
            name: &config.name,
            transport: &config.transport,
            timeout: Duration::from_secs(config.timeout),
            max_message_bytes: self.inner.settings.max_message_bytes,
            child_environment: &self.inner.child_environment,
        };
        match transports::connect(spec).await {
            Ok(Connected {
                connection,
                tools,
                tools_changed,
            }) => {
                self.inner.stats.servers_created.inc();
                tracing::info!(server = %config.name, pid = connection.info().pid, tools = tools.len(), "MCP server ready");
                let view = {
                    let mut slot = lock(slot);
                    slot.state = ServerState::Ready;
                    slot.connection = Some(Arc::clone(&connection));
                    slot.tools = tools;
                    slot.exit = None;
                    slot.last_error = None;
                    slot.view()
                };
                self.catalog_changed();
                let hub = self.clone();
                let slot = Arc::clone(slot);
                self.inner.tasks.spawn(async move {
                    hub.supervise(slot, connection, generation, tools_changed)
                        .await;
                });
                Ok(view)
            }
            Err(failure) => {
                self.inner.stats.servers_failed.inc();
                tracing::warn!(server = %config.name, "MCP server {failure}");
                let mut slot = lock(slot);
                slot.state = ServerState::Failed;
                slot.connection = None;
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

    /// Follows one connection: tool-list changes while it lives, then its end, then the
    /// restart policy.
    async fn supervise(
        &self,
        slot: Arc<Mutex<Slot>>,
        connection: Arc<dyn McpConnection>,
        generation: u64,
        mut tools_changed: tokio::sync::mpsc::Receiver<()>,
    ) {
        let (removed, name) = {
            let slot = lock(&slot);
            (slot.removed.clone(), slot.config.name.clone())
        };
        let exit = loop {
            tokio::select! {
                exit = connection.closed() => break exit,
                Some(()) = tools_changed.recv() => {
                    match connection.list_tools().await {
                        Ok(tools) => {
                            let mut slot = lock(&slot);
                            if slot.generation == generation && slot.state == ServerState::Ready {
                                tracing::info!(server = %name, tools = tools.len(), "MCP tool list changed");
                                slot.tools = tools;
                                self.catalog_changed();
                            }
                        }
                        Err(err) => tracing::warn!(server = %name, error = %err, "cannot refresh the tool list"),
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
        // Close the protocol side and make sure nothing of the server lingers.
        connection.stop().await;
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
