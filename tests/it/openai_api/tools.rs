//! Tools behind the front door: the client's tools pass through to the backend and calls come back
//! as OpenAI tool calls, plain or streamed, with the results the client sends back reaching the
//! backend; and lit-mux can run its own MCP tools instead, statelessly or into a session, but not
//! both at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::TestHome;
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

use super::{completion, data_lines, session};

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
