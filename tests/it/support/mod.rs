//! Test support: run the real `lit-mux` binary in a temporary HOME, talk HTTP to it, signal it.
//!
//! Every spawned process is killed on drop, and its stderr goes to a file in the test's HOME so
//! a chatty server can never block on a full pipe; `stderr()` reads it back for assertions.
//! What is not specific to lit-mux (fake providers, SSE, `/proc`, the fixture binaries) is in
//! the `lit-mux-testkit` crate (`crates/testkit`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod mcp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lit-mux");

/// Environment variables lit-mux reads; cleared for every child so the developer's own
/// settings never leak into a test.
const CLEARED_ENV: &[&str] = &[
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "LIT_MUX_CONFIG",
    "LIT_MUX_URL",
    "LIT_MUX_API_KEY",
    "MCP_SERVERS",
    "RUST_LOG",
];

/// A temporary HOME (also the working directory) for one test.
pub struct TestHome {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl TestHome {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("lit-mux-test-")
                .tempdir()
                .expect("create temp HOME"),
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where lit-mux looks for its config by default.
    pub fn default_config_path(&self) -> PathBuf {
        self.path().join(".config/lit-mux/config.yaml")
    }

    /// Writes `text` to `name` under HOME and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// Writes the default config file.
    pub fn write_config(&self, yaml: &str) -> PathBuf {
        self.write(".config/lit-mux/config.yaml", yaml)
    }

    /// Sets an environment variable for every process started from this HOME.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.wrapped_command(&[], args)
    }

    /// Like [`command`](Self::command), but runs lit-mux through `wrapper` (a program and its
    /// arguments; lit-mux and `args` follow them), in the same environment.
    pub fn wrapped_command(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(BIN);
                command
            }
            None => Command::new(BIN),
        };
        command
            .args(args)
            .current_dir(self.path())
            .env("HOME", self.path());
        for name in CLEARED_ENV {
            command.env_remove(name);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command.stdin(Stdio::null());
        command
    }

    /// Runs a CLI command to completion (at most 30 s).
    pub fn run(&self, args: &[&str]) -> CliOutput {
        finish(self.command(args), args)
    }

    /// Runs a CLI command through `wrapper` (see [`wrapped_command`](Self::wrapped_command)) to
    /// completion (at most 30 s).
    pub fn run_wrapped(&self, wrapper: &[&str], args: &[&str]) -> CliOutput {
        finish(self.wrapped_command(wrapper, args), args)
    }

    /// Starts `lit-mux start --port 0 EXTRA...` and waits until it listens.
    pub fn start(&self, extra: &[&str]) -> Server {
        self.try_start(extra)
            .unwrap_or_else(|failure| panic!("lit-mux did not start: {failure}"))
    }

    /// Like [`start`](Self::start) but returns what happened when the server does not come up.
    pub fn try_start(&self, extra: &[&str]) -> Result<Server, String> {
        let stderr_path = self.path().join(format!(
            "lit-mux-stderr-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let stderr_file = std::fs::File::create(&stderr_path).expect("create stderr log");
        self.launch(&[], extra, stderr_file.into(), stderr_path)
    }

    /// Like [`try_start`](Self::try_start), but runs lit-mux through `wrapper` (see
    /// [`wrapped_command`](Self::wrapped_command)), which must end by `exec`ing it.
    pub fn try_start_wrapped(&self, wrapper: &[&str], extra: &[&str]) -> Result<Server, String> {
        let stderr_path = self.path().join("lit-mux-wrapped-stderr.log");
        let stderr_file = std::fs::File::create(&stderr_path).expect("create stderr log");
        self.launch(wrapper, extra, stderr_file.into(), stderr_path)
    }

    /// Starts `WRAPPER... lit-mux start --port 0 EXTRA...` (e.g. under `prlimit`) and waits until
    /// it listens; the wrapper must exec lit-mux, so that the process is lit-mux itself.
    pub fn start_wrapped(&self, wrapper: &[&str], extra: &[&str]) -> Server {
        self.try_start_wrapped(wrapper, extra)
            .unwrap_or_else(|failure| panic!("lit-mux did not start: {failure}"))
    }

    /// Starts lit-mux with its stderr going to `stderr` (then [`Server::stderr`] is empty).
    pub fn start_with_stderr(&self, extra: &[&str], stderr: Stdio) -> Server {
        self.launch(&[], extra, stderr, PathBuf::new())
            .unwrap_or_else(|failure| panic!("lit-mux did not start: {failure}"))
    }

    fn launch(
        &self,
        wrapper: &[&str],
        extra: &[&str],
        stderr: Stdio,
        stderr_path: PathBuf,
    ) -> Result<Server, String> {
        let mut args = vec!["start", "--port", "0"];
        args.extend_from_slice(extra);
        let mut child = self
            .wrapped_command(wrapper, &args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn lit-mux start");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Forward the first line, then keep draining so the server never blocks on stdout.
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(30));
        let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let url = line.ok().and_then(|line| {
            line.split_once("listening on ")
                .map(|(_, url)| url.trim().to_owned())
        });
        match url {
            Some(url) => Ok(Server {
                child,
                url,
                stderr_path,
                // One connection per request, closed by the server after its answer: an idle
                // connection would be a descriptor in lit-mux, and the leak tests compare its
                // descriptor count with a baseline.
                http: reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .default_headers(reqwest::header::HeaderMap::from_iter([(
                        reqwest::header::CONNECTION,
                        reqwest::header::HeaderValue::from_static("close"),
                    )]))
                    .build()
                    .expect("HTTP client"),
            }),
            None => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("exit status {status:?}; stderr:\n{}", stderr()))
            }
        }
    }
}

