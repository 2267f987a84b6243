//! What a server's child process is launched as: whether an API client may ask for it
//! ([`policy`]: `mcp.allowed_commands`, `mcp.allowed_env`), the program it runs by and the
//! environment it gets ([`environment`]: the minimal set, `mcp.inherit_env`, its own `env`).
//!
//! Decisions only: the stdio transport applies them (`env_clear`, the variables given, the
//! program by the path given) and owns everything else of the child.

mod environment;
mod pattern;
mod policy;

pub use environment::{ChildEnvironment, MINIMAL_ENV, find_program};
pub use policy::LaunchPolicy;

use crate::config::StdioTransport;

/// A child process as the stdio transport starts it: the program by its absolute path (looked
/// up in the `PATH` the child gets; already absolute for a server admitted under
/// `allowed_commands`) and the child's whole environment.
pub fn prepare_child(stdio: &StdioTransport, environment: &ChildEnvironment) -> StdioTransport {
    let env = environment.for_server(&stdio.env);
    // Not found: kept as written, so that the spawn reports the operating system's error.
    let command = find_program(&stdio.command, env.get("PATH").map(String::as_str))
        .ok()
        .and_then(|program| program.into_os_string().into_string().ok())
        .unwrap_or_else(|| stdio.command.clone());
    StdioTransport {
        command,
        args: stdio.args.clone(),
        env,
    }
}
