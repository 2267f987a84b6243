//! Native tool calling through the real binary: fake providers answer with tool calls in their
//! own wire format (Ollama `tool_calls`, OpenAI streamed `tool_calls` pieces, Anthropic `tool_use`
//! blocks), lit-mux runs them on the real `server-everything`, and the test asserts what the
//! provider received next. The fakes refuse structurally invalid requests the way the real APIs
//! do (a call without its result, a result without its call, tool blocks without tools).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::mcp::everything;
use crate::support::{Server, TestHome};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Recorded, Wire, call_and_result};

const WIRES: [Wire; 3] = [Wire::Ollama, Wire::OpenAi, Wire::Anthropic];

fn backend_entry(name: &str, wire: Wire, url: &str, extra: &str) -> String {
    let entry = match wire {
        Wire::Ollama => format!("{{type: ollama, host: '{url}'{extra}}}"),
        Wire::OpenAi => format!("{{type: openai, base_url: '{url}', api_key: k{extra}}}"),
        Wire::Anthropic => format!("{{type: anthropic, base_url: '{url}', api_key: k{extra}}}"),
    };
    format!("  {name}: {entry}\n")
}

/// lit-mux with backend `llm` on `fake` and `server-everything` running.
async fn lit_mux_with(home: &TestHome, fake: &FakeBackend, wire: Wire) -> Server {
    home.write_config(&format!(
        "backends:\n{}",
        backend_entry("llm", wire, &fake.url(), "")
    ));
    let server = home.start(&[]);
    let (status, body) = server
        .post_json(
            "/mcp/servers",
            &json!({"name": "everything", "command": everything(), "args": ["stdio"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server
}

async fn session(server: &Server, backend: &str) -> String {
    let (status, body) = server
        .post_json("/sessions", &json!({ "backends": [backend] }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn send(server: &Server, id: &str, body: Value) -> Value {
    let (status, reply) = server
        .post_json(&format!("/sessions/{id}/message"), &body)
        .await;
    assert_eq!(status, 200, "{reply}");
    reply
}

/// Sends streamed; returns the events and the final message.
async fn send_streamed(server: &Server, id: &str, content: &str) -> (Vec<(String, Value)>, Value) {
    let response = server
        .post(&format!("/sessions/{id}/message"))
        .json(&json!({"content": content, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = testkit::sse::Events::new(response).all().await;
    let (last_name, last) = events.last().cloned().expect("events");
    assert_eq!(last_name, "done", "{events:?}");
    (events, last)
}

fn final_reply(text: &str) -> Behaviour {
    Behaviour::Reply {
        text: Some(text.to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::ZERO,
    }
}

/// The names of the tools offered in a request, in the wire's own shape.
fn offered_tools(wire: Wire, request: &Recorded) -> Vec<(String, Value)> {
    let tools = request.body["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    tools
        .iter()
        .map(|tool| match wire {
            Wire::Anthropic => (
                tool["name"].as_str().unwrap().to_owned(),
                tool["input_schema"].clone(),
            ),
            Wire::Ollama | Wire::OpenAi => {
                assert_eq!(tool["type"], "function", "{tool}");
                (
                    tool["function"]["name"].as_str().unwrap().to_owned(),
                    tool["function"]["parameters"].clone(),
                )
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_wire_calls_a_real_tool_natively_and_gets_its_result_back() {
    for wire in WIRES {
        for streamed in [false, true] {
            let fake = FakeBackend::start(wire).await;
            fake.queue(vec![Behaviour::tool_call(
                "everything__echo",
                json!({"message": "hi"}),
            )]);
            fake.set_behaviour(final_reply("All done."));
            let home = TestHome::new();
            let server = lit_mux_with(&home, &fake, wire).await;
            let id = session(&server, "llm").await;

            let reply = if streamed {
                let (events, done) = send_streamed(&server, &id, "say hi with a tool").await;
                let call = events
                    .iter()
                    .find(|(name, _)| name == "tool_call")
                    .unwrap_or_else(|| panic!("{wire:?}: no tool_call in {events:?}"));
                assert_eq!(call.1["server"], "everything", "{wire:?}");
                assert_eq!(call.1["tool"], "echo");
                assert_eq!(call.1["arguments"], json!({"message": "hi"}));
                let result = events
                    .iter()
                    .find(|(name, _)| name == "tool_result")
                    .unwrap_or_else(|| panic!("{wire:?}: no tool_result in {events:?}"));
                assert_eq!(result.1["content"], "Echo: hi", "{wire:?}");
                assert_eq!(result.1["is_error"], false);
                done
            } else {
                send(&server, &id, json!({"content": "say hi with a tool"})).await
            };
            assert_eq!(
                reply["content"], "All done.",
                "{wire:?} streamed={streamed}"
            );
            assert_eq!(reply["metadata"]["tool_iterations"], 1);

            let chats = fake.chat_requests();
            assert_eq!(chats.len(), 2, "{wire:?}: the call, then the result");
            let offered = offered_tools(wire, &chats[0]);
            let (_, schema) = offered
                .iter()
                .find(|(name, _)| name == "everything__echo")
                .unwrap_or_else(|| panic!("{wire:?}: echo not offered: {offered:?}"));
            assert!(
                schema["properties"]["message"].is_object(),
                "{wire:?}: the schema is passed through: {schema}"
            );
            assert!(
                offered
                    .iter()
                    .all(|(name, _)| name.starts_with("everything__")),
                "{offered:?}"
            );
            let (name, arguments, result, is_error) = call_and_result(wire, &chats[1], "call_1");
            assert_eq!(name, "everything__echo");
            assert_eq!(arguments, json!({"message": "hi"}));
            assert_eq!(result, "Echo: hi", "{wire:?}");
            assert_ne!(is_error, Some(true));

            // Every step is stored, and the next message replays them natively.
            let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
            let messages = messages.as_array().unwrap();
            let roles: Vec<&str> = messages
                .iter()
                .map(|m| m["role"].as_str().unwrap())
                .collect();
            assert_eq!(
                roles,
                ["user", "assistant", "tool", "assistant"],
                "{wire:?}"
            );
            assert_eq!(messages[1]["metadata"]["tool_mode"], "native");
            assert_eq!(messages[1]["metadata"]["tool_calls"][0]["id"], "call_1");
            let tool = &messages[2];
            assert_eq!(tool["content"], "Echo: hi");
            assert_eq!(tool["metadata"]["server"], "everything");
            assert_eq!(tool["metadata"]["tool"], "echo");
            assert_eq!(tool["metadata"]["is_error"], false);
            assert_eq!(tool["metadata"]["tool_call_id"], "call_1");

            send(&server, &id, json!({"content": "thanks"})).await;
            let replayed = fake.last_chat();
            let (name, _, result, _) = call_and_result(wire, &replayed, "call_1");
            assert_eq!(
                (name.as_str(), result.as_str()),
                ("everything__echo", "Echo: hi")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_call_is_an_error_result_for_the_model_and_the_loop_goes_on() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    fake.queue(vec![
        Behaviour::tool_call("everything__no-such-tool", json!({})),
        Behaviour::tool_call("everything__get-sum", json!({"a": "x"})),
    ]);
    fake.set_behaviour(final_reply("Sorry."));
    let home = TestHome::new();
    let server = lit_mux_with(&home, &fake, Wire::Anthropic).await;
    let id = session(&server, "llm").await;

    let reply = send(&server, &id, json!({"content": "try tools"})).await;
    assert_eq!(reply["content"], "Sorry.");
    assert_eq!(reply["metadata"]["tool_iterations"], 2);
    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 3);
    let (_, _, unknown, is_error) = call_and_result(Wire::Anthropic, &chats[1], "call_1");
    assert_eq!(is_error, Some(true));
    assert!(unknown.contains("unknown tool"), "{unknown}");
    assert!(
        unknown.contains("everything__echo"),
        "names as the model knows them: {unknown}"
    );
    let (_, _, rejected, is_error) = call_and_result(Wire::Anthropic, &chats[2], "call_1");
    assert_eq!(is_error, Some(true), "{rejected}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_keeps_calling_stops_at_the_round_limit() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    fake.set_behaviour(Behaviour::tool_call(
        "everything__echo",
        json!({"message": "again"}),
    ));
    let home = TestHome::new();
    let server = lit_mux_with(&home, &fake, Wire::OpenAi).await;
    let id = session(&server, "llm").await;

    let (_, done) = {
        let response = server
            .post(&format!("/sessions/{id}/message"))
            .json(&json!({"content": "loop", "stream": true, "max_tool_iterations": 2}))
            .send()
            .await
            .unwrap();
        let events = testkit::sse::Events::new(response).all().await;
        let calls = events
            .iter()
            .filter(|(name, _)| name == "tool_call")
            .count();
        assert_eq!(calls, 2, "{events:?}");
        (events.clone(), events.last().unwrap().1.clone())
    };
    assert_eq!(
        done["metadata"]["max_tool_iterations_reached"], true,
        "{done}"
    );
    assert_eq!(fake.chat_requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_mode_falls_back_to_the_prompt_protocol_for_a_model_without_tools() {
    let refusing = FakeBackend::start(Wire::Ollama).await;
    let strict = FakeBackend::start(Wire::Ollama).await;
    let refusal = Behaviour::Fail {
        status: 400,
        message: "registry.ollama.ai/library/gemma:2b does not support tools".to_owned(),
    };
    refusing.queue(vec![refusal.clone()]);
    refusing.set_behaviour(final_reply("plain answer"));
    strict.set_behaviour(refusal);
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n{}{}",
        backend_entry("auto", Wire::Ollama, &refusing.url(), ""),
        backend_entry("strict", Wire::Ollama, &strict.url(), ", tool_mode: native"),
    ));
    let server = home.start(&[]);
    let (status, body) = server
        .post_json(
            "/mcp/servers",
            &json!({"name": "everything", "command": everything(), "args": ["stdio"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let id = session(&server, "auto").await;
    let reply = send(&server, &id, json!({"content": "hello"})).await;
    assert_eq!(reply["content"], "plain answer");
    let chats = refusing.chat_requests();
    assert_eq!(
        chats.len(),
        2,
        "refused natively, then retried in prompt mode"
    );
    assert!(chats[0].body["tools"].is_array());
    assert!(chats[1].body.get("tools").is_none(), "{}", chats[1].body);
    let system = chats[1].body["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("everything.echo"), "{system}");
    // Remembered: the next message goes straight to prompt mode.
    send(&server, &id, json!({"content": "again"})).await;
    assert_eq!(refusing.chat_requests().len(), 3);
    assert!(refusing.last_chat().body.get("tools").is_none());

    // `tool_mode: native` does not fall back: the refusal is the answer.
    let id = session(&server, "strict").await;
    let (status, body) = server
        .post_json(
            &format!("/sessions/{id}/message"),
            &json!({"content": "hello"}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("does not support tools"),
        "{body}"
    );
    assert_eq!(strict.chat_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_tools_offered_the_native_history_goes_as_text() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    fake.queue(vec![Behaviour::tool_call(
        "everything__echo",
        json!({"message": "hi"}),
    )]);
    fake.set_behaviour(final_reply("ok"));
    let home = TestHome::new();
    let server = lit_mux_with(&home, &fake, Wire::Anthropic).await;
    let id = session(&server, "llm").await;
    send(&server, &id, json!({"content": "use the tool"})).await;

    // Anthropic refuses tool_use blocks when no tools are defined: both must send text.
    send(
        &server,
        &id,
        json!({"content": "no tools now", "use_tools": false}),
    )
    .await;
    let plain = fake.last_chat();
    assert!(plain.body.get("tools").is_none());
    let text = plain.body["messages"].to_string();
    assert!(
        !text.contains("tool_use") && !text.contains("tool_result"),
        "{text}"
    );
    assert!(
        text.contains("Echo: hi"),
        "the result is still in the history: {text}"
    );

    let (status, body) = server
        .post_json(
            &format!("/sessions/{id}/broadcast"),
            &json!({"content": "and you?"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["responses"][0]["message"].is_object(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcast_runs_each_backends_own_tool_loop_and_each_replays_its_own_steps() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    fake.queue(vec![Behaviour::tool_call(
        "everything__echo",
        json!({"message": "from llm"}),
    )]);
    fake.set_behaviour(final_reply("llm done"));
    let home = TestHome::new();
    let server = lit_mux_with(&home, &fake, Wire::Ollama).await;
    let (status, body) = server
        .post_json("/sessions", &json!({"backends": ["echo", "llm"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();

    let response = server
        .post(&format!("/sessions/{id}/broadcast"))
        .json(&json!({
            "content": r#"{"tool": "everything.echo", "arguments": {"message": "from echo"}}"#,
            "stream": true
        }))
        .send()
        .await
        .unwrap();
    let events = testkit::sse::Events::new(response).all().await;
    for backend in ["echo", "llm"] {
        let of = |name: &str| {
            events
                .iter()
                .filter(|(n, data)| n == name && data["backend"] == backend)
                .count()
        };
        assert_eq!(of("tool_call"), 1, "{backend}: {events:?}");
        assert_eq!(of("tool_result"), 1, "{backend}");
        assert_eq!(of("done"), 1, "{backend}");
    }
    let done_text = |backend: &str| {
        events
            .iter()
            .find(|(n, data)| n == "done" && data["backend"] == backend)
            .map(|(_, data)| data["content"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(
        done_text("echo"),
        "Result of tool everything.echo:\nEcho: from echo"
    );
    assert_eq!(done_text("llm"), "llm done");

    // The next message to llm replays llm's steps natively, and none of echo's.
    send(
        &server,
        &id,
        json!({"content": "and now?", "backend": "llm"}),
    )
    .await;
    let replayed = fake.last_chat();
    let (name, _, result, _) = call_and_result(Wire::Ollama, &replayed, "call_1");
    assert_eq!(
        (name.as_str(), result.as_str()),
        ("everything__echo", "Echo: from llm")
    );
    let text = replayed.body["messages"].to_string();
    assert!(
        !text.contains("Echo: from echo") && !text.contains("Result of tool"),
        "echo's steps leaked: {text}"
    );
}
