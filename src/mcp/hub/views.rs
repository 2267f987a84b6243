//! What the API shows of a server. `command`, `args` and `pid` exist only for a transport that
//! runs a process (stdio); other transports leave them out of the JSON.

use serde::Serialize;

use super::slot::{ServerState, Slot};
use crate::config::RestartPolicy;
use crate::mcp::connection::ExitInfo;

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
    /// The command run, for a transport that runs one (stdio); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The command's arguments, beside `command`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    pub state: ServerState,
    pub running: bool,
    /// For a transport that runs a process: the last process's id while its connection is
    /// kept, `Some(None)` (JSON `null`) when there is none. Absent for other transports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<Option<u32>>,
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

impl Slot {
    pub(super) fn view(&self) -> ServerView {
        let info = self.connection.as_ref().map(|c| c.info());
        let live = info.filter(|_| self.state == ServerState::Ready);
        let command_line = self.config.transport.command_line();
        ServerView {
            name: self.config.name.clone(),
            command: command_line.map(|(command, _)| command.to_owned()),
            args: command_line.map(|(_, args)| args.to_vec()),
            state: self.state,
            running: self.state == ServerState::Ready,
            pid: command_line.map(|_| info.and_then(|info| info.pid)),
            uptime_seconds: live
                .map(|info| (info.connected_at.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
            restarts: self.restarts,
            restart: self.config.restart,
            timeout: self.config.timeout,
            exit_status: self.exit.as_ref().map(ExitView::from),
            tool_count: self.tools.len(),
            tools: self.tools.iter().map(|t| t.name.to_string()).collect(),
            server_info: info.map(|info| ServerInfoView {
                name: info.server_info.name.clone(),
                version: info.server_info.version.clone(),
            }),
            protocol_version: info.map(|info| info.protocol_version.clone()),
            last_error: self.last_error.clone(),
        }
    }
}
