//! What an API client may start (`mcp.allowed_commands`) and which environment names it may set
//! (`mcp.allowed_env`). Servers from the config file are trusted and never checked here.
//!
//! Invariants, for a server admitted while `allowed_commands` is set:
//! - its program is the one an entry names: both are resolved with lit-mux's own `PATH` (never
//!   the request's) and compared as canonical paths, so `/tmp/x/python3` never passes for an
//!   allowed `python3`, and the admitted server runs by that absolute path;
//! - its arguments match the entry's pinned arguments, if it pins any: as many, each matching
//!   its pattern; a pattern with `*` never matches an argument holding a `..` segment, nor one
//!   starting with `-` unless the pattern does;
//! - it sets only the names `allowed_env` allows. A loader or interpreter variable
//!   ([`is_loader_or_interpreter_variable`]) is allowed only by its exact name, never by a
//!   pattern.

use std::path::{Path, PathBuf};

use super::environment::find_program;
use super::pattern;
use crate::config::{AllowedCommand, McpConfig, McpTransport, StdioTransport};

/// Variables that make a loader, a shell or an interpreter run other code than the program's
/// (or fetch it from elsewhere): a pattern never allows one, only its exact name. Compared in
/// upper case, since some tools read them in either case (`npm_config_*`, `http_proxy`).
const LOADER_AND_INTERPRETER_VARIABLES: &[&str] = &[
    // The dynamic loader and the C library.
    "LD_*",
    "DYLD_*",
    "GLIBC_TUNABLES",
    "MALLOC_*",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "RES_OPTIONS",
    "RESOLV_*",
    // Where programs and configuration are looked up; shells.
    "PATH",
    "HOME",
    "XDG_CONFIG_*",
    "ZDOTDIR",
    "ENV",
    "BASH_ENV",
    "BASH_FUNC_*",
    "SHELLOPTS",
    "BASHOPTS",
    "IFS",
    "PS4",
    "PROMPT_COMMAND",
    "CDPATH",
    // Interpreters and their package managers.
    "NODE_*",
    "NPM_*",
    "YARN_*",
    "COREPACK_*",
    "BUN_*",
    "DENO_*",
    "ELECTRON_*",
    "PYTHON*",
    "PIP_*",
    "UV_*",
    "VIRTUAL_ENV",
    "CONDA_*",
    "PERL*",
    "RUBY*",
    "GEM_*",
    "BUNDLE_*",
    "LUA_*",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "TCLLIBPATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "DOTNET_*",
    "CORECLR_*",
    "COMPLUS_*",
    "GIT_*",
    // Whom downloads trust and go through.
    "SSL_*",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "*_PROXY",
];

/// Whether `name` is a loader, shell or interpreter variable (see the list above).
pub(super) fn is_loader_or_interpreter_variable(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    LOADER_AND_INTERPRETER_VARIABLES
        .iter()
        .any(|protected| pattern::matches(protected, &upper))
}

/// Which names a request's `env` may hold.
#[derive(Debug, Clone)]
enum EnvRule {
    /// Neither `allowed_commands` nor `allowed_env` is set: whoever holds the key runs any
    /// program anyway.
    Any,
    /// These names and patterns (none when `allowed_commands` is set and `allowed_env` is not).
    Only(Vec<String>),
}

/// `mcp.allowed_commands` and `mcp.allowed_env`, applied to servers added through the API.
#[derive(Debug, Clone)]
pub struct LaunchPolicy {
    commands: Option<Vec<AllowedCommand>>,
    env: EnvRule,
}

impl LaunchPolicy {
    pub fn new(settings: &McpConfig) -> Self {
        let env = match (&settings.allowed_env, &settings.allowed_commands) {
            (Some(names), _) => EnvRule::Only(names.clone()),
            (None, Some(_)) => EnvRule::Only(Vec::new()),
            (None, None) => EnvRule::Any,
        };
        Self {
            commands: settings.allowed_commands.clone(),
            env,
        }
    }

