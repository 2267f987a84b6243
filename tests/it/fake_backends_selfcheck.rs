//! Checks the fake providers in `crate::support::fake_backends` themselves: their wire formats, failure
//! modes and bookkeeping, driven with a plain HTTP client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

const WIRES: [Wire; 3] = [Wire::Ollama, Wire::OpenAi, Wire::Anthropic];

fn chat_url(fake: &FakeBackend, wire: Wire) -> String {
    match wire {
        Wire::Ollama => format!("{}/api/chat", fake.url()),
        Wire::OpenAi => format!("{}/chat/completions", fake.url()),
        Wire::Anthropic => format!("{}/v1/messages", fake.url()),
    }
}

fn models_url(fake: &FakeBackend, wire: Wire) -> String {
    match wire {
        Wire::Ollama => format!("{}/api/tags", fake.url()),
        Wire::OpenAi => format!("{}/models", fake.url()),
        Wire::Anthropic => format!("{}/v1/models", fake.url()),
    }
}

fn chat(fake: &FakeBackend, wire: Wire, stream: bool, extra: Value) -> reqwest::RequestBuilder {
    let mut body = json!({
        "model": "m1",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hello there world"},
        ],
        "stream": stream,
    });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    reqwest::Client::new()
        .post(chat_url(fake, wire))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .bearer_auth("secret")
        .json(&body)
}

