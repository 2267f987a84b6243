//! The echo backend calls tools natively: a last user message that is a tool call in JSON naming
//! an offered tool comes back as a native call, and the tool's result comes back as text. So a
//! whole agent loop runs with no model: the official `openai` client's loop with its own tools,
//! and a session's loop over a real MCP server in native mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::mcp::everything;
use crate::support::{Server, TestHome};
use serde_json::{Value, json};

use super::{completion, data_lines, session};

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
    }}])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_client_runs_a_two_step_agent_loop_against_echo() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let output = crate::support::client_script(
        "openai_tool_loop.py",
        &json!({"base_url": server.url("")}).to_string(),
    )
    .await;
    let seen = crate::support::client_json(&output);

    for (loop_name, city) in [("plain", "Paris"), ("streamed", "Oslo")] {
        let steps = seen[loop_name].as_array().unwrap();
        assert_eq!(
            steps.len(),
            2,
            "{loop_name}: a call, then the answer: {steps:?}"
        );
        assert_eq!(steps[0]["finish_reason"], "tool_calls", "{loop_name}");
        let call = &steps[0]["calls"][0];
        assert_eq!(call["name"], "get_weather", "{loop_name}");
        assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
        let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"city": city}), "{loop_name}");
        assert_eq!(steps[1]["finish_reason"], "stop", "{loop_name}");
        assert_eq!(
            steps[1]["content"],
            format!("sunny in {city}"),
            "{loop_name}"
        );
        assert_eq!(steps[1]["calls"], json!([]), "{loop_name}");
    }
    for loop_name in ["not_offered", "not_offered_streamed"] {
        let steps = seen[loop_name].as_array().unwrap();
        assert_eq!(steps.len(), 1, "{loop_name}: {steps:?}");
        assert_eq!(steps[0]["finish_reason"], "stop", "{loop_name}");
        let echoed: Value = serde_json::from_str(steps[0]["content"].as_str().unwrap()).unwrap();
        assert_eq!(
            echoed,
            json!({"tool": "launch_rockets", "arguments": {}}),
            "{loop_name}: echoed as text"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_answers_a_call_of_an_offered_tool_natively_and_anything_else_as_text() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let ask = |content: &str, tools: Option<Value>| {
        let mut body = json!({"model": "echo", "messages": [{"role": "user", "content": content}]});
        if let Some(tools) = tools {
            body["tools"] = tools;
        }
        body
    };
    let call_text = r#"{"tool": "get_weather", "arguments": {"city": "Rome"}}"#;

    let (status, body) = completion(&server, ask(call_text, Some(weather_tool()))).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Rome"}"#
    );

    // Streamed: one tool_calls chunk, then the finish.
    let mut streamed = ask(call_text, Some(weather_tool()));
    streamed["stream"] = json!(true);
    let response = server
        .post("/v1/chat/completions")
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let chunks: Vec<Value> = data_lines(&response.text().await.unwrap())
        .iter()
        .filter(|line| *line != "[DONE]")
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let call = chunks
        .iter()
        .find_map(|chunk| chunk["choices"][0]["delta"]["tool_calls"].get(0))
        .unwrap_or_else(|| panic!("no tool call in {chunks:?}"));
    assert_eq!(call["index"], 0);
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // Not a call echo can make: without tools, naming a tool not offered, or not only JSON.
    let not_calls = [
        ask(call_text, None),
        ask(
            r#"{"tool": "get_time", "arguments": {}}"#,
            Some(weather_tool()),
        ),
        ask(&format!("please {call_text}"), Some(weather_tool())),
    ];
    for request in not_calls {
        let (status, body) = completion(&server, request.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "stop", "{request}");
        assert_eq!(
            body["choices"][0]["message"]["content"], request["messages"][0]["content"],
            "{body}"
        );
    }
}

/// lit-mux whose echo backend uses native tools, with `server-everything` running.
async fn native_echo_with_everything(home: &TestHome) -> Server {
    home.write_config("backends:\n  echo: {type: echo, tool_mode: native}\n");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_session_runs_a_real_mcp_tool_natively_with_echo_as_the_model() {
    let home = TestHome::new();
    let server = native_echo_with_everything(&home).await;
    let id = session(&server, "echo").await;

    let (status, reply) = server
        .post_json(
            &format!("/sessions/{id}/message"),
            &json!({"content": r#"{"tool": "everything__echo", "arguments": {"message": "hi"}}"#}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "Echo: hi", "{reply}");
    assert_eq!(reply["metadata"]["tool_iterations"], 1, "{reply}");

    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let messages = messages.as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(messages[1]["metadata"]["tool_mode"], "native");
    assert_eq!(
        messages[1]["metadata"]["tool_calls"][0]["tool"],
        "everything__echo"
    );
    assert_eq!(messages[2]["content"], "Echo: hi");

    // The same through /v1 with lit-mux running the tools, streamed.
    let response = server
        .post("/v1/chat/completions")
        .json(&json!({
            "model": "echo",
            "stream": true,
            "lit_mux": {"use_tools": true},
            "messages": [{"role": "user",
                          "content": r#"{"tool": "everything__echo", "arguments": {"message": "again"}}"#}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text: String = data_lines(&response.text().await.unwrap())
        .iter()
        .filter(|line| *line != "[DONE]")
        .filter_map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Echo: again");
}
