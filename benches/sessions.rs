//! Messaging benchmark behind BENCHMARKS.md: `cargo bench --bench sessions` (`-- --quick` for a
//! short run).
//!
//! Overhead of `POST /sessions/{id}/message` (release lit-mux, SQLite persistence on, the
//! conversation read and both messages written per call) over calling the same fake
//! OpenAI-compatible backend directly with the same request lit-mux sends it, at 1, 16 and 64
//! concurrent clients, each client in its own session. Beside it, the floor: the same request
//! through `passthrough-proxy`, a proxy on lit-mux's stack that only forwards (no parsing, no
//! storage), i.e. what any proxy costs on this machine before it does anything.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use support::{
    LitMux, PassthroughProxy, WARM_UP_CALLS, cpu_time, floor_level, levels, micros, percentile,
    post_chat_level, run_level,
};
use testkit::fake_backends::{FakeBackend, Wire};

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let calls_per_level = if quick { 640 } else { 6400 };
    let fake = FakeBackend::start_blocking(Wire::OpenAi);
    let lit_mux = LitMux::start(Some(&format!(
        "backends:\n  fake: {{type: openai, base_url: '{}', default_model: fake-model}}\n",
        fake.url()
    )));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let chat_url = format!("{}/chat/completions", fake.url());
    let proxy = PassthroughProxy::start(&fake.url());

    println!(
        "# lit-mux messaging benchmark{}\n",
        if quick { " (quick)" } else { "" }
    );
    println!("## `POST /sessions/{{id}}/message` vs the fake backend called directly\n");
    println!(
        "| clients | load | lit-mux p50 | lit-mux p99 | direct p50 | direct p99 | p50 overhead | p99 overhead | lit-mux msg/s | direct req/s | lit-mux CPU per message | floor p50 overhead | floor p99 overhead | floor req/s | floor CPU per request | CPU ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (concurrency, load) in levels([500.0, 1000.0]) {
        let per_worker = (calls_per_level / concurrency).max(50);
        // Each client its own session, warmed up so that its history is at steady state
        // (the context holds the last 50 messages).
        let new_session = || {
            let (http, url) = (http.clone(), lit_mux.url.clone());
            async move {
                let session: Value = http
                    .post(format!("{url}/sessions"))
                    .json(&json!({"backends": ["fake"]}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let path = format!("{url}/sessions/{}/message", session["id"].as_str().unwrap());
                for index in 0..25 {
                    let response = http
                        .post(&path)
                        .json(&json!({"content": format!("warm-up {index}")}))
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success());
                    response.bytes().await.unwrap();
                }
                (http, path)
            }
        };
        // Sessions are set up first (inside run_level), so the CPU count covers the measured
        // messages, each session's 25 warm-up messages and run_level's warm-up calls: all are
        // counted below.
        let cpu_before = cpu_time(lit_mux.child.id());
        let (ours, ours_rate) = run_level(
            load,
            concurrency,
            per_worker,
            new_session,
            |state: Arc<(reqwest::Client, String)>| async move {
                let (http, path) = &*state;
                let response = http
                    .post(path)
                    .json(&json!({"content": "benchmark message"}))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.unwrap();
            },
        )
        .await;

        let cpu_per_message = (cpu_time(lit_mux.child.id()) - cpu_before)
            / (concurrency * (per_worker + 25 + WARM_UP_CALLS) + concurrency) as u32;

        // The direct baseline and the floor send what lit-mux sent last: the same
        // conversation size.
        let sent = fake.last_chat().body;
        let (theirs, theirs_rate) =
            post_chat_level(load, concurrency, per_worker, &http, &chat_url, &sent).await;
        let (floor, floor_rate, floor_cpu) =
            floor_level(&proxy, load, concurrency, per_worker, &http, &sent).await;
        let (p50, p99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
        let (d50, d99) = (percentile(&theirs, 0.5), percentile(&theirs, 0.99));
        let (f50, f99) = (percentile(&floor, 0.5), percentile(&floor, 0.99));
        println!(
            "| {concurrency} | {load} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | **{:.0} µs** | {:.0} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} | {:.0} µs | **{:.2}** |",
            micros(p50),
            micros(p99),
            micros(d50),
            micros(d99),
            micros(p50) - micros(d50),
            micros(p99) - micros(d99),
            ours_rate,
            theirs_rate,
            micros(cpu_per_message),
            micros(f50) - micros(d50),
            micros(f99) - micros(d99),
            floor_rate,
            micros(floor_cpu),
            micros(cpu_per_message) / micros(floor_cpu),
        );
        fake.clear_requests();
    }
    println!(
        "\n(goal: p99 overhead ≤ 1 ms at 64 clients; at a fixed rate, latency counts from each \
         message's scheduled time; floor: the same request through `passthrough-proxy`, which \
         only forwards it; CPU ratio: lit-mux's CPU per message over the floor's per request)\n"
    );
}
