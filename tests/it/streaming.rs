//! Streamed replies (`"stream": true` or `Accept: text/event-stream`) through the real binary
//! against fake backends: event order, first-byte timing, what is stored when the backend breaks
//! or the client leaves, a rate-limited backend, broadcast events interleaved and tagged by
//! backend, and `lit-mux send` printing as the answer streams (a spinner on a terminal).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::{Server, TestHome};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};
use testkit::sse::Events;

fn config_for(entries: &[(&str, &FakeBackend, Wire)]) -> String {
    let mut yaml = String::from("backends:\n");
    for (name, fake, wire) in entries {
        let entry = match wire {
            Wire::Ollama => format!("{{type: ollama, host: '{}'}}", fake.url()),
            Wire::OpenAi => format!("{{type: openai, base_url: '{}'}}", fake.url()),
            Wire::Anthropic => {
                format!(
                    "{{type: anthropic, base_url: '{}', api_key: k}}",
                    fake.url()
                )
            }
        };
        yaml.push_str(&format!("  {name}: {entry}\n"));
    }
    yaml
}

async fn session(server: &Server, backends: &[&str]) -> String {
    let (status, body) = server
        .post_json("/sessions", &json!({ "backends": backends }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn stream_message(server: &Server, session: &str, body: Value) -> reqwest::Response {
    server
        .post(&format!("/sessions/{session}/message"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_reply_is_deltas_then_done_and_is_stored() {
    for wire in [Wire::Ollama, Wire::OpenAi, Wire::Anthropic] {
        let fake = FakeBackend::start(wire).await;
        let home = TestHome::new();
        home.write_config(&config_for(&[("llm", &fake, wire)]));
        let server = home.start(&[]);
        let id = session(&server, &["llm"]).await;

        let events = Events::new(
            stream_message(
                &server,
                &id,
                json!({"content": "tell me more", "stream": true}),
            )
            .await,
        )
        .all()
        .await;
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert!(names.len() >= 3, "{wire:?}: {names:?}");
        assert_eq!(names.last(), Some(&"done"), "{wire:?}: {names:?}");
        assert!(
            names[..names.len() - 1].iter().all(|n| *n == "delta"),
            "{names:?}"
        );
        let text: String = events[..events.len() - 1]
            .iter()
            .map(|(_, data)| {
                assert_eq!(data["backend"], "llm");
                data["text"].as_str().unwrap().to_owned()
            })
            .collect();
        let done = &events.last().unwrap().1;
        assert_eq!(done["content"], text);
        assert_eq!(text, format!("{} says: tell me more", wire.name()));
        assert_eq!(fake.last_chat().body["stream"], true);

        let stored = server.get_json(&format!("/sessions/{id}/messages")).await;
        assert_eq!(stored[1]["id"], done["id"]);
        assert_eq!(stored[1]["content"], text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_token_goes_out_before_the_answer_is_complete() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    fake.set_behaviour(Behaviour::Reply {
        text: Some("one two three four five six".to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(200),
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::OpenAi)]));
    let server = home.start(&[]);
    let id = session(&server, &["llm"]).await;

    let started = Instant::now();
    // Chosen by the Accept header alone.
    let response = server
        .post(&format!("/sessions/{id}/message"))
        .header("accept", "text/event-stream")
        .json(&json!({"content": "count"}))
        .send()
        .await
        .unwrap();
    let mut events = Events::new(response);
    let (name, first) = events.next().await.unwrap();
    let first_at = started.elapsed();
    assert_eq!(name, "delta", "{first}");
    let mut last = (String::new(), Value::Null);
    while let Some(event) = events.next().await {
        last = event;
    }
    let done_at = started.elapsed();
    assert_eq!(last.0, "done");
    assert!(
        first_at < Duration::from_millis(400) && done_at > Duration::from_millis(1000),
        "first token at {first_at:?}, done at {done_at:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_mid_stream_cancels_the_backend_and_the_partial_answer_is_kept() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    fake.set_behaviour(Behaviour::Reply {
        text: Some("a long answer that takes its time to finish".to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(300),
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Ollama)]));
    let server = home.start(&[]);
    let id = session(&server, &["llm"]).await;

    let mut events =
        Events::new(stream_message(&server, &id, json!({"content": "go", "stream": true})).await);
    let (name, first) = events.next().await.unwrap();
    assert_eq!(name, "delta");
    drop(events);

    assert!(
        testkit::processes::eventually(Duration::from_secs(5), || async {
            fake.aborted_requests() == 1
        })
        .await,
        "the backend's request was not cancelled"
    );
    let stored = testkit::processes::eventually(Duration::from_secs(5), || async {
        let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
        messages.as_array().unwrap().len() == 2
    })
    .await;
    assert!(stored, "the partial answer was not stored");
    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let partial = &messages[1];
    assert_eq!(partial["metadata"]["status"], "incomplete", "{partial}");
    let content = partial["content"].as_str().unwrap();
    assert!(
        content.starts_with(first["text"].as_str().unwrap()),
        "{content}"
    );
    assert!(content.len() < "a long answer that takes its time to finish".len());
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_failures_are_an_http_error_before_the_stream_and_an_error_event_during_it() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Anthropic)]));
    let server = home.start(&[]);
    let id = session(&server, &["llm"]).await;

    fake.set_behaviour(Behaviour::Fail {
        status: 529,
        message: "Overloaded".to_owned(),
    });
    let response = stream_message(&server, &id, json!({"content": "a", "stream": true})).await;
    assert_eq!(response.status().as_u16(), 502);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("Overloaded"),
        "{body}"
    );

    fake.set_behaviour(Behaviour::DropMidStream);
    let events =
        Events::new(stream_message(&server, &id, json!({"content": "b", "stream": true})).await)
            .all()
            .await;
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(data["status"], 502);
    assert_eq!(data["backend"], "llm");

    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let roles: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(messages[0]["metadata"]["status"], "failed");
    // The broken stream had sent some text: it is kept, marked incomplete.
    assert_eq!(roles, ["user", "user", "assistant"], "{messages}");
    assert_eq!(messages[2]["metadata"]["status"], "incomplete");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_answers_duration_counts_the_wait_for_its_first_byte() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    fake.set_behaviour(Behaviour::Reply {
        text: None,
        delay: Duration::from_millis(600),
        chunk_delay: Duration::ZERO,
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Ollama)]));
    let server = home.start(&[]);
    let id = session(&server, &["llm"]).await;
    let events =
        Events::new(stream_message(&server, &id, json!({"content": "slow", "stream": true})).await)
            .all()
            .await;
    let (name, done) = events.last().unwrap();
    assert_eq!(name, "done", "{events:?}");
    let duration = done["metadata"]["duration_ms"].as_u64().unwrap();
    assert!(duration >= 600, "{done}");
}

