//! What the benchmarks share: the release lit-mux in a temporary HOME, and percentiles.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const LIT_MUX: &str = env!("CARGO_BIN_EXE_lit-mux");

/// The lit-mux to measure: `LIT_MUX_BENCH_BIN` when set (to compare builds, or to profile one
/// built with frame pointers), else the release binary cargo built.
pub fn lit_mux_binary() -> String {
    std::env::var("LIT_MUX_BENCH_BIN").unwrap_or_else(|_| LIT_MUX.to_owned())
}

/// `lit-mux start` on a free port, with `config` as its config file when given; SIGTERM on drop.
pub struct LitMux {
    pub child: Child,
    pub url: String,
    _home: tempfile::TempDir,
}

impl LitMux {
    pub fn start(config: Option<&str>) -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut command = Command::new(lit_mux_binary());
        command.args(["start", "--port", "0"]);
        if let Some(yaml) = config {
            let path = home.path().join("config.yaml");
            std::fs::write(&path, yaml).unwrap();
            command.arg("--config").arg(path);
        }
        // `LIT_MUX_BENCH_WORKERS=N`: lit-mux's tokio worker threads (TOKIO_WORKER_THREADS for it
        // alone, not for the benchmark's own runtime).
        if let Ok(workers) = std::env::var("LIT_MUX_BENCH_WORKERS") {
            command.env("TOKIO_WORKER_THREADS", workers);
        }
        command
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("MCP_SERVERS")
            .env("RUST_LOG", "error")
            .current_dir(home.path());
        let (child, url) = spawn_listening(command);
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

/// Spawns `command`, which prints `listening on URL` first on its stdout; the child and the URL.
fn spawn_listening(mut command: Command) -> (Child, String) {
    let mut child = command
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
    (child, url)
}

/// `passthrough-proxy` in front of `upstream`: the floor of what a proxy costs here (see
/// `crates/testkit/src/bin/passthrough_proxy.rs`); SIGTERM on drop.
pub struct PassthroughProxy {
    pub child: Child,
    pub url: String,
}

impl PassthroughProxy {
    pub fn start(upstream: &str) -> Self {
        let mut command = Command::new(testkit::bins::passthrough_proxy());
        command.arg(upstream);
        if let Ok(workers) = std::env::var("LIT_MUX_BENCH_WORKERS") {
            command.env("TOKIO_WORKER_THREADS", workers);
        }
        let (child, url) = spawn_listening(command);
        Self { child, url }
    }
}

impl Drop for PassthroughProxy {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
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

/// CPU time lit-mux has used so far (user + system), from /proc.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// Calls each client makes, all clients at once, before `run_level` measures.
pub const WARM_UP_CALLS: usize = 3;

/// How the clients of a benchmark level send.
#[derive(Clone, Copy)]
pub enum Load {
    /// Each client sends its next call as soon as it has the answer.
    Closed,
    /// The clients together send this many calls a second on a fixed schedule (client `i` at
    /// `i/rate`, `(i + concurrency)/rate`, ...), each still waiting for its answer before its
    /// next call. Open-loop-like as long as the rate is below what the system sustains.
    Paced(f64),
}

/// The levels every benchmark runs: closed loops at 1, 16 and 64 clients (each sends again as
/// soon as it has its answer, so at 16 and 64 the 2 cores saturate), then 64 clients at the two
/// fixed `rates`, chosen below what the path sustains.
pub fn levels(rates: [f64; 2]) -> [(usize, Load); 5] {
    [
        (1, Load::Closed),
        (16, Load::Closed),
        (64, Load::Closed),
        (64, Load::Paced(rates[0])),
        (64, Load::Paced(rates[1])),
    ]
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Load::Closed => write!(f, "closed loop"),
            Load::Paced(rate) => write!(f, "{rate:.0}/s"),
        }
    }
}

