//! MCP benchmarks behind BENCHMARKS.md: `cargo bench --bench mcp` (add `-- --quick` for a
//! short run). Runs the release lit-mux binary and the fixture server, and compares with a
//! direct `rmcp` client doing the same work over stdio.
//!
//! Measures: add-server latency (lit-mux vs direct handshake), tool-call latency at 1, 16 and 64
//! concurrent clients (lit-mux over HTTP vs a direct stdio call), churn of add/remove cycles
//! (descriptors, RSS, zombies), and lit-mux's idle RSS with 3 servers running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::transport::TokioChildProcess;
use serde_json::json;
use support::{LitMux, Load, levels, median, micros, percentile, run_level};

/// The misbehaving MCP server of `crates/testkit`, run in its `healthy` mode.
fn fixture() -> &'static str {
    testkit::bins::mcp_fixture()
}

fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("bench", "1"),
    )
    .with_protocol_version(ProtocolVersion::V_2025_11_25)
}

async fn direct_client() -> rmcp::service::RunningService<rmcp::RoleClient, ClientConfig> {
    let mut command = tokio::process::Command::new(fixture());
    command.arg("healthy");
    client_config()
        .serve(TokioChildProcess::new(command).unwrap())
        .await
        .unwrap()
}

/// The direct client again, but spawning the fixture with the guarantees lit-mux gives every
/// child (its own process group and `PR_SET_PDEATHSIG`) the way lit-mux does: a `pre_exec`
/// hook, which makes the standard library fork instead of `posix_spawn`. The row beside the
/// plain direct client shows what those guarantees cost by themselves.
#[allow(unsafe_code)]
async fn direct_guarded_client() -> rmcp::service::RunningService<rmcp::RoleClient, ClientConfig> {
    let mut command = tokio::process::Command::new(fixture());
    command.arg("healthy").process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing is allocated between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            Ok(())
        });
    }
    client_config()
        .serve(TokioChildProcess::new(command).unwrap())
        .await
        .unwrap()
}

