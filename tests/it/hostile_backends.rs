//! Backends that misbehave on purpose or under load, through the real binary against fake
//! providers: a stream line over lit-mux's bound, redirects to another origin (never followed,
//! nothing sent there), and a crowd of model listings (one listing in flight per backend, shared;
//! never more requests in flight to a backend than its `max_connections`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::backend_failures::{WIRES, create_session, messages, start_with};
use crate::support::{Server, TestHome};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Redirect, Wire};
use testkit::sse::Events;

/// lit-mux's bound on one line of a backend's stream (one NDJSON object, one SSE field): 8 MiB.
const MAX_STREAM_LINE_BYTES: usize = 8 * 1024 * 1024;

/// An entry for `fake` whose URL has `prefix` before the fake's own paths, with the wire's key.
fn entry_with_prefix(name: &str, fake: &FakeBackend, wire: Wire, prefix: &str) -> String {
    let origin = format!("http://127.0.0.1:{}", fake.port());
    match wire {
        Wire::Ollama => format!("  {name}: {{type: ollama, host: '{origin}{prefix}'}}\n"),
        Wire::OpenAi => format!(
            "  {name}: {{type: openai, base_url: '{origin}{prefix}/v1', api_key: sk-secret-openai}}\n"
        ),
        Wire::Anthropic => format!(
            "  {name}: {{type: anthropic, base_url: '{origin}{prefix}', api_key: sk-secret-anthropic}}\n"
        ),
    }
}