    /// Admits a server asked for through the API, or says which rule refuses it. An admitted
    /// server's command is the absolute path it runs by when `allowed_commands` is set.
    pub fn admit(&self, transport: &McpTransport) -> Result<McpTransport, String> {
        match transport {
            McpTransport::Stdio(stdio) => self.admit_child(stdio).map(McpTransport::Stdio),
        }
    }

    fn admit_child(&self, stdio: &StdioTransport) -> Result<StdioTransport, String> {
        let program = match &self.commands {
            Some(allowed) => Some(self.check_command(allowed, stdio)?),
            None => None,
        };
        if let Some(name) = stdio.env.keys().find(|name| !self.env_allows(name)) {
            return Err(self.env_refusal(name));
        }
        let mut admitted = stdio.clone();
        if let Some(program) = program {
            admitted.command = program;
        }
        Ok(admitted)
    }

    fn env_allows(&self, name: &str) -> bool {
        match &self.env {
            EnvRule::Any => true,
            EnvRule::Only(allowed) => {
                if is_loader_or_interpreter_variable(name) {
                    allowed.iter().any(|entry| entry == name)
                } else {
                    allowed.iter().any(|entry| pattern::matches(entry, name))
                }
            }
        }
    }

    fn env_refusal(&self, name: &str) -> String {
        let why = match &self.env {
            EnvRule::Only(allowed) if allowed.is_empty() => {
                "mcp.allowed_commands is set and mcp.allowed_env is not, so no variable may be set"
            }
            _ if is_loader_or_interpreter_variable(name) => {
                "it is a loader or interpreter variable: only its exact name in mcp.allowed_env allows it"
            }
            _ => "no entry of mcp.allowed_env matches it",
        };
        format!("Environment variable \"{name}\" is not allowed by mcp.allowed_env: {why}")
    }

    /// The absolute path the request's command runs by, if an entry allows it with these
    /// arguments.
    fn check_command(
        &self,
        allowed: &[AllowedCommand],
        stdio: &StdioTransport,
    ) -> Result<String, String> {
        let lit_mux_path = std::env::var("PATH").ok();
        let (program, canonical) = resolve(&stdio.command, lit_mux_path.as_deref()).map_err(|err| {
            format!(
                "Command \"{}\" is not allowed by mcp.allowed_commands: it is not found with lit-mux's PATH ({err})",
                stdio.command
            )
        })?;
        let mut argument_refusal = None;
        for entry in allowed {
            let same_program = resolve(entry.command(), lit_mux_path.as_deref())
                .is_ok_and(|(_, allowed_canonical)| allowed_canonical == canonical);
            if !same_program {
                continue;
            }
            match entry
                .args()
                .map(|patterns| args_refusal(patterns, &stdio.args))
            {
                None | Some(None) => return Ok(path_text(&program)),
                Some(Some(refusal)) => {
                    argument_refusal.get_or_insert(refusal);
                }
            }
        }
        Err(match argument_refusal {
            Some(refusal) => format!(
                "Command \"{}\" is allowed by mcp.allowed_commands only with other arguments: {refusal}",
                stdio.command
            ),
            None => format!(
                "Command \"{}\" ({}) is not allowed by mcp.allowed_commands",
                stdio.command,
                canonical.display()
            ),
        })
    }
}

/// Why `args` do not fit the pinned `patterns`, if they do not.
fn args_refusal(patterns: &[String], args: &[String]) -> Option<String> {
    if patterns.len() != args.len() {
        return Some(format!(
            "the entry pins {} argument(s) ({}), got {}",
            patterns.len(),
            patterns.join(" "),
            args.len()
        ));
    }
    patterns
        .iter()
        .zip(args)
        .position(|(pattern, arg)| !arg_matches(pattern, arg))
        .map(|position| {
            format!(
                "argument {position} (\"{}\") does not match \"{}\"",
                args[position], patterns[position]
            )
        })
}

