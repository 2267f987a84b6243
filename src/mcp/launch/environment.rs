//! The environment a server's child process gets, and the program it runs by.
//!
//! A child gets the variables of [`MINIMAL_ENV`] that lit-mux has, those `mcp.inherit_env`
//! names, then the server's own `env` — nothing else of lit-mux's environment: not its API
//! key, not a provider's key, nothing `.env` added beyond those names.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::pattern;

/// What every child gets of lit-mux's environment, those that are set (`LC_*`: every locale
/// category).
pub const MINIMAL_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TMPDIR", "TERM", "TZ",
];

/// lit-mux's variables that every child gets, read once when lit-mux starts.
#[derive(Debug, Clone, Default)]
pub struct ChildEnvironment {
    inherited: BTreeMap<String, String>,
}

impl ChildEnvironment {
    /// The variables of lit-mux's own environment that [`MINIMAL_ENV`] or `inherit_env` name.
    /// A variable whose name or value is not UTF-8 is left out.
    pub fn from_process(inherit_env: &[String]) -> Self {
        let vars = std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        });
        Self::from_vars(vars, inherit_env)
    }

    fn from_vars(vars: impl Iterator<Item = (String, String)>, inherit_env: &[String]) -> Self {
        let passed_on = |name: &str| {
            MINIMAL_ENV
                .iter()
                .copied()
                .chain(inherit_env.iter().map(String::as_str))
                .any(|pattern| pattern::matches(pattern, name))
        };
        Self {
            inherited: vars.filter(|(name, _)| passed_on(name)).collect(),
        }
    }

    /// The child's whole environment: what it inherits, then `own` (which wins).
    pub fn for_server(&self, own: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env = self.inherited.clone();
        env.extend(
            own.iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        env
    }
}

/// The absolute path `command` runs by: a command with a `/` is that path (made absolute from
/// the working directory), a bare name is looked up in `path` (a `PATH` value) as `execvp`
/// would, skipping empty and relative entries, which would depend on the working directory.
pub fn find_program(command: &str, path: Option<&str>) -> std::io::Result<PathBuf> {
    if command.contains('/') {
        return std::path::absolute(command);
    }
    path.unwrap_or_default()
        .split(':')
        .map(Path::new)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(command))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no executable \"{command}\" in PATH"),
            )
        })
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(names: &[&str]) -> impl Iterator<Item = (String, String)> {
        names
            .iter()
            .map(|name| ((*name).to_owned(), format!("{name}-value")))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn a_child_gets_the_minimal_set_and_what_inherit_env_names() {
        let env = ChildEnvironment::from_vars(
            vars(&[
                "PATH",
                "HOME",
                "LC_ALL",
                "LIT_MUX_API_KEY",
                "OPENAI_API_KEY",
                "MY_TOOL_HOME",
            ]),
            &["MY_*".to_owned()],
        );
        let own = BTreeMap::from([
            ("TOKEN".to_owned(), "t".to_owned()),
            ("HOME".to_owned(), "/h".to_owned()),
        ]);
        let names: Vec<String> = env.for_server(&own).into_keys().collect();
        assert_eq!(names, ["HOME", "LC_ALL", "MY_TOOL_HOME", "PATH", "TOKEN"]);
        assert_eq!(env.for_server(&own)["HOME"], "/h");
    }

    #[test]
    fn a_bare_name_is_looked_up_in_absolute_path_entries_only() {
        assert!(find_program("sh", Some("relative:/bin:/usr/bin")).is_ok_and(|p| p.is_absolute()));
        assert!(find_program("sh", Some("")).is_err());
        assert!(find_program("sh", None).is_err());
        assert_eq!(
            find_program("/opt/x/server", Some("/bin")).ok(),
            Some(PathBuf::from("/opt/x/server"))
        );
    }
}
