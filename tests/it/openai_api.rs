//! The OpenAI-compatible front door, through the real binary: the official `openai` Python
//! package against it, and raw HTTP against fake providers to check what reaches the backend,
//! sessions, streaming and every error in OpenAI's shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::{Server, TestHome, status_and_json};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

const KEY: &str = "front-door-key-123";

async fn completion(server: &Server, body: Value) -> (u16, Value) {
    status_and_json(
        server
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn session(server: &Server, backend: &str) -> String {
    let (status, body) = server
        .post_json("/sessions", &json!({ "backends": [backend] }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The `data:` payloads of an SSE body.
fn data_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_client_works_unchanged() {
    let home = TestHome::new();
    home.write_config(&format!("server:\n  api_key: {KEY}\n"));
    let server = home.start(&[]);
    let (status, created) = status_and_json(
        server
            .post("/sessions")
            .bearer_auth(KEY)
            .json(&json!({"backends": ["echo"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let session_id = created["id"].as_str().unwrap().to_owned();

    let output = tokio::process::Command::new(crate::support::client_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/openai_client.py"
        ))
        .arg(server.url(""))
        .arg(KEY)
        .arg(&session_id)
        .output()
        .await
        .unwrap();
    let seen = crate::support::client_json(&output);

    assert!(
        seen["models"]
            .as_array()
            .unwrap()
            .contains(&json!("echo/echo")),
        "{seen}"
    );
    assert_eq!(seen["reply"]["content"], "hello from python");
    assert_eq!(seen["reply"]["finish_reason"], "stop");
    assert_eq!(seen["reply"]["model"], "echo/echo");
    assert_eq!(seen["reply"]["object"], "chat.completion");
    let pieces: Vec<&str> = seen["stream"]["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(pieces.len() > 1, "streamed in pieces: {pieces:?}");
    assert_eq!(pieces.concat(), "streamed word by word");
    assert_eq!(seen["stream"]["finish_reason"], "stop");
    assert_eq!(seen["unknown_model"]["status"], 404, "{seen}");
    assert_eq!(seen["unknown_model"]["code"], "model_not_found");
    assert_eq!(seen["wrong_key"]["status"], 401);

    // The streamed exchange went into the session named by `session_id`.
    let messages: Value = server
        .get(&format!("/sessions/{session_id}/messages"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: Vec<(&str, &str)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stored,
        [
            ("user", "streamed word by word"),
            ("assistant", "streamed word by word")
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_reach_the_backend_translated_and_answers_come_back_in_openai_shape() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n  claude: {{type: anthropic, base_url: '{}', api_key: k, default_model: claude-x}}\n",
        fake.url()
    ));
    let server = home.start(&[]);

    let (status, body) = completion(
        &server,
        json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]}
            ],
            "temperature": 0.2
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "claude/claude-x");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "anthropic says: second"
    );
    assert_eq!(
        body["choices"][0]["finish_reason"], "stop",
        "end_turn → stop"
    );
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");

    let sent = fake.last_chat().body;
    assert_eq!(sent["model"], "claude-x");
    assert_eq!(sent["system"], "You are terse.");
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);

    // Streamed, with usage asked for: chunks, the finish, the usage, then [DONE].
    let response = server
        .post("/v1/chat/completions")
        .json(&json!({
            "model": "claude/claude-y",
            "messages": [{"role": "user", "content": "count these words"}],
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let lines = data_lines(&response.text().await.unwrap());
    assert_eq!(lines.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "anthropic says: count these words");
    let finish = chunks
        .iter()
        .position(|c| c["choices"][0]["finish_reason"] == "stop")
        .expect("a finish chunk");
    let usage = chunks.last().unwrap();
    assert_eq!(finish, chunks.len() - 2, "usage comes last");
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(fake.last_chat().body["model"], "claude-y");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_failure_is_an_openai_error_with_the_right_status() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n  gpt: {{type: openai, base_url: '{}', api_key: k}}\n  off: {{type: echo, enabled: false}}\n",
        fake.url()
    ));
    let server = home.start(&[]);
    let user = json!([{"role": "user", "content": "hi"}]);
    let error_of = |body: &Value| {
        assert!(body["error"]["message"].is_string(), "{body}");
        assert!(body["error"]["type"].is_string(), "{body}");
        assert!(body.get("detail").is_none(), "{body}");
        body["error"].clone()
    };

    for model in ["nope", "nope/model", "off/echo"] {
        let (status, body) = completion(&server, json!({"model": model, "messages": user})).await;
        assert_eq!(status, 404, "{model}: {body}");
        assert_eq!(error_of(&body)["code"], "model_not_found");
    }

    let (status, body) = status_and_json(
        server
            .post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body("{\"model\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_of(&body)["type"], "invalid_request_error");

    let (status, body) = completion(&server, json!({"model": "gpt", "messages": []})).await;
    assert_eq!(status, 400, "{body}");
    error_of(&body);

    let (status, body) = completion(
        &server,
        json!({"model": "gpt", "messages": user, "session_id": "no-such-session"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_of(&body)["code"], "session_not_found");

    fake.set_behaviour(Behaviour::Fail {
        status: 500,
        message: "the GPU caught fire".to_owned(),
    });
    let (status, body) = completion(&server, json!({"model": "gpt", "messages": user})).await;
    assert_eq!(status, 502, "{body}");
    let error = error_of(&body);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the GPU caught fire"),
        "{error}"
    );

    fake.set_behaviour(Behaviour::RateLimited {
        retry_after_secs: 7,
    });
    let response = server
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt", "messages": user, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_of(&body)["code"], "rate_limit_exceeded");

    // Cut off mid-stream: the stream carries an error, then ends.
    fake.set_behaviour(Behaviour::DropMidStream);
    let response = server
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt", "messages": user, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let lines = data_lines(&response.text().await.unwrap());
    let error = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|chunk| chunk.get("error").is_some())
        .unwrap_or_else(|| panic!("no error chunk in {lines:?}"));
    assert_eq!(error["error"]["type"], "api_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_id_appends_the_exchange_and_a_failure_keeps_the_question() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n  local: {{type: ollama, host: '{}'}}\n",
        fake.url()
    ));
    let server = home.start(&[]);
    let id = session(&server, "local").await;

    let response = server
        .post("/v1/chat/completions")
        .header("x-session-id", &id)
        .json(&json!({"model": "local/qwen3", "messages": [
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": "now"}
        ]}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 200, "{body}");

    fake.set_behaviour(Behaviour::Hang);
    let slow = tokio::time::timeout(
        Duration::from_millis(300),
        completion(
            &server,
            json!({"model": "local", "messages": [{"role": "user", "content": "lost?"}], "session_id": id}),
        ),
    )
    .await;
    assert!(slow.is_err(), "the hung backend must not answer");
    // The client left: its question stays, marked failed.
    let marked = testkit::processes::eventually(Duration::from_secs(5), || async {
        let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
        messages
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["content"] == "lost?" && m["metadata"]["status"] == "failed")
    })
    .await;
    assert!(marked, "the abandoned question was not marked failed");
    fake.set_behaviour(Behaviour::Fail {
        status: 404,
        message: "model 'qwen9' not found".to_owned(),
    });
    let (status, _) = completion(
        &server,
        json!({"model": "local/qwen9", "messages": [{"role": "user", "content": "fails"}], "session_id": id}),
    )
    .await;
    assert_eq!(status, 502);

    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let stored: Vec<(String, String, Value)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
                m["metadata"]["status"].clone(),
            )
        })
        .collect();
    // Only the new message of each exchange is stored: the client sent the history itself.
    assert_eq!(stored[0].0, "user");
    assert_eq!(stored[0].1, "now");
    assert_eq!(
        stored[1],
        (
            "assistant".to_owned(),
            "ollama says: now".to_owned(),
            Value::Null
        )
    );
    let failed = stored
        .iter()
        .find(|m| m.1 == "fails")
        .expect("the failed question is kept");
    assert_eq!(failed.2, "failed");
    let models: Vec<Value> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].clone())
        .collect();
    assert_eq!(models[0], "qwen3");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_tools_pass_through_and_calls_come_back_as_openai_tool_calls() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n  claude: {{type: anthropic, base_url: '{}', api_key: k}}\n",
        fake.url()
    ));
    let server = home.start(&[]);
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }}]);
    let question = json!({"role": "user", "content": "weather in Oslo?"});

    for stream in [false, true] {
        fake.queue(vec![Behaviour::tool_call(
            "get_weather",
            json!({"city": "Oslo"}),
        )]);
        let request =
            json!({"model": "claude", "messages": [question], "tools": tools, "stream": stream});
        let response = server
            .post("/v1/chat/completions")
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let (calls, finish) = if stream {
            let lines = data_lines(&response.text().await.unwrap());
            let chunks: Vec<Value> = lines
                .iter()
                .filter(|l| *l != "[DONE]")
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let calls: Vec<Value> = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
                .flatten()
                .cloned()
                .collect();
            let finish = chunks
                .iter()
                .find_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_owned));
            assert_eq!(calls[0]["index"], 0);
            (calls, finish)
        } else {
            let body: Value = response.json().await.unwrap();
            let message = &body["choices"][0]["message"];
            assert_eq!(message["content"], Value::Null, "{body}");
            (
                message["tool_calls"].as_array().unwrap().clone(),
                body["choices"][0]["finish_reason"]
                    .as_str()
                    .map(str::to_owned),
            )
        };
        assert_eq!(finish.as_deref(), Some("tool_calls"), "stream={stream}");
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0]["id"], "call_1");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"city": "Oslo"}));
        let sent = fake.last_chat().body;
        assert_eq!(sent["tools"][0]["name"], "get_weather");
        assert_eq!(
            sent["tools"][0]["input_schema"]["required"],
            json!(["city"])
        );
    }

    // The client runs the tool and sends the result back: it reaches Anthropic as tool_result.
    let (status, body) = completion(
        &server,
        json!({"model": "claude", "tools": tools, "messages": [
            question,
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 °C"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = fake.last_chat().body;
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages[1]["content"][0]["type"], "tool_use");
    assert_eq!(messages[1]["content"][0]["input"], json!({"city": "Oslo"}));
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][0]["tool_use_id"], "call_1");
    assert_eq!(messages[2]["content"][0]["content"], "sunny, 21 °C");
}