/// lit-mux's bound on an answer, streamed or not (32 MiB).
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_streaming_without_end_is_cut_at_the_bound_of_a_whole_answer() {
    let chunk = "x".repeat(64 * 1024);
    for wire in [Wire::Ollama, Wire::OpenAi, Wire::Anthropic] {
        let fake = FakeBackend::start(wire).await;
        fake.set_behaviour(Behaviour::Endless {
            chunk: chunk.clone(),
        });
        let home = TestHome::new();
        home.write_config(&config_for(&[("llm", &fake, wire)]));
        let server = home.start(&[]);
        let id = session(&server, &["llm"]).await;

        let events = Events::new(
            stream_message(&server, &id, json!({"content": "go on", "stream": true})).await,
        )
        .all()
        .await;
        let streamed: usize = events
            .iter()
            .filter(|(name, _)| name == "delta")
            .map(|(_, data)| data["text"].as_str().unwrap().len())
            .sum();
        let (name, data) = events.last().unwrap();
        assert_eq!(name, "error", "{wire:?}: {data}");
        assert_eq!(data["status"], 502, "{wire:?}: {data}");
        let detail = data["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("over {MAX_ANSWER_BYTES} bytes")),
            "{wire:?}: {detail}"
        );
        assert!(
            streamed > MAX_ANSWER_BYTES - chunk.len() && streamed <= MAX_ANSWER_BYTES,
            "{wire:?}: {streamed} bytes streamed"
        );
        assert!(
            testkit::processes::eventually(Duration::from_secs(5), || async {
                fake.aborted_requests() == 1
            })
            .await,
            "{wire:?}: the backend's endless answer was not hung up on"
        );
        // What was streamed is kept as the question's answer, marked incomplete.
        let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
        assert_eq!(messages.as_array().unwrap().len(), 2, "{wire:?}");
        assert_eq!(messages[1]["role"], "assistant", "{wire:?}");
        assert_eq!(messages[1]["metadata"]["status"], "incomplete", "{wire:?}");
        assert_eq!(messages[1]["content"].as_str().unwrap().len(), streamed);

        // Not streamed, the same answer is refused at the same bound.
        let (status, body) = server
            .post_json(
                &format!("/sessions/{id}/message"),
                &json!({"content": "again"}),
            )
            .await;
        assert_eq!(status, 502, "{wire:?}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("over {MAX_ANSWER_BYTES} bytes")),
            "{wire:?}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_broadcast_interleaves_every_backends_events() {
    let ollama = FakeBackend::start(Wire::Ollama).await;
    let anthropic = FakeBackend::start(Wire::Anthropic).await;
    let failing = FakeBackend::start(Wire::OpenAi).await;
    for fake in [&ollama, &anthropic] {
        fake.set_behaviour(Behaviour::Reply {
            text: None,
            delay: Duration::ZERO,
            chunk_delay: Duration::from_millis(100),
        });
    }
    failing.set_behaviour(Behaviour::Fail {
        status: 500,
        message: "boom".to_owned(),
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[
        ("a", &ollama, Wire::Ollama),
        ("b", &anthropic, Wire::Anthropic),
        ("c", &failing, Wire::OpenAi),
    ]));
    let server = home.start(&[]);
    let id = session(&server, &["a", "b", "c"]).await;

    let started = Instant::now();
    let response = server
        .post(&format!("/sessions/{id}/broadcast"))
        .json(&json!({"content": "hi both", "stream": true}))
        .send()
        .await
        .unwrap();
    let events = Events::new(response).all().await;
    let took = started.elapsed();

    let backend_of = |data: &Value| data["backend"].as_str().unwrap().to_owned();
    let order: Vec<String> = events.iter().map(|(_, data)| backend_of(data)).collect();
    // Interleaved: b's events do not all come after a's (or the reverse).
    let first_b = order.iter().position(|b| b == "b").unwrap();
    let last_a = order.iter().rposition(|b| b == "a").unwrap();
    let first_a = order.iter().position(|b| b == "a").unwrap();
    let last_b = order.iter().rposition(|b| b == "b").unwrap();
    assert!(first_b < last_a && first_a < last_b, "{order:?}");

    for (backend, expected) in [
        ("a", "ollama says: hi both"),
        ("b", "anthropic says: hi both"),
    ] {
        let text: String = events
            .iter()
            .filter(|(name, data)| name == "delta" && backend_of(data) == backend)
            .map(|(_, data)| data["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(text, expected);
        assert!(
            events
                .iter()
                .any(|(name, data)| name == "done" && backend_of(data) == backend),
            "{backend} has no done"
        );
    }
    let error = events
        .iter()
        .find(|(_, data)| backend_of(data) == "c")
        .expect("an event for c");
    assert_eq!(error.0, "error");
    assert!(error.1["detail"].as_str().unwrap().contains("boom"));

    // Four words each at 100 ms: concurrently, about 0.4 s, not 0.8 s.
    assert!(took < Duration::from_millis(750), "took {took:?}");

    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    assert_eq!(messages.as_array().unwrap().len(), 3, "{messages}");
    assert_eq!(messages[0]["metadata"]["failed_backends"], json!(["c"]));
}

#[test]
fn the_cli_prints_the_answer_as_it_streams_and_fails_loudly() {
    let fake = FakeBackend::start_blocking(Wire::Ollama);
    fake.set_behaviour(Behaviour::Reply {
        text: None,
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(20),
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Ollama)]));
    let server = home.start(&[]);
    let url = server.url("");

    let sent = home.run(&["send", "stream to me", "--backend", "llm", "--url", &url]);
    assert_eq!(sent.code(), Some(0), "{sent:?}");
    assert_eq!(sent.stdout.trim(), "ollama says: stream to me");
    assert_eq!(fake.last_chat().body["stream"], true);

    fake.set_behaviour(Behaviour::Fail {
        status: 404,
        message: "model \"fake-model\" not found, try pulling it first".to_owned(),
    });
    let failed = home.run(&["send", "again", "--backend", "llm", "--url", &url]);
    assert_eq!(failed.code(), Some(1), "{failed:?}");
    assert!(
        failed.stderr.contains("try pulling it first"),
        "{}",
        failed.stderr
    );
}

#[test]
fn the_cli_prints_the_first_token_before_the_backend_has_finished() {
    use std::io::Read;

    let fake = FakeBackend::start_blocking(Wire::Ollama);
    let text = "one two three four five six seven eight";
    // Eight chunks 250 ms apart: the last leaves the fake 1.75 s after the first.
    fake.set_behaviour(Behaviour::Reply {
        text: Some(text.to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(250),
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Ollama)]));
    let server = home.start(&[]);
    let url = server.url("");

    let mut child = home
        .command(&["send", "count", "--backend", "llm", "--url", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Reads below block: a CLI that hangs is killed, which ends them.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (finished, watchdog) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watchdog.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut first = vec![0; 256];
    let read = stdout.read(&mut first).unwrap();
    // Checked the moment the first bytes are in: the backend is still answering.
    let answered_by_then = fake.answered_requests();
    first.truncate(read);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let _ = finished.send(());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();

    assert!(status.success(), "{status}: {stderr}");
    let first = String::from_utf8(first).unwrap();
    assert!(
        !first.is_empty() && text.starts_with(&first),
        "first bytes {first:?}"
    );
    assert_eq!(
        answered_by_then, 0,
        "the first token ({first:?}) reached stdout only after the backend had finished"
    );
    assert_eq!(fake.answered_requests(), 1);
    assert_eq!(
        format!("{first}{}", String::from_utf8(rest).unwrap()),
        format!("{text}\n")
    );
    // Not a terminal: no spinner.
    assert!(!stderr.contains("waiting for the model"), "{stderr:?}");
}

#[test]
fn on_a_terminal_the_cli_spins_until_the_first_token_then_clears_the_spinner() {
    let helper = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/stderr_on_pty.py"
    );
    let fake = FakeBackend::start_blocking(Wire::Ollama);
    // The spinner draws a frame every 80 ms while the backend thinks.
    fake.set_behaviour(Behaviour::Reply {
        text: None,
        delay: Duration::from_millis(600),
        chunk_delay: Duration::ZERO,
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Ollama)]));
    let server = home.start(&[]);
    let url = server.url("");

    let sent = home.run_wrapped(
        &["python3", helper],
        &["send", "spin for me", "--backend", "llm", "--url", &url],
    );
    assert_eq!(sent.code(), Some(0), "{sent:?}");
    // stdout is not the terminal: it holds the answer alone.
    assert_eq!(sent.stdout, "ollama says: spin for me\n");
    let shown = &sent.stderr;
    let frames: std::collections::BTreeSet<char> = shown
        .match_indices(" waiting for the model")
        .filter_map(|(at, _)| shown[..at].chars().next_back())
        .collect();
    assert!(
        frames.len() >= 2 && frames.iter().all(|f| "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏".contains(*f)),
        "the spinner did not turn: {shown:?}"
    );
    let last_frame = shown.rfind("waiting for the model").unwrap();
    assert!(
        shown[last_frame..].contains("\r\x1b[2K"),
        "the spinner's line was not erased after its last frame: {shown:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_stream_is_a_429_with_retry_after_and_in_a_broadcast_an_error_event() {
    let answering = FakeBackend::start(Wire::Ollama).await;
    let limited = [
        (
            "ollama",
            FakeBackend::start(Wire::Ollama).await,
            Wire::Ollama,
        ),
        (
            "openai",
            FakeBackend::start(Wire::OpenAi).await,
            Wire::OpenAi,
        ),
        (
            "anthropic",
            FakeBackend::start(Wire::Anthropic).await,
            Wire::Anthropic,
        ),
    ];
    let mut entries = vec![("fine", &answering, Wire::Ollama)];
    for (name, fake, wire) in &limited {
        fake.set_behaviour(Behaviour::RateLimited {
            retry_after_secs: 7,
        });
        entries.push((name, fake, *wire));
    }
    let home = TestHome::new();
    home.write_config(&config_for(&entries));
    let server = home.start(&[]);
    let id = session(&server, &["fine", "ollama", "openai", "anthropic"]).await;

    // The 429 comes before the first byte: a plain HTTP error, Retry-After passed on.
    for (name, _, _) in &limited {
        let response = stream_message(
            &server,
            &id,
            json!({"content": "quick", "stream": true, "backend": name}),
        )
        .await;
        assert_eq!(response.status().as_u16(), 429, "{name}");
        let headers = response.headers().clone();
        assert_eq!(headers["retry-after"], "7", "{name}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{name}: {headers:?}"
        );
        let body: Value = response.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("backend {name} is rate limited (429)")),
            "{detail}"
        );
    }
    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(
        messages.iter().all(|m| m["metadata"]["status"] == "failed"),
        "{messages:?}"
    );

    // A broadcast's stream has started: each rate-limited backend gets one error event, with
    // the detail and Retry-After, and the one that answers goes on.
    let response = server
        .post(&format!("/sessions/{id}/broadcast"))
        .json(&json!({"content": "all of you", "stream": true}))
        .send()
        .await
        .unwrap();
    let events = Events::new(response).all().await;
    for (name, _, _) in &limited {
        let of_backend: Vec<&(String, Value)> = events
            .iter()
            .filter(|(_, data)| data["backend"] == *name)
            .collect();
        assert_eq!(of_backend.len(), 1, "{name}: {events:?}");
        let (event, data) = of_backend[0];
        assert_eq!(event, "error", "{name}: {data}");
        assert_eq!(data["status"], 429, "{name}: {data}");
        assert_eq!(data["retry_after"], "7", "{name}: {data}");
        assert!(
            data["detail"]
                .as_str()
                .unwrap()
                .contains("rate limited (429)"),
            "{data}"
        );
    }
    let done = events
        .iter()
        .find(|(event, data)| event == "done" && data["backend"] == "fine")
        .unwrap_or_else(|| panic!("no done for fine: {events:?}"));
    assert_eq!(done.1["content"], "ollama says: all of you");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_still_streaming_when_lit_mux_stops_is_kept_marked_incomplete() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    fake.set_behaviour(Behaviour::Reply {
        text: Some("a long answer that is still coming when the server stops".to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(300),
    });
    let home = TestHome::new();
    home.write_config(&format!(
        "server:\n  shutdown_grace_secs: 1\n{}",
        config_for(&[("llm", &fake, Wire::Ollama)])
    ));
    let mut server = home.start(&[]);
    let id = session(&server, &["llm"]).await;
    let mut events =
        Events::new(stream_message(&server, &id, json!({"content": "go", "stream": true})).await);
    let (name, first) = events.next().await.unwrap();
    assert_eq!(name, "delta");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, took) = server
        .wait_exit(Duration::from_secs(10))
        .expect("lit-mux did not exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    drop(events);

    let server = home.start(&[]);
    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    assert_eq!(messages.as_array().unwrap().len(), 2, "{messages}");
    let partial = &messages[1];
    assert_eq!(partial["role"], "assistant", "{partial}");
    assert_eq!(partial["metadata"]["status"], "incomplete", "{partial}");
    let content = partial["content"].as_str().unwrap();
    assert!(
        content.starts_with(first["text"].as_str().unwrap()),
        "{content}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_event_stream_alone_asks_for_a_stream_and_json_beside_it_does_not() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let id = session(&server, &["echo"]).await;
    let send = |accept: &'static str| {
        server
            .post(&format!("/sessions/{id}/message"))
            .header("accept", accept)
            .json(&json!({"content": "hello"}))
            .send()
    };

    let streamed = send("text/event-stream").await.unwrap();
    assert_eq!(streamed.status(), 200);
    assert!(
        streamed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = Events::new(streamed).all().await;
    let (name, done) = events.last().unwrap();
    assert_eq!(name, "done");
    assert_eq!(done["content"], "hello");

    for accept in ["application/json, text/event-stream", "*/*"] {
        let plain = send(accept).await.unwrap();
        assert_eq!(plain.status(), 200);
        assert!(
            plain.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{accept}"
        );
        let body: Value = plain.json().await.unwrap();
        assert_eq!(body["content"], "hello", "{accept}");
    }
}
