//! Which transport serves a server entry: the one place that names every transport, so that
//! the supervisor ([`hub`](super::hub)) reaches each through [`McpConnection`] alone and a new
//! transport is a folder beside [`stdio`](super::stdio) plus an arm here.

use super::connection::{ConnectSpec, Connected, StartFailure};
use super::launch;
use super::stdio::StdioConnection;
use crate::config::McpTransport;

/// Connects to the server `spec` describes and runs the handshake (`initialize`,
/// `notifications/initialized`, every page of `tools/list`) within `spec.timeout`. On failure
/// nothing of the attempt is left (for stdio: the child is reaped, its pipes closed).
pub async fn connect(spec: ConnectSpec<'_>) -> Result<Connected, StartFailure> {
    match spec.transport {
        McpTransport::Stdio(stdio) => {
            let prepared = launch::prepare_child(stdio, spec.child_environment);
            // What runs, for the operator: the server's own variable names, never their values.
            tracing::info!(
                server = %spec.name,
                program = %prepared.command,
                args = ?prepared.args,
                env = ?stdio.env.keys().collect::<Vec<_>>(),
                "starting MCP server"
            );
            StdioConnection::start(spec, &prepared).await
        }
    }
}