#[tokio::test(flavor = "multi_thread")]
async fn lit_mux_can_run_its_own_mcp_tools_behind_the_front_door() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n  gpt: {{type: openai, base_url: '{}', api_key: k}}\n",
        fake.url()
    ));
    let server = home.start(&[]);
    let (status, body) = server
        .post_json(
            "/mcp/servers",
            &json!({"name": "everything", "command": crate::support::mcp::everything(), "args": ["stdio"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Stateless, with echo and the prompt protocol: nothing is stored.
    let (status, body) = completion(
        &server,
        json!({"model": "echo", "lit_mux": {"use_tools": true}, "messages": [
            {"role": "user", "content": r#"{"tool": "everything.echo", "arguments": {"message": "hi"}}"#}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Result of tool everything.echo:\nEcho: hi"
    );
    assert_eq!(body["lit_mux"]["tool_iterations"], 1);
    assert_eq!(server.get_json("/sessions").await, json!([]));

    // Native, streamed, asked for by header, into a session: the client sees the final text,
    // the model saw the tool's result, the session holds every step.
    let id = session(&server, "gpt").await;
    fake.queue(vec![Behaviour::tool_call(
        "everything__echo",
        json!({"message": "from the model"}),
    )]);
    fake.set_behaviour(Behaviour::Reply {
        text: Some("It echoed.".to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::ZERO,
    });
    let response = server
        .post("/v1/chat/completions")
        .header("x-lit-mux-use-tools", "true")
        .json(&json!({"model": "gpt", "stream": true, "session_id": id,
            "messages": [{"role": "user", "content": "echo something"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let lines = data_lines(&response.text().await.unwrap());
    assert_eq!(lines.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "It echoed.");
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()),
        "lit-mux's own calls are not the client's"
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["lit_mux"]["tool_iterations"], 1);
    let fed_back = fake.last_chat().body;
    let tool_message = fed_back["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("no tool result in {fed_back}"))
        .clone();
    assert_eq!(tool_message["content"], "Echo: from the model");
    let stored = server.get_json(&format!("/sessions/{id}/messages")).await;
    let roles: Vec<&str> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);

    // Client tools and lit-mux's tools at once: which would run them is unclear.
    let (status, body) = completion(
        &server,
        json!({"model": "gpt", "lit_mux": {"use_tools": true},
            "tools": [{"type": "function", "function": {"name": "x"}}],
            "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not both")
    );
}
