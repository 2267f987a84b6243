//! Where this crate's fixture binaries are: built on first use when missing or out of date.
//!
//! Cargo builds a dev-dependency's library for lit-mux's tests but not its binaries. So the
//! first test or benchmark that asks for `mcp-fixture` or `passthrough-proxy` looks in the
//! target directory and profile its own executable was built in, and when a binary is missing
//! or older than this crate's sources, builds both there, once per process, with
//! `cargo build --workspace --bins --test bins`: selecting a test target makes Cargo resolve
//! the dependencies' features as `cargo test` does, so the build reuses the test build's
//! dependencies instead of compiling them again. `cargo test --workspace` (what `scripts/test`
//! runs) builds the binaries beforehand, for this crate's own test `bins`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// This crate's directory, for its manifest and its sources.
const CRATE_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The path of `mcp-fixture`, the misbehaving MCP server (`src/bin/mcp_fixture.rs`).
pub fn mcp_fixture() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| locate("mcp-fixture"))
}

/// The path of `passthrough-proxy`, the proxy that only forwards (`src/bin/passthrough_proxy.rs`).
pub fn passthrough_proxy() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| locate("passthrough-proxy"))
}

/// `name` in the current profile's directory, built first when needed.
fn locate(name: &str) -> String {
    let build = Build::of_current_exe();
    let path = build.profile_dir.join(name);
    if is_stale(&path) {
        build_once(&build);
    }
    if !path.exists() {
        panic!(
            "{} is missing after building the fixtures; run `{}` and look at its output",
            path.display(),
            build.command_line()
        );
    }
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
        .to_owned()
}

/// Missing, or older than a source of this crate (none when the sources are not on this machine).
fn is_stale(binary: &Path) -> bool {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    let crate_dir = Path::new(CRATE_DIR);
    let manifest = modified(&crate_dir.join("Cargo.toml"));
    newest(&crate_dir.join("src")).max(manifest) > Some(built)
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

/// The newest modification time of a file under `dir`.
fn newest(dir: &Path) -> Option<SystemTime> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                newest(&path)
            } else {
                modified(&path)
            }
        })
        .max()
}

/// Runs the build at most once per process; a failed build fails every caller with its output.
fn build_once(build: &Build) {
    static OUTCOME: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(failure) = OUTCOME.get_or_init(|| build.run()) {
        panic!("{failure}");
    }
}

/// Where the running executable was built, and so where the fixtures belong.
struct Build {
    /// `target/<profile>` (or `target/<triple>/<profile>`).
    profile_dir: PathBuf,
    target_dir: PathBuf,
    triple: Option<String>,
    profile: String,
}

impl Build {
    /// Test and benchmark executables live in `<target>/[<triple>/]<profile>/deps/`.
    fn of_current_exe() -> Self {
        let exe = std::env::current_exe()
            .unwrap_or_else(|e| panic!("cannot tell where this executable is: {e}"));
        let parent = exe.parent().unwrap_or(Path::new("."));
        let profile_dir = if parent.ends_with("deps") {
            parent.parent().unwrap_or(parent)
        } else {
            parent
        }
        .to_path_buf();
        let above = profile_dir.parent().unwrap_or(&profile_dir).to_path_buf();
        // Cargo keeps its tag and its cache of rustc's answers at the root of a target
        // directory; a directory between the root and the profile is a target triple's.
        let is_root =
            |dir: &Path| dir.join("CACHEDIR.TAG").exists() || dir.join(".rustc_info.json").exists();
        let (target_dir, triple) = match above.parent() {
            Some(root) if !is_root(&above) && is_root(root) => (
                root.to_path_buf(),
                above
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned()),
            ),
            _ => (above, None),
        };
        let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        Self {
            profile_dir,
            target_dir,
            triple,
            profile,
        }
    }

    fn command(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .args([
                "build",
                "--workspace",
                "--bins",
                "--test",
                "bins",
                "--manifest-path",
            ])
            .arg(Path::new(CRATE_DIR).join("Cargo.toml"))
            .args(["--profile", &self.profile, "--target-dir"])
            .arg(&self.target_dir);
        if let Some(triple) = &self.triple {
            command.args(["--target", triple]);
        }
        command
    }

    /// What to run by hand when the build fails.
    fn command_line(&self) -> String {
        let mut line = format!(
            "cargo build --workspace --bins --test bins --profile {} --target-dir {}",
            self.profile,
            self.target_dir.display()
        );
        if let Some(triple) = &self.triple {
            line += &format!(" --target {triple}");
        }
        line
    }

    fn run(&self) -> Result<(), String> {
        eprintln!(
            "testkit: building the fixture binaries: {}",
            self.command_line()
        );
        let output = self.command().output().map_err(|e| {
            format!(
                "cannot run cargo to build the test fixtures ({e}); run `{}`",
                self.command_line()
            )
        })?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "building the test fixtures failed ({}); run `{}` to see why:\n{}",
            output.status,
            self.command_line(),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