/// A pinned argument: the same text, or a pattern's match that is neither a `..` segment nor
/// an option slipped in where the pattern does not start with `-`.
fn arg_matches(pattern: &str, arg: &str) -> bool {
    if pattern::is_wildcard(pattern)
        && (arg.split('/').any(|segment| segment == "..")
            || (arg.starts_with('-') && !pattern.starts_with('-')))
    {
        return false;
    }
    pattern::matches(pattern, arg)
}

/// The absolute path `command` runs by (with `path` as PATH) and its canonical form.
fn resolve(command: &str, path: Option<&str>) -> std::io::Result<(PathBuf, PathBuf)> {
    let program = find_program(command, path)?;
    let canonical = Path::new(&program).canonicalize()?;
    Ok((program, canonical))
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::PinnedCommand;

    fn policy(yaml: &str) -> LaunchPolicy {
        let settings: McpConfig =
            yaml_serde::from_str(yaml).unwrap_or_else(|e| unreachable!("{e}"));
        LaunchPolicy::new(&settings)
    }

    fn request(command: &str, args: &[&str], env: &[&str]) -> StdioTransport {
        StdioTransport {
            command: command.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env
                .iter()
                .map(|name| ((*name).to_owned(), "x".to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn an_allowed_name_runs_by_its_absolute_path() {
        let policy = policy("allowed_commands: [sh]");
        let admitted = policy.admit_child(&request("sh", &["-c", "true"], &[]));
        let command = admitted.map(|s| s.command).unwrap_or_default();
        assert!(
            command.starts_with('/') && command.ends_with("/sh"),
            "{command}"
        );
    }

    #[test]
    fn another_program_of_the_same_name_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let fake = dir.path().join("sh");
        std::fs::copy("/bin/true", &fake).unwrap_or_else(|e| unreachable!("{e}"));
        let policy = policy("allowed_commands: [sh]");
        let refusal = policy
            .admit_child(&request(&fake.to_string_lossy(), &[], &[]))
            .err()
            .unwrap_or_default();
        assert!(refusal.contains("mcp.allowed_commands"), "{refusal}");
    }

    #[test]
    fn pinned_arguments_are_matched_position_by_position() {
        let entry = PinnedCommand {
            command: "sh".to_owned(),
            args: vec!["-y".to_owned(), "@scope/*".to_owned()],
        };
        let refuse = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            args_refusal(&entry.args, &args)
        };
        assert_eq!(refuse(&["-y", "@scope/server"]), None);
        assert!(refuse(&["-y", "@scope/../evil"]).is_some());
        assert!(refuse(&["-y", "@scope/x@npm:evil"]).is_some());
        assert!(!arg_matches("*.js", "--require.js"));
        assert!(arg_matches("--port=*", "--port=8080"));
        assert!(refuse(&["-y", "@other/server"]).is_some_and(|r| r.contains("argument 1")));
        assert!(refuse(&["-e", "@scope/server"]).is_some_and(|r| r.contains("argument 0")));
        assert!(refuse(&["-y", "@scope/server", "more"]).is_some());
    }

    #[test]
    fn loader_variables_need_their_exact_name() {
        let policy = policy("allowed_commands: [sh]\nallowed_env: ['*', LD_LIBRARY_PATH]");
        assert!(policy.env_allows("MY_TOKEN"));
        assert!(policy.env_allows("LD_LIBRARY_PATH"));
        for name in [
            "LD_PRELOAD",
            "NODE_OPTIONS",
            "PYTHONPATH",
            "BASH_ENV",
            "PATH",
            "npm_config_registry",
            "https_proxy",
        ] {
            assert!(!policy.env_allows(name), "{name}");
        }
    }

    #[test]
    fn with_allowed_commands_and_no_allowed_env_no_name_is_allowed() {
        assert!(!policy("allowed_commands: [sh]").env_allows("MY_TOKEN"));
        assert!(policy("{}").env_allows("LD_PRELOAD"));
        assert!(!policy("allowed_env: [MY_*]").env_allows("LD_PRELOAD"));
    }
}
