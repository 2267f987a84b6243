//! What the benchmarks share: the release lit-mux in a temporary HOME, and percentiles.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const LIT_MUX: &str = env!("CARGO_BIN_EXE_lit-mux");

/// `lit-mux start` on a free port, with `config` as its config file when given; SIGTERM on drop.
pub struct LitMux {
    pub child: Child,
    pub url: String,
    _home: tempfile::TempDir,
}

impl LitMux {
    pub fn start(config: Option<&str>) -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut command = Command::new(LIT_MUX);
        command.args(["start", "--port", "0"]);
        if let Some(yaml) = config {
            let path = home.path().join("config.yaml");
            std::fs::write(&path, yaml).unwrap();
            command.arg("--config").arg(path);
        }
        let mut child = command
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("MCP_SERVERS")
            .env("RUST_LOG", "error")
            .current_dir(home.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_once("listening on ")
            .unwrap()
            .1
            .trim()
            .to_owned();
        Self {
            child,
            url,
            _home: home,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for LitMux {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The `p` quantile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    percentile(&samples, 0.5)
}
