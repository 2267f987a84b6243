//! OpenAI front-door benchmark behind BENCHMARKS.md: `cargo bench --bench completions`
//! (`-- --quick` for a short run).
//!
//! Overhead of `POST /v1/chat/completions` (release lit-mux, stateless: no session) over calling
//! the same fake OpenAI-compatible backend directly with the same request, at 1, 16 and 64
//! concurrent clients, each sending a 10-message conversation.

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
    let messages: Vec<Value> = (0..10)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({"role": role, "content": format!("message {i} of a benchmark conversation")})
        })
        .chain(std::iter::once(
            json!({"role": "user", "content": "benchmark question"}),
        ))
        .collect();
    let ours_body = json!({"model": "fake/fake-model", "messages": messages});
    let ours_url = format!("{}/v1/chat/completions", lit_mux.url);
    let direct_url = format!("{}/chat/completions", fake.url());
    let proxy = PassthroughProxy::start(&fake.url());

    println!(
        "# lit-mux OpenAI front-door benchmark{}\n",
        if quick { " (quick)" } else { "" }
    );
    println!("## `POST /v1/chat/completions` vs the fake backend called directly\n");
    println!(
        "| clients | load | lit-mux p50 | lit-mux p99 | direct p50 | direct p99 | p50 overhead | p99 overhead | lit-mux req/s | direct req/s | lit-mux CPU per request | floor p99 overhead | floor CPU per request | CPU ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (concurrency, load) in levels([1000.0, 2000.0]) {
        let per_worker = (calls_per_level / concurrency).max(50);
        let setup = || {
            let (http, url, body) = (http.clone(), ours_url.clone(), ours_body.clone());
            async move { (http, url, body) }
        };
        let cpu_before = cpu_time(lit_mux.child.id());
        let (ours, ours_rate) = run_level(
            load,
            concurrency,
            per_worker,
            setup,
            |state: Arc<(reqwest::Client, String, Value)>| async move {
                let (http, url, body) = &*state;
                let response = http.post(url).json(body).send().await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.unwrap();
            },
        )
        .await;
        let cpu_per_request = (cpu_time(lit_mux.child.id()) - cpu_before)
            / (concurrency * (per_worker + WARM_UP_CALLS)) as u32;

        // The direct baseline sends what lit-mux sent last.
        let sent = fake.last_chat().body;
        let (theirs, theirs_rate) =
            post_chat_level(load, concurrency, per_worker, &http, &direct_url, &sent).await;
        let (floor, _, floor_cpu) =
            floor_level(&proxy, load, concurrency, per_worker, &http, &sent).await;
        let (p50, p99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
        let (d50, d99) = (percentile(&theirs, 0.5), percentile(&theirs, 0.99));
        println!(
            "| {concurrency} | {load} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | **{:.0} µs** | {:.0} | {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | **{:.2}** |",
            micros(p50),
            micros(p99),
            micros(d50),
            micros(d99),
            micros(p50) - micros(d50),
            micros(p99) - micros(d99),
            ours_rate,
            theirs_rate,
            micros(cpu_per_request),
            micros(percentile(&floor, 0.99)) - micros(d99),
            micros(floor_cpu),
            micros(cpu_per_request) / micros(floor_cpu),
        );
        fake.clear_requests();
    }
    println!(
        "\n(goal: p99 overhead ≤ 1 ms at 64 clients; at a fixed rate, latency counts from each \
         request's scheduled time; floor: the same request through `passthrough-proxy`, which only \
         forwards it; CPU ratio: lit-mux's CPU per request over the floor's)\n"
    );
}