/// The reply text reassembled from a streamed body, checking each format's framing.
fn stream_text(wire: Wire, body: &str) -> String {
    let mut text = String::new();
    match wire {
        Wire::Ollama => {
            let lines: Vec<Value> = body
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            let (last, chunks) = lines.split_last().unwrap();
            assert_eq!(last["done"], true);
            assert_eq!(last["done_reason"], "stop");
            assert!(last["eval_count"].as_u64().unwrap() > 0);
            for chunk in chunks {
                assert_eq!(chunk["done"], false);
                assert_eq!(chunk["model"], "m1");
                text += chunk["message"]["content"].as_str().unwrap();
            }
        }
        Wire::OpenAi => {
            assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
            let events: Vec<Value> = body
                .split("\n\n")
                .filter_map(|event| event.strip_prefix("data: "))
                .filter(|data| *data != "[DONE]")
                .map(|data| serde_json::from_str(data).unwrap())
                .collect();
            assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
            let usage = events.last().unwrap();
            assert_eq!(usage["choices"], json!([]));
            assert_eq!(usage["usage"]["completion_tokens"], 5);
            assert_eq!(
                events[events.len() - 2]["choices"][0]["finish_reason"],
                "stop"
            );
            for event in &events {
                assert_eq!(event["object"], "chat.completion.chunk");
                text += event["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or_default();
            }
        }
        Wire::Anthropic => {
            let mut names = Vec::new();
            for event in body.split_terminator("\n\n") {
                let (name, data) = event.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name);
                if name == "content_block_delta" {
                    text += data["delta"]["text"].as_str().unwrap();
                }
                names.push(name.to_owned());
            }
            names.dedup();
            assert_eq!(
                names,
                [
                    "message_start",
                    "content_block_start",
                    "ping",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop"
                ]
            );
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_in_each_wire_format() {
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        let expected = match wire {
            Wire::Ollama => "ollama says: hello there world",
            Wire::OpenAi => "openai says: hello there world",
            Wire::Anthropic => "anthropic says: hello there world",
        };

        let response = chat(&fake, wire, false, json!({})).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let text = match wire {
            Wire::Ollama => &body["message"]["content"],
            Wire::OpenAi => &body["choices"][0]["message"]["content"],
            Wire::Anthropic => &body["content"][0]["text"],
        };
        assert_eq!(text, expected, "{wire:?}: {body}");
        assert_eq!(body["model"], "m1");

        let extra = json!({"stream_options": {"include_usage": true}});
        let response = chat(&fake, wire, true, extra).send().await.unwrap();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.text().await.unwrap();
        assert_eq!(stream_text(wire, &body), expected, "{wire:?}");
        let expected_type = match wire {
            Wire::Ollama => "application/x-ndjson",
            Wire::OpenAi | Wire::Anthropic => "text/event-stream",
        };
        assert_eq!(content_type, expected_type);

        let chats = fake.chat_requests();
        assert_eq!(chats.len(), 2);
        assert_eq!(fake.last_chat().headers["x-api-key"], "k");
        assert_eq!(fake.last_chat().headers["authorization"], "Bearer secret");
        assert_eq!(fake.last_chat().body["stream"], true);
        assert_eq!(fake.aborted_requests(), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_streams_when_stream_is_absent() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    let body = json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]});
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", fake.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(
        stream_text(Wire::Ollama, &response.text().await.unwrap()),
        "ollama says: hi"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_models_and_fails_on_demand() {
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        fake.set_models(vec!["a-one".into(), "b-two".into()]);
        let get = || {
            reqwest::Client::new()
                .get(models_url(&fake, wire))
                .header("x-api-key", "k")
                .send()
        };
        let body: Value = get().await.unwrap().json().await.unwrap();
        let ids: Vec<&str> = match wire {
            Wire::Ollama => body["models"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["name"].as_str().unwrap())
                .collect(),
            _ => body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap())
                .collect(),
        };
        assert_eq!(ids, ["a-one", "b-two"], "{wire:?}");

        fake.set_models_failing(true);
        assert_eq!(get().await.unwrap().status(), 500);
        assert!(fake.chat_requests().is_empty());
        assert_eq!(fake.requests().len(), 2);

        let unknown = reqwest::Client::new()
            .get(format!("{}/nowhere", fake.url()))
            .header("x-api-key", "k")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_lists_models_in_pages() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    let ids: Vec<String> = (1..=25).map(|n| format!("m-{n}")).collect();
    fake.set_models(ids.clone());
    let page = |query: &'static str| {
        let url = format!("{}?{query}", models_url(&fake, Wire::Anthropic));
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .header("x-api-key", "k")
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let summary = |body: &Value| {
        (
            body["data"].as_array().unwrap().len(),
            body["has_more"].clone(),
            body["first_id"].clone(),
            body["last_id"].clone(),
        )
    };

    // 20 by default; `limit` and `after_id` as the API takes them.
    let (_, first) = page("").await;
    assert_eq!(
        summary(&first),
        (20, json!(true), json!("m-1"), json!("m-20"))
    );
    let (_, rest) = page("limit=1000&after_id=m-20").await;
    assert_eq!(
        summary(&rest),
        (5, json!(false), json!("m-21"), json!("m-25"))
    );
    let (_, unknown) = page("after_id=nope").await;
    assert_eq!(
        summary(&unknown),
        (0, json!(false), json!(null), json!(null))
    );
    for bad in ["limit=0", "limit=1001", "limit=x"] {
        let (status, body) = page(bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{bad}");
    }

    // A maximum page size holds the pages shorter than `limit` asks.
    fake.set_models_page_size(10);
    let (_, capped) = page("limit=1000&after_id=m-10").await;
    assert_eq!(
        summary(&capped),
        (10, json!(true), json!("m-11"), json!("m-20"))
    );
    assert_eq!(fake.listing_requests()[1].query["after_id"], "m-20");
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_requires_an_api_key() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    let response = reqwest::Client::new()
        .post(chat_url(&fake, Wire::Anthropic))
        .json(&json!({"model": "m", "max_tokens": 10, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(fake.chat_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn fails_and_rate_limits_in_the_providers_shapes() {
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        fake.set_behaviour(Behaviour::Fail {
            status: 404,
            message: "no such model".into(),
        });
        let response = chat(&fake, wire, true, json!({})).send().await.unwrap();
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.unwrap();
        let message = match wire {
            Wire::Ollama => &body["error"],
            Wire::OpenAi | Wire::Anthropic => &body["error"]["message"],
        };
        assert_eq!(message, "no such model", "{wire:?}: {body}");

        fake.set_behaviour(Behaviour::RateLimited {
            retry_after_secs: 7,
        });
        let response = chat(&fake, wire, false, json!({})).send().await.unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
        let body: Value = response.json().await.unwrap();
        assert!(!body["error"].is_null(), "{wire:?}: {body}");
        assert_eq!(fake.aborted_requests(), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_mid_stream_is_an_error_for_the_reader() {
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        fake.set_behaviour(Behaviour::DropMidStream);

        let mut response = chat(&fake, wire, true, json!({})).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let first = response.chunk().await.unwrap().expect("a first chunk");
        assert!(!first.is_empty());
        let rest = async {
            loop {
                match response.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(()),
                    Err(error) => return Err(error),
                }
            }
        };
        assert!(rest.await.is_err(), "{wire:?}: the stream ended cleanly");

        let error = chat(&fake, wire, false, json!({})).send().await;
        assert!(error.is_err(), "{wire:?}: got an answer {error:?}");
        assert_eq!(fake.aborted_requests(), 0, "{wire:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_mid_stream_without_streaming_sends_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = FakeBackend::start(Wire::Ollama).await;
    fake.set_behaviour(Behaviour::DropMidStream);
    let body = r#"{"model":"m","stream":false,"messages":[]}"#;
    let request = format!(
        "POST /api/chat HTTP/1.1\r\nhost: fake\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", fake.port()))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer));
    // Closed, possibly reset, but without a byte of answer.
    let _ = read.await.expect("the connection was closed");
    assert_eq!(String::from_utf8_lossy(&answer), "");
    assert_eq!(fake.chat_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stall_sends_the_start_of_the_answer_then_nothing() {
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        fake.set_behaviour(Behaviour::Stall);
        for (stream, asked) in [(true, 1), (false, 2)] {
            let mut response = chat(&fake, wire, stream, json!({})).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let first = response.chunk().await.unwrap().expect("a first chunk");
            let first = String::from_utf8(first.to_vec()).unwrap();
            if stream {
                // The first word of "{wire} stalls in the middle of this answer".
                assert!(first.contains(wire.name()), "{wire:?}: {first}");
            } else {
                // Half of the JSON answer: it does not parse yet.
                assert!(first.starts_with('{'), "{wire:?}: {first}");
                assert!(serde_json::from_str::<Value>(&first).is_err(), "{first}");
            }
            let more = tokio::time::timeout(Duration::from_millis(300), response.chunk()).await;
            assert!(more.is_err(), "{wire:?} stream {stream}: {more:?}");
            drop(response);
            wait_for_aborted(&fake, asked).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_answers_come_as_given_with_the_wires_content_type() {
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        fake.set_behaviour(Behaviour::Malformed {
            body: "<html>oops</html>".to_owned(),
        });
        for (stream, content_type) in [
            (false, "application/json"),
            (
                true,
                match wire {
                    Wire::Ollama => "application/x-ndjson",
                    _ => "text/event-stream",
                },
            ),
        ] {
            let response = chat(&fake, wire, stream, json!({})).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], content_type, "{wire:?}");
            assert_eq!(response.text().await.unwrap(), "<html>oops</html>");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_wait_for_their_delay_and_are_recorded() {
    for wire in WIRES {
        let fake = FakeBackend::start(wire).await;
        fake.set_listing_delay(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let response = reqwest::Client::new()
            .get(models_url(&fake, wire))
            .header("x-api-key", "k")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(300), "{wire:?}");
        chat(&fake, wire, false, json!({})).send().await.unwrap();
        let listed: Vec<String> = fake
            .listing_requests()
            .iter()
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(listed.len(), 1, "{wire:?}: {listed:?}");
        assert_eq!(fake.requests().len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_going_away_counts_as_aborted() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    fake.set_behaviour(Behaviour::Hang);
    let hung = chat(&fake, Wire::OpenAi, true, json!({}))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());
    wait_for_aborted(&fake, 1).await;

    // Mid-stream: read the first chunk, then drop the response.
    fake.set_behaviour(Behaviour::Reply {
        text: None,
        delay: Duration::ZERO,
        chunk_delay: Duration::from_secs(5),
    });
    let mut response = chat(&fake, Wire::OpenAi, true, json!({}))
        .send()
        .await
        .unwrap();
    response.chunk().await.unwrap().unwrap();
    drop(response);
    wait_for_aborted(&fake, 2).await;

    // Before the first byte.
    fake.set_behaviour(Behaviour::Reply {
        text: Some("late".into()),
        delay: Duration::from_secs(5),
        chunk_delay: Duration::ZERO,
    });
    let request = chat(&fake, Wire::OpenAi, false, json!({})).send();
    let pending = tokio::spawn(request);
    fake.wait_for_chats(3, Duration::from_secs(2)).await;
    pending.abort();
    wait_for_aborted(&fake, 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_replies_arrive_in_chunks() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    fake.set_behaviour(Behaviour::Reply {
        text: Some("one two three".into()),
        delay: Duration::from_millis(50),
        chunk_delay: Duration::from_millis(30),
    });
    let started = std::time::Instant::now();
    let mut response = chat(&fake, Wire::Anthropic, true, json!({}))
        .send()
        .await
        .unwrap();
    let mut chunks = 0;
    while response.chunk().await.unwrap().is_some() {
        chunks += 1;
    }
    assert!(chunks >= 4, "{chunks} chunks");
    assert!(started.elapsed() >= Duration::from_millis(140));
    assert_eq!(fake.aborted_requests(), 0);
}

#[test]
fn start_blocking_serves_without_a_runtime() {
    let fake = FakeBackend::start_blocking(Wire::Ollama);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body: Value = runtime.block_on(async {
        chat(&fake, Wire::Ollama, false, json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(body["message"]["content"], "ollama says: hello there world");
    assert_eq!(fake.last_chat().path, "/api/chat");
}

async fn wait_for_aborted(fake: &FakeBackend, n: usize) {
    let started = std::time::Instant::now();
    while fake.aborted_requests() < n {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "aborted_requests stayed at {} (expected {n})",
            fake.aborted_requests()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.aborted_requests(), n);
}
