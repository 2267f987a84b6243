//! How a model backend's failures reach the client, through the real binary against fake
//! providers: the connect and total timeouts, refused connections, disabled backends, malformed
//! answers, error statuses and rate limits in each wire format, and broadcasts where everything
//! fails. Each time: the status, a `detail` naming the backend and what went wrong, and the
//! user's message kept and marked failed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::{Server, TestHome, closed_port};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};
use testkit::sse::Events;

pub(crate) const WIRES: [Wire; 3] = [Wire::Ollama, Wire::OpenAi, Wire::Anthropic];

pub(crate) fn start_with(home: &TestHome, entries: &[String]) -> Server {
    home.write_config(&format!("backends:\n{}", entries.concat()));
    home.start(&[])
}

pub(crate) async fn create_session(server: &Server, backends: &[&str]) -> String {
    let (status, session) = server
        .post_json("/sessions", &json!({ "backends": backends }))
        .await;
    assert_eq!(status, 200, "{session}");
    session["id"].as_str().unwrap().to_owned()
}

async fn send(server: &Server, session: &str, body: Value) -> (u16, Value) {
    server
        .post_json(&format!("/sessions/{session}/message"), &body)
        .await
}

async fn stream(server: &Server, session: &str, content: &str) -> reqwest::Response {
    server
        .post(&format!("/sessions/{session}/message"))
        .json(&json!({"content": content, "stream": true}))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn messages(server: &Server, session: &str) -> Vec<Value> {
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    messages.as_array().unwrap().clone()
}

pub(crate) fn detail(body: &Value) -> &str {
    // A 422's detail is FastAPI's list of validation errors: the first one's `msg`.
    body["detail"]
        .as_str()
        .or_else(|| body["detail"][0]["msg"].as_str())
        .unwrap_or_else(|| panic!("no detail in {body}"))
}

/// Asserts that `message` is the user's `content`, marked failed with `error` in its metadata.
pub(crate) fn assert_failed_user_message(message: &Value, content: &str, error: &str) {
    assert_eq!(message["role"], "user", "{message}");
    assert_eq!(message["content"], content, "{message}");
    assert_eq!(message["metadata"]["status"], "failed", "{message}");
    assert_eq!(message["metadata"]["error"], error, "{message}");
}

/// A loopback listener whose accept queue is full: a further connection attempt gets no answer
/// at all (Linux drops the SYN), as with a host that is down. Returns the listener's port and
/// what must stay open to keep the queue full.
async fn unanswering_listener() -> (u16, Vec<tokio::net::TcpStream>, tokio::net::TcpListener) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(err)) => panic!("connecting to the backlog listener: {err}"),
            // Unanswered: the queue is full.
            Err(_) => return (address.port(), queued, listener),
        }
    }
    panic!("the listener kept accepting connections into its queue");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_never_answers_the_connection_times_out_connecting() {
    let (port, _queued, _listener) = unanswering_listener().await;
    let home = TestHome::new();
    let server = start_with(
        &home,
        &[format!(
            "  far: {{type: ollama, host: 'http://127.0.0.1:{port}', connect_timeout_secs: 1, \
             first_byte_timeout_secs: 30, timeout_secs: 60}}\n"
        )],
    );
    let session = create_session(&server, &["far"]).await;

    let started = Instant::now();
    let (status, body) = send(&server, &session, json!({"content": "anyone there?"})).await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        detail(&body),
        "backend far timed out: no connection within 1 s (connect_timeout_secs)"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    let stored = messages(&server, &session).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_failed_user_message(&stored[0], "anyone there?", detail(&body));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_a_quick_502_naming_the_backend() {
    let home = TestHome::new();
    let server = start_with(
        &home,
        &[format!(
            "  gone: {{type: openai, base_url: 'http://127.0.0.1:{}/v1', connect_timeout_secs: 30}}\n",
            closed_port()
        )],
    );
    let session = create_session(&server, &["gone"]).await;

    let started = Instant::now();
    let (status, body) = send(&server, &session, json!({"content": "hello?"})).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let detail = detail(&body);
    assert!(
        detail.starts_with("backend gone is unreachable: ") && detail.contains("refused"),
        "{detail}"
    );
    let stored = messages(&server, &session).await;
    assert_failed_user_message(&stored[0], "hello?", detail);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_total_timeout_ends_an_answer_that_stalls_midway_streamed_or_not() {
    let mut fakes = Vec::new();
    let mut entries = Vec::new();
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        fake.set_behaviour(Behaviour::Stall);
        entries.push(fake.config_entry(
            wire.name(),
            ", timeout_secs: 1, first_byte_timeout_secs: 30",
        ));
        fakes.push((wire, fake));
    }
    let home = TestHome::new();
    let server = start_with(&home, &entries);
    let expected = |wire: Wire| {
        format!(
            "backend {} timed out: the answer was not complete within 1 s (timeout_secs)",
            wire.name()
        )
    };

    for (wire, fake) in &fakes {
        let session = create_session(&server, &[wire.name()]).await;
        let started = Instant::now();
        let (status, body) = send(&server, &session, json!({"content": "whole"})).await;
        let took = started.elapsed();
        assert_eq!(status, 504, "{wire:?}: {body}");
        assert_eq!(detail(&body), expected(*wire), "{wire:?}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{wire:?}: answered after {took:?}"
        );

        let started = Instant::now();
        let events = Events::new(stream(&server, &session, "streamed").await)
            .all()
            .await;
        let took = started.elapsed();
        let (first, _) = &events[0];
        assert_eq!(
            first, "delta",
            "{wire:?}: the answer had started: {events:?}"
        );
        let (name, error) = events.last().unwrap();
        assert_eq!(name, "error", "{wire:?}: {events:?}");
        assert_eq!(error["status"], 504, "{wire:?}: {error}");
        assert_eq!(error["backend"], wire.name());
        assert_eq!(error["detail"], expected(*wire), "{wire:?}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{wire:?}: streamed answer ended after {took:?}"
        );

        let stored = messages(&server, &session).await;
        assert_eq!(stored.len(), 3, "{wire:?}: {stored:?}");
        assert_failed_user_message(&stored[0], "whole", &expected(*wire));
        // The streamed question got the start of an answer: that part is kept, marked
        // incomplete with the error, and the question stays in the conversation with it.
        assert_eq!(stored[1]["content"], "streamed");
        assert!(stored[1]["metadata"]["status"].is_null(), "{}", stored[1]);
        assert_eq!(stored[2]["role"], "assistant");
        assert_eq!(
            stored[2]["content"], events[0].1["text"],
            "{wire:?}: {stored:?}"
        );
        assert_eq!(stored[2]["metadata"]["status"], "incomplete", "{wire:?}");
        assert_eq!(stored[2]["metadata"]["error"], expected(*wire), "{wire:?}");

        // Both stalled requests were given up, not left open.
        assert!(
            testkit::processes::eventually(Duration::from_secs(5), || async {
                fake.aborted_requests() == 2
            })
            .await,
            "{wire:?}: {} upstream requests closed",
            fake.aborted_requests()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_backend_is_refused_by_name_and_never_called() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    let home = TestHome::new();
    let mut server = start_with(
        &home,
        &[
            fake.config_entry("llm", ""),
            fake.config_entry("off", ", enabled: false"),
        ],
    );
    let (status, body) = server
        .post_json("/sessions", &json!({"backends": ["echo", "off"]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        detail(&body),
        "disabled backend(s) \"off\" (available: llm, echo)"
    );

    let session = create_session(&server, &["llm", "echo"]).await;
    let (status, body) = send(&server, &session, json!({"content": "x", "backend": "off"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(detail(&body).contains("\"off\""), "{body}");

    // The session's backend is disabled after a restart.
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let server = start_with(&home, &[fake.config_entry("llm", ", enabled: false")]);
    let (status, body) = send(&server, &session, json!({"content": "still there?"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(detail(&body), "backend \"llm\" is disabled");
    let (status, body) = server
        .post_json(
            &format!("/sessions/{session}/broadcast"),
            &json!({"content": "all of you"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        detail(&body).contains("disabled backend(s) \"llm\""),
        "{body}"
    );

    assert!(fake.chat_requests().is_empty(), "{:?}", fake.requests());
    assert!(messages(&server, &session).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_answer_is_a_502_saying_so() {
    let garbage = [
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
        "{\"model\": \"fake-model\", \"message\": {\"role\": \"assist",
        "{\"status\": \"ok\"}",
    ];
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        let home = TestHome::new();
        let server = start_with(&home, &[fake.config_entry("llm", "")]);
        let session = create_session(&server, &["llm"]).await;
        for body in garbage {
            fake.set_behaviour(Behaviour::Malformed {
                body: body.to_owned(),
            });
            let (status, answer) = send(&server, &session, json!({"content": "plain"})).await;
            assert_eq!(status, 502, "{wire:?} {body:?}: {answer}");
            assert!(
                detail(&answer).starts_with("backend llm sent an invalid response: "),
                "{wire:?} {body:?}: {answer}"
            );

            let events = Events::new(stream(&server, &session, "streamed").await)
                .all()
                .await;
            let (name, error) = events.last().unwrap();
            assert_eq!(name, "error", "{wire:?} {body:?}: {events:?}");
            assert_eq!(error["status"], 502, "{wire:?} {body:?}: {error}");
            assert!(
                error["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("backend llm sent an invalid response: "),
                "{wire:?} {body:?}: {error}"
            );
        }
        let stored = messages(&server, &session).await;
        assert_eq!(stored.len(), 2 * garbage.len(), "{wire:?}: {stored:?}");
        for message in stored {
            assert_eq!(
                message["metadata"]["status"], "failed",
                "{wire:?}: {message}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_wires_error_status_and_message_reach_the_detail() {
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        let home = TestHome::new();
        let server = start_with(&home, &[fake.config_entry("llm", "")]);
        let session = create_session(&server, &["llm"]).await;
        let message = format!("{} ran out of GPU memory", wire.name());
        fake.set_behaviour(Behaviour::Fail {
            status: 500,
            message: message.clone(),
        });

        let (status, body) = send(&server, &session, json!({"content": "q"})).await;
        assert_eq!(status, 502, "{wire:?}: {body}");
        // Anthropic's message comes with its error type.
        let shown = match wire {
            Wire::Anthropic => format!("api_error: {message}"),
            _ => message.clone(),
        };
        assert_eq!(
            detail(&body),
            format!("backend llm answered 500: {shown}"),
            "{wire:?}"
        );
        let response = stream(&server, &session, "streamed").await;
        assert_eq!(response.status().as_u16(), 502, "{wire:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(detail(&body), format!("backend llm answered 500: {shown}"));

        let stored = messages(&server, &session).await;
        assert_failed_user_message(&stored[0], "q", detail(&body));
        assert_failed_user_message(&stored[1], "streamed", detail(&body));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_stays_429_with_retry_after_on_every_wire() {
    for (wire, retry_after) in WIRES.into_iter().zip([7_u64, 11, 13]) {
        let fake = FakeBackend::start(wire).await;
        fake.set_behaviour(Behaviour::RateLimited {
            retry_after_secs: retry_after,
        });
        let home = TestHome::new();
        let server = start_with(&home, &[fake.config_entry("llm", "")]);
        let session = create_session(&server, &["llm"]).await;

        for response in [
            server
                .post(&format!("/sessions/{session}/message"))
                .json(&json!({"content": "plain"}))
                .send()
                .await
                .unwrap(),
            stream(&server, &session, "streamed").await,
        ] {
            assert_eq!(response.status().as_u16(), 429, "{wire:?}");
            assert_eq!(
                response.headers()["retry-after"],
                retry_after.to_string().as_str(),
                "{wire:?}"
            );
            let body: Value = response.json().await.unwrap();
            // The provider's own message follows.
            let detail = detail(&body).to_lowercase();
            assert!(
                detail.starts_with("backend llm is rate limited (429): ")
                    && (detail.contains("rate limit") || detail.contains("too many requests")),
                "{wire:?}: {detail}"
            );
        }
        let stored = messages(&server, &session).await;
        assert_eq!(stored.len(), 2, "{wire:?}: {stored:?}");
        for message in &stored {
            assert_eq!(message["metadata"]["status"], "failed", "{wire:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcast_with_empty_content_is_422_and_calls_nobody() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    let server = start_with(&home, &[fake.config_entry("llm", "")]);
    let session = create_session(&server, &["llm", "echo"]).await;
    for content in ["", " \n\t "] {
        let (status, body) = server
            .post_json(
                &format!("/sessions/{session}/broadcast"),
                &json!({ "content": content }),
            )
            .await;
        assert_eq!(status, 422, "{content:?}: {body}");
        assert_eq!(detail(&body), "content must not be empty");
    }
    assert!(fake.chat_requests().is_empty());
    assert!(messages(&server, &session).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcast_where_every_backend_fails_reports_each_and_marks_the_message() {
    let failing = FakeBackend::start(Wire::Anthropic).await;
    failing.set_behaviour(Behaviour::Fail {
        status: 529,
        message: "Overloaded".to_owned(),
    });
    let limited = FakeBackend::start(Wire::Ollama).await;
    limited.set_behaviour(Behaviour::RateLimited {
        retry_after_secs: 5,
    });
    let home = TestHome::new();
    let server = start_with(
        &home,
        &[
            failing.config_entry("claude", ""),
            limited.config_entry("local", ""),
            format!(
                "  down: {{type: openai, base_url: 'http://127.0.0.1:{}/v1'}}\n",
                closed_port()
            ),
        ],
    );
    let session = create_session(&server, &["claude", "local", "down"]).await;

    let (status, body) = server
        .post_json(
            &format!("/sessions/{session}/broadcast"),
            &json!({"content": "is anyone up?"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let responses = body["responses"].as_array().unwrap();
    let outcome = |name: &str| {
        let found = responses
            .iter()
            .find(|r| r["backend"] == name)
            .unwrap_or_else(|| panic!("no response for {name}: {body}"));
        assert!(found["message"].is_null(), "{found}");
        (
            found["status"].as_u64().unwrap(),
            found["error"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(responses.len(), 3, "{body}");
    assert_eq!(
        outcome("claude"),
        (
            502,
            "backend claude answered 529: overloaded_error: Overloaded".to_owned()
        )
    );
    let (status, error) = outcome("local");
    assert_eq!(status, 429);
    assert!(
        error.starts_with("backend local is rate limited (429)"),
        "{error}"
    );
    // Its Retry-After, as a message to it alone would pass on; only there.
    let retry_after = |name: &str| {
        responses.iter().find(|r| r["backend"] == name).unwrap()["retry_after"].clone()
    };
    assert_eq!(retry_after("local"), "5", "{body}");
    assert!(retry_after("claude").is_null(), "{body}");
    let (status, error) = outcome("down");
    assert_eq!(status, 502);
    assert!(error.starts_with("backend down is unreachable"), "{error}");

    let stored = messages(&server, &session).await;
    assert_eq!(stored.len(), 1, "no answer is stored: {stored:?}");
    assert_eq!(stored[0]["content"], "is anyone up?");
    assert_eq!(stored[0]["metadata"]["status"], "failed", "{}", stored[0]);
    assert_eq!(
        stored[0]["metadata"]["failed_backends"],
        json!(["claude", "local", "down"])
    );

    // The failed question is not part of the next conversation.
    failing.set_behaviour(Behaviour::default());
    let (status, _) = send(
        &server,
        &session,
        json!({"content": "and now?", "backend": "claude"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        failing.last_chat().body["messages"],
        json!([{"role": "user", "content": "and now?"}])
    );
}