async fn stream(server: &Server, session: &str, content: &str) -> Vec<(String, Value)> {
    let response = server
        .post(&format!("/sessions/{session}/message"))
        .json(&json!({"content": content, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    Events::new(response).all().await
}

fn reply(text: &str) -> Behaviour {
    Behaviour::Reply {
        text: Some(text.to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_line_just_over_the_bound_fails_cleanly_and_one_just_under_passes() {
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        let home = TestHome::new();
        let server = start_with(&home, &[fake.config_entry("llm", "")]);
        let id = create_session(&server, &["llm"]).await;

        // One word is one chunk: its stream line is the text plus the wire's few hundred bytes
        // of framing, so a text of the bound's size makes a line just over it. (A line just under
        // it passing is shown once, for SSE: each such answer is 8 MiB to carry and store.)
        if wire == Wire::OpenAi {
            let under = "u".repeat(MAX_STREAM_LINE_BYTES - 4096);
            fake.queue(vec![reply(&under)]);
            let events = stream(&server, &id, "under").await;
            let (name, done) = events.last().unwrap();
            assert_eq!(name, "done", "{wire:?}");
            assert_eq!(done["content"].as_str().unwrap().len(), under.len());
        }
        fake.queue(vec![reply(&"o".repeat(MAX_STREAM_LINE_BYTES))]);
        let events = stream(&server, &id, "over").await;
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["error"],
            "{wire:?}: nothing of the line is streamed"
        );
        let error = &events[0].1;
        assert_eq!(error["status"], 502, "{wire:?}: {error}");
        let detail = error["detail"].as_str().unwrap();
        assert!(
            detail.contains("backend llm")
                && detail.contains(&format!(
                    "a stream line is over 8 MiB ({MAX_STREAM_LINE_BYTES} bytes)"
                )),
            "{wire:?}: {detail}"
        );

        // The question is kept, marked failed; no half answer is stored.
        let stored = messages(&server, &id).await;
        let question = stored.last().unwrap();
        assert_eq!(question["role"], "user", "{wire:?}");
        assert_eq!(question["content"], "over", "{wire:?}");
        assert_eq!(
            question["metadata"]["status"], "failed",
            "{wire:?}: {question}"
        );
        assert_eq!(question["metadata"]["error"], detail, "{wire:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_another_origin_is_not_followed_and_nothing_is_sent_there() {
    for wire in WIRES {
        for status in [307, 308] {
            let redirecting = FakeBackend::start(wire).await;
            let elsewhere = FakeBackend::start(wire).await;
            let elsewhere_origin = format!("http://127.0.0.1:{}", elsewhere.port());
            let home = TestHome::new();
            let server = start_with(&home, &[entry_with_prefix("llm", &redirecting, wire, "")]);
            let id = create_session(&server, &["llm"]).await;
            redirecting.set_redirect(Some(Redirect {
                status,
                from: String::new(),
                to: elsewhere_origin.clone(),
            }));
            let chat_path = match wire {
                Wire::Ollama => "/api/chat",
                Wire::OpenAi => "/v1/chat/completions",
                Wire::Anthropic => "/v1/messages",
            };
            let location = format!("{elsewhere_origin}{chat_path}");

            let (code, body) = server
                .post_json(
                    &format!("/sessions/{id}/message"),
                    &json!({"content": "a secret question"}),
                )
                .await;
            assert_eq!(code, 502, "{wire:?} {status}: {body}");
            let detail = body["detail"].as_str().unwrap();
            assert!(
                detail.contains("backend llm")
                    && detail.contains(&format!("{status}"))
                    && detail.contains("another origin")
                    && detail.contains(&location),
                "{wire:?} {status}: {detail}"
            );

            // Streamed, the failure comes before the first byte: the same plain error.
            let response = server
                .post(&format!("/sessions/{id}/message"))
                .json(&json!({"content": "another secret", "stream": true}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 502, "{wire:?} {status}");
            let body: Value = response.json().await.unwrap();
            assert!(
                body["detail"].as_str().unwrap().contains(&location),
                "{wire:?} {status}: {body}"
            );

            let models = server.get_json("/models").await;
            let listing_error = models["errors"]["llm"].as_str().unwrap_or_default();
            assert!(
                listing_error.contains("another origin")
                    && listing_error.contains(&elsewhere_origin),
                "{wire:?} {status}: {models}"
            );

            assert!(
                !redirecting.requests().is_empty(),
                "{wire:?} {status}: the backend was not asked at all"
            );
            let leaked: Vec<String> = elsewhere
                .requests()
                .iter()
                .map(|r| format!("{} {} {:?}", r.method, r.path, r.headers))
                .collect();
            assert!(
                leaked.is_empty(),
                "{wire:?} {status}: the other origin received {leaked:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_within_the_origin_is_followed_at_most_five_times() {
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        // The backend moved from /old to the root of the same server: a relative Location.
        fake.set_redirect(Some(Redirect {
            status: 308,
            from: "/old".to_owned(),
            to: String::new(),
        }));
        let home = TestHome::new();
        let server = start_with(&home, &[entry_with_prefix("llm", &fake, wire, "/old")]);
        let id = create_session(&server, &["llm"]).await;

        let (code, body) = server
            .post_json(
                &format!("/sessions/{id}/message"),
                &json!({"content": "hi"}),
            )
            .await;
        assert_eq!(code, 200, "{wire:?}: {body}");
        assert_eq!(body["content"], format!("{} says: hi", wire.name()));
        // The key went along within the origin: the fake (Anthropic) refuses a request without.
        let chat = fake.last_chat();
        assert!(!chat.path.starts_with("/old"), "{wire:?}: {chat:?}");

        // A redirect to itself, again and again: six requests (the first and five follows), then
        // an error naming where it was sent last.
        fake.set_redirect(Some(Redirect {
            status: 307,
            from: String::new(),
            to: String::new(),
        }));
        fake.clear_requests();
        let (code, body) = server
            .post_json(
                &format!("/sessions/{id}/message"),
                &json!({"content": "loop"}),
            )
            .await;
        assert_eq!(code, 502, "{wire:?}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("more than 5 redirects") && detail.contains("/old"),
            "{wire:?}: {detail}"
        );
        assert_eq!(fake.requests().len(), 6, "{wire:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_does_not_follow_a_redirect_to_another_origin_with_its_key() {
    let redirecting = FakeBackend::start(Wire::Ollama).await;
    let elsewhere = FakeBackend::start(Wire::Ollama).await;
    let elsewhere_origin = format!("http://127.0.0.1:{}", elsewhere.port());
    redirecting.set_redirect(Some(Redirect {
        status: 307,
        from: String::new(),
        to: elsewhere_origin.clone(),
    }));
    let home = TestHome::new().env("LIT_MUX_API_KEY", "the-lit-mux-key");
    let url = format!("http://127.0.0.1:{}", redirecting.port());
    let output = tokio::task::spawn_blocking(move || home.run(&["status", "--url", &url]))
        .await
        .unwrap();

    assert_ne!(output.code(), Some(0), "{output:?}");
    assert!(
        output.stderr.contains("another origin")
            && output
                .stderr
                .contains(&format!("{elsewhere_origin}/health")),
        "{}",
        output.stderr
    );
    let asked = redirecting.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].headers["x-api-key"], "the-lit-mux-key");
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crowd_listing_models_costs_each_backend_a_handful_of_listings_within_its_cap() {
    let mut fakes = Vec::new();
    let mut entries = Vec::new();
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        // Slow enough that the whole crowd arrives while the first listing is in flight.
        fake.set_listing_delay(Duration::from_millis(300));
        entries.push(fake.config_entry(wire.name(), ", max_connections: 4"));
        fakes.push((wire, fake));
    }
    let home = TestHome::new();
    let server = start_with(&home, &entries);

    let calls = (0..700).map(|i| {
        let path = match i % 7 {
            0 => "/models",
            1 => "/backends",
            _ => "/v1/models",
        };
        let request = server.get(path);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200, "{path}");
            (path, response.json::<Value>().await.unwrap())
        }
    });
    let answers = futures_util::future::join_all(calls).await;

    for (path, answer) in &answers {
        let listed = match *path {
            "/v1/models" => answer["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|model| model["id"].as_str().unwrap().ends_with("/fake-model"))
                .count(),
            "/models" => answer["models"].as_object().map_or(0, |m| m.len() - 1),
            _ => answer
                .as_array()
                .unwrap()
                .iter()
                .filter(|backend| backend["healthy"] == true && backend["name"] != "echo")
                .count(),
        };
        assert_eq!(listed, 3, "{path}: {answer}");
    }
    for (wire, fake) in &fakes {
        let listings = fake.listing_requests().len();
        // One listing shared by the crowd's model lists, one health check, and one more of each
        // should the crowd outlast a cache.
        assert!(
            (1..=4).contains(&listings),
            "{wire:?}: {listings} listing requests for 700 callers"
        );
        assert!(
            fake.peak_connections() <= 4,
            "{wire:?}: {} connections at once",
            fake.peak_connections()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_never_has_more_requests_in_flight_than_its_max_connections() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    fake.set_behaviour(Behaviour::Reply {
        text: None,
        delay: Duration::from_millis(50),
        chunk_delay: Duration::ZERO,
    });
    let home = TestHome::new();
    let server = start_with(&home, &[fake.config_entry("llm", ", max_connections: 3")]);

    let chats = (0..40).map(|i| {
        let request = server.post("/v1/chat/completions").json(&json!({
            "model": "llm/fake-model",
            "stream": i % 2 == 0,
            "messages": [{"role": "user", "content": format!("question {i}")}],
        }));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(chats).await;

    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(fake.chat_requests().len(), 40);
    assert_eq!(
        fake.peak_chats_in_flight(),
        3,
        "the backend answered more (or fewer) requests at once than its max_connections"
    );
    // A connection given back is reused, or closed when more than max_connections are idle;
    // one opened while another was on its way back may overlap it for a moment.
    assert!(
        fake.peak_connections() <= 2 * 3,
        "{} connections at once ({} in all)",
        fake.peak_connections(),
        fake.accepted_connections()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_answer_holds_its_connection_only_while_it_streams() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    let home = TestHome::new();
    let server = start_with(
        &home,
        &[fake.config_entry("llm", ", max_connections: 1, first_byte_timeout_secs: 1")],
    );
    let streaming = create_session(&server, &["llm"]).await;
    let waiting = create_session(&server, &["llm"]).await;

    // The answer starts, then stalls: its connection is the backend's only one.
    fake.queue(vec![Behaviour::Stall]);
    let response = server
        .post(&format!("/sessions/{streaming}/message"))
        .json(&json!({"content": "long", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut events = Events::new(response);
    let (name, _) = events.next().await.unwrap();
    assert_eq!(name, "delta");

    // Another request waits for a connection no longer than the first-byte timeout.
    let started = Instant::now();
    let (code, body) = server
        .post_json(
            &format!("/sessions/{waiting}/message"),
            &json!({"content": "me too"}),
        )
        .await;
    assert_eq!(code, 504, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("backend llm")
            && detail.contains("no free connection")
            && detail.contains("max_connections"),
        "{detail}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        fake.chat_requests().len(),
        1,
        "the waiting request was sent"
    );

    // The streaming client leaves: its backend connection is given up, and with it the slot.
    drop(events);
    assert!(
        testkit::processes::eventually(Duration::from_secs(5), || async {
            fake.aborted_requests() == 1
        })
        .await,
        "the stalled answer's connection was kept"
    );
    let (code, body) = server
        .post_json(
            &format!("/sessions/{waiting}/message"),
            &json!({"content": "now"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["content"], "ollama says: now");
}