/// `concurrency` clients, each with its own state from `setup`, doing `per_worker` calls as
/// `load` says (after `WARM_UP_CALLS` each, not measured); the sorted latencies and the calls per second achieved. A paced call that had
/// to wait for its client's previous one counts that wait (latency from its scheduled time: no
/// coordinated omission).
pub async fn run_level<S, Setup, SetupFut, Call, CallFut>(
    load: Load,
    concurrency: usize,
    per_worker: usize,
    setup: Setup,
    call: Call,
) -> (Vec<Duration>, f64)
where
    S: Send + Sync + 'static,
    Setup: Fn() -> SetupFut,
    SetupFut: std::future::Future<Output = S>,
    Call: Fn(Arc<S>) -> CallFut + Send + Sync + 'static,
    CallFut: std::future::Future<Output = ()> + Send,
{
    let mut states = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        states.push(Arc::new(setup().await));
    }
    let call = Arc::new(call);
    // Warm-up: every client at once, so that each path has the connections it needs (lit-mux's
    // to the backend included) before anything is measured. Without it the first call of each
    // of 64 paced clients waited ~50 ms for connections opened in a burst, exactly the 1 % of a
    // 6,400-call level that sets its p99.
    let warm_ups: Vec<_> = states
        .iter()
        .map(|state| {
            let (call, state) = (Arc::clone(&call), Arc::clone(state));
            tokio::spawn(async move {
                for _ in 0..WARM_UP_CALLS {
                    call(Arc::clone(&state)).await;
                }
            })
        })
        .collect();
    for warm_up in warm_ups {
        warm_up.await.unwrap();
    }
    let started = tokio::time::Instant::now();
    let workers: Vec<_> = states
        .into_iter()
        .enumerate()
        .map(|(index, state)| {
            let call = Arc::clone(&call);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_worker);
                for round in 0..per_worker {
                    let from = match load {
                        Load::Closed => tokio::time::Instant::now(),
                        Load::Paced(rate) => {
                            let scheduled = started
                                + Duration::from_secs_f64(
                                    (index + round * concurrency) as f64 / rate,
                                );
                            // Late (the previous call took too long): count from the scheduled
                            // time. Early: wait, and count from the wake-up, not the timer's
                            // lateness (tokio's timer ticks in milliseconds).
                            if tokio::time::Instant::now() >= scheduled {
                                scheduled
                            } else {
                                tokio::time::sleep_until(scheduled).await;
                                tokio::time::Instant::now()
                            }
                        }
                    };
                    call(Arc::clone(&state)).await;
                    latencies.push(from.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let throughput = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (all, throughput)
}

/// `run_level` where every call posts `body` to `url` as an OpenAI-compatible client does
/// (a bearer key, JSON) and reads the whole answer, which must be a success.
pub async fn post_chat_level(
    load: Load,
    concurrency: usize,
    per_worker: usize,
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> (Vec<Duration>, f64) {
    let setup = || {
        let (http, url, body) = (http.clone(), url.to_owned(), body.clone());
        async move { (http, url, body) }
    };
    run_level(
        load,
        concurrency,
        per_worker,
        setup,
        |state: Arc<(reqwest::Client, String, serde_json::Value)>| async move {
            let (http, url, body) = &*state;
            let response = http
                .post(url)
                .bearer_auth("none")
                .json(body)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.unwrap();
        },
    )
    .await
}

/// [`post_chat_level`] through the passthrough proxy, with the proxy's CPU per request (the
/// floor a proxy on lit-mux's stack costs before it does anything; warm-up calls counted).
pub async fn floor_level(
    proxy: &PassthroughProxy,
    load: Load,
    concurrency: usize,
    per_worker: usize,
    http: &reqwest::Client,
    body: &serde_json::Value,
) -> (Vec<Duration>, f64, Duration) {
    let url = format!("{}/chat/completions", proxy.url);
    let cpu_before = cpu_time(proxy.child.id());
    let (latencies, rate) = post_chat_level(load, concurrency, per_worker, http, &url, body).await;
    let cpu_per_request = (cpu_time(proxy.child.id()) - cpu_before)
        / (concurrency * (per_worker + WARM_UP_CALLS)) as u32;
    (latencies, rate, cpu_per_request)
}