async fn bench_add_latency(lit_mux: &LitMux, http: &reqwest::Client, rounds: usize) {
    let mut via_lit_mux = Vec::new();
    let mut direct = Vec::new();
    let mut direct_guarded = Vec::new();
    let body = json!({"name": "bench-add", "command": fixture(), "args": ["healthy"]});
    for _ in 0..rounds {
        let started = Instant::now();
        let response = http
            .post(format!("{}/mcp/servers", lit_mux.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        via_lit_mux.push(started.elapsed());
        http.delete(format!("{}/mcp/servers/bench-add", lit_mux.url))
            .send()
            .await
            .unwrap();

        let started = Instant::now();
        let client = direct_client().await;
        client.list_all_tools().await.unwrap();
        direct.push(started.elapsed());
        client.cancel().await.unwrap();

        let started = Instant::now();
        let client = direct_guarded_client().await;
        client.list_all_tools().await.unwrap();
        direct_guarded.push(started.elapsed());
        client.cancel().await.unwrap();
    }
    let (ours, theirs, guarded) = (median(via_lit_mux), median(direct), median(direct_guarded));
    println!("## Add-server latency ({rounds} rounds, median)\n");
    println!("| path | median |\n|---|---|");
    println!(
        "| lit-mux `POST /mcp/servers` (spawn, initialize, tools/list) | {:.2} ms |",
        micros(ours) / 1000.0
    );
    println!(
        "| direct rmcp client, same handshake | {:.2} ms |",
        micros(theirs) / 1000.0
    );
    println!(
        "| direct rmcp client, same handshake, child in its own group with PDEATHSIG | {:.2} ms |",
        micros(guarded) / 1000.0
    );
    println!(
        "\nratio: **{:.2}** (goal ≤ 1.2); against the guarded direct spawn: {:.2}\n",
        ours.as_secs_f64() / theirs.as_secs_f64(),
        ours.as_secs_f64() / guarded.as_secs_f64()
    );
}

/// `call` from `concurrency` clients sending as `load` says; latencies and throughput.
async fn run_load<F, Fut>(
    load: Load,
    concurrency: usize,
    per_worker: usize,
    call: F,
) -> (Vec<Duration>, f64)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    run_level(load, concurrency, per_worker, || async {}, move |_| call()).await
}

async fn bench_tool_calls(lit_mux: &LitMux, calls_per_level: usize) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()
        .unwrap();
    let body = json!({"name": "bench-call", "command": fixture(), "args": ["healthy"]});
    let response = http
        .post(format!("{}/mcp/servers", lit_mux.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let direct = Arc::new(direct_client().await);
    let url = format!("{}/tools/bench-call/echo", lit_mux.url);
    println!("## Tool call: `POST /tools/{{server}}/{{tool}}` vs a direct stdio call (echo)\n");
    println!(
        "| concurrency | load | lit-mux p50 | lit-mux p99 | direct p50 | direct p99 | p50 overhead | lit-mux calls/s | direct calls/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (concurrency, load) in levels([2000.0, 5000.0]) {
        let per_worker = (calls_per_level / concurrency).max(20);
        let (ours, ours_rate) = run_load(load, concurrency, per_worker, {
            let (http, url) = (http.clone(), url.clone());
            move || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let response = http
                        .post(&url)
                        .json(&json!({"message": "bench"}))
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success());
                    response.bytes().await.unwrap();
                }
            }
        })
        .await;
        let (theirs, theirs_rate) = run_load(load, concurrency, per_worker, {
            let direct = Arc::clone(&direct);
            move || {
                let direct = Arc::clone(&direct);
                async move {
                    let mut arguments = serde_json::Map::new();
                    arguments.insert("message".into(), json!("bench"));
                    direct
                        .call_tool(CallToolRequestParams::new("echo").with_arguments(arguments))
                        .await
                        .unwrap();
                }
            }
        })
        .await;
        let (p50, p99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
        let (d50, d99) = (percentile(&theirs, 0.5), percentile(&theirs, 0.99));
        println!(
            "| {concurrency} | {load} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | **{:.0} µs** | {:.0} | {:.0} |",
            micros(p50),
            micros(p99),
            micros(d50),
            micros(d99),
            micros(p50) - micros(d50),
            ours_rate,
            theirs_rate
        );
    }
    println!("\n(goal: p50 overhead ≤ 150 µs)\n");
    http.delete(format!("{}/mcp/servers/bench-call", lit_mux.url))
        .send()
        .await
        .unwrap();
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The descriptor count once it has not changed for half a second (connections of earlier
/// requests close asynchronously).
async fn settled_fds(pid: i32) -> usize {
    let mut last = open_fds(pid);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = open_fds(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn rss_bytes(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn zombies_of(pid: i32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
            let mut fields = after.split_whitespace();
            fields.next() == Some("Z") && fields.next() == Some(&pid.to_string())
        })
        .count()
}

async fn bench_churn(lit_mux: &LitMux, cycles: usize) {
    // One connection per request, closed after it, so that lit-mux's descriptors at rest are
    // only its own.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::CONNECTION,
            reqwest::header::HeaderValue::from_static("close"),
        )]))
        .build()
        .unwrap();
    let cycle = |i: usize| {
        let http = http.clone();
        let url = lit_mux.url.clone();
        async move {
            // Every fourth start fails at once (exit-at-once), the others succeed.
            let mode = if i % 4 == 3 {
                "exit-at-once"
            } else {
                "healthy"
            };
            let body = json!({"name": "churn", "command": fixture(), "args": [mode]});
            let response = http
                .post(format!("{url}/mcp/servers"))
                .json(&body)
                .send()
                .await
                .unwrap();
            if response.status().is_success() {
                http.delete(format!("{url}/mcp/servers/churn"))
                    .send()
                    .await
                    .unwrap();
            }
        }
    };
    for i in 0..100 {
        cycle(i).await;
    }
    let (fds_before, rss_before) = (settled_fds(lit_mux.pid()).await, rss_bytes(lit_mux.pid()));
    let started = Instant::now();
    for i in 0..cycles {
        cycle(i).await;
    }
    let took = started.elapsed();
    let (fds_after, rss_after) = (settled_fds(lit_mux.pid()).await, rss_bytes(lit_mux.pid()));
    println!("## Churn: {cycles} add/remove cycles (1 in 4 fails at start)\n");
    println!("| measure | value | goal |\n|---|---|---|");
    println!(
        "| time | {:.1} s ({:.2} ms per cycle) | |",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / cycles as f64
    );
    println!(
        "| descriptor delta | {} | 0 |",
        fds_after as i64 - fds_before as i64
    );
    println!(
        "| RSS growth | {:.2} MB | ≤ 2 MB |",
        (rss_after as f64 - rss_before as f64) / 1e6
    );
    println!("| zombies | {} | 0 |\n", zombies_of(lit_mux.pid()));
}

async fn bench_idle_rss() {
    let lit_mux = LitMux::start(None);
    let http = reqwest::Client::new();
    for name in ["one", "two", "three"] {
        let body = json!({"name": name, "command": fixture(), "args": ["healthy"]});
        let response = http
            .post(format!("{}/mcp/servers", lit_mux.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("## Idle RSS with 3 servers running\n");
    println!(
        "lit-mux itself: **{:.1} MB** (goal ≤ 15 MB)\n",
        rss_bytes(lit_mux.pid()) as f64 / 1e6
    );
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Found (or built) now, so that no measurement waits for it.
    fixture();
    // `--calls-only`: just the tool-call section (for profiling lit-mux under that load).
    if std::env::args().any(|a| a == "--calls-only") {
        let lit_mux = LitMux::start(None);
        bench_tool_calls(&lit_mux, 40_000).await;
        return;
    }
    // `--add-only`: just the add-latency section (200 rounds).
    if std::env::args().any(|a| a == "--add-only") {
        let lit_mux = LitMux::start(None);
        bench_add_latency(&lit_mux, &reqwest::Client::new(), 200).await;
        return;
    }
    // `--rss-only`: just the idle-RSS section.
    if std::env::args().any(|a| a == "--rss-only") {
        bench_idle_rss().await;
        return;
    }
    let (rounds, calls, cycles) = if quick {
        (10, 400, 500)
    } else {
        (50, 6400, 10_000)
    };
    println!(
        "# lit-mux MCP benchmarks{}\n",
        if quick { " (quick)" } else { "" }
    );
    let lit_mux = LitMux::start(None);
    let http = reqwest::Client::new();
    bench_add_latency(&lit_mux, &http, rounds).await;
    drop(http);
    bench_churn(&lit_mux, cycles).await;
    bench_tool_calls(&lit_mux, calls).await;
    drop(lit_mux);
    bench_idle_rss().await;
}