/// Runs `command` with its output captured; kills it after 30 s.
fn finish(mut command: Command, args: &[&str]) -> CliOutput {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lit-mux");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(output) => CliOutput::from(output.expect("wait for lit-mux")),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("lit-mux {args:?} did not finish within 30 s");
        }
    }
}

/// A finished CLI command.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl From<Output> for CliOutput {
    fn from(output: Output) -> Self {
        Self {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A running `lit-mux start`, killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    stderr_path: PathBuf,
    pub http: reqwest::Client,
}

impl Server {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .expect("signal lit-mux");
    }

    /// Waits up to `limit` for the process to exit; returns its status and the time it took.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path))
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path))
    }

    /// GET, expecting 200 and JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = status_and_json(self.get(path).send().await.expect("GET")).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// POST a JSON body; the status and JSON answer.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        status_and_json(self.post(path).json(body).send().await.expect("POST")).await
    }

    pub async fn delete_json(&self, path: &str) -> (u16, serde_json::Value) {
        status_and_json(self.delete(path).send().await.expect("DELETE")).await
    }

    /// File descriptors lit-mux has open right now.
    pub fn open_fds(&self) -> usize {
        testkit::processes::open_fds(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response's status and JSON body (`Value::Null` when the body is not JSON).
pub async fn status_and_json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("read body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// A TCP port with nothing listening on it (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Sends raw bytes on a fresh connection and returns the status code and body of the answer;
/// for requests a well-behaved client library would not send (a declared body never sent).
pub async fn raw_request(server: &Server, request: &[u8]) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("send request");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
            if let Some(end) = find_body_end(&answer) {
                answer.truncate(end);
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no complete answer within 10 s: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Where a response with a `content-length` ends, once all of it has arrived.
fn find_body_end(bytes: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(bytes);
    let (head, _) = text.split_once("\r\n\r\n")?;
    let length: usize = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })?;
    let end = head.len() + 4 + length;
    (bytes.len() >= end).then_some(end)
}

/// The Python of the venv `scripts/test` installs the pinned official clients, parsers and
/// validators into (`tests/clients/requirements.txt`).
pub fn client_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/test, which installs the pinned Python clients",
        python.display()
    );
    python
}

/// Runs `tests/clients/<script>` with the pinned Python, `input` on its stdin, and returns what
/// it did; the caller asserts on it.
pub async fn client_script(script: &str, input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(client_python())
        .arg(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/clients")
                .join(script),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

/// What a Python client script printed as its last act: one JSON value on stdout. Fails the test
/// with both of its outputs when the script failed.
pub fn client_json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}
