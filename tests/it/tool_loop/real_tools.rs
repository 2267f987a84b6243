//! The loop with the real `server-everything` tools: a call written as JSON runs and every step is
//! stored, tool failures go back to the model and never fail the request, a model gets the catalog
//! in its system prompt and the results back until the iteration limit, and a streamed reply shows
//! each call and result before the answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::mcp::everything;
use crate::support::{Server, TestHome};
use serde_json::json;
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

use super::{messages, send, session};

async fn with_everything(server: &Server) {
    let (status, body) = server
        .post_json(
            "/mcp/servers",
            &json!({"name": "everything", "command": everything(), "args": ["stdio"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_runs_a_real_tool_written_as_json_and_every_step_is_stored() {
    let home = TestHome::new();
    let server = home.start(&[]);
    with_everything(&server).await;
    let id = session(&server, "echo").await;

    let reply = send(
        &server,
        &id,
        json!({"content": r#"{"tool": "everything.echo", "arguments": {"message": "hi"}}"#}),
    )
    .await;
    assert_eq!(
        reply["content"],
        "Result of tool everything.echo:\nEcho: hi"
    );
    assert_eq!(reply["metadata"]["tool_iterations"], 1);

    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let roles: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    let call = &messages[1];
    assert_eq!(call["metadata"]["tool_calls"][0]["tool"], "everything.echo");
    let result = &messages[2];
    assert_eq!(result["content"], "Echo: hi");
    assert_eq!(result["metadata"]["server"], "everything");
    assert_eq!(result["metadata"]["tool"], "echo");
    assert_eq!(result["metadata"]["arguments"], json!({"message": "hi"}));
    assert_eq!(result["metadata"]["is_error"], false);
    assert!(result["metadata"]["duration_ms"].is_u64());
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_failures_go_back_to_the_model_and_never_fail_the_request() {
    let home = TestHome::new();
    let server = home.start(&[]);
    with_everything(&server).await;
    let id = session(&server, "echo").await;

    // A bare name that exactly one server has is accepted, and named in full in the result.
    let reply = send(
        &server,
        &id,
        json!({"content": r#"Sure. {"tool": "get-sum", "arguments": {"a": 2, "b": 3}}"#}),
    )
    .await;
    assert_eq!(
        reply["content"],
        "Result of tool everything.get-sum:\nThe sum of 2 and 3 is 5."
    );
    let stored = messages(&server, &id).await;
    assert_eq!(stored[1]["metadata"]["tool_calls"][0]["tool"], "get-sum");
    assert_eq!(stored[2]["metadata"]["server"], "everything");
    assert_eq!(stored[2]["metadata"]["tool"], "get-sum");
    assert_eq!(stored[2]["content"], "The sum of 2 and 3 is 5.");

    let reply = send(
        &server,
        &id,
        json!({"content": r#"{"tool": "everything.no-such-tool", "arguments": {}}"#}),
    )
    .await;
    let content = reply["content"].as_str().unwrap();
    assert!(
        content.starts_with("Tool everything.no-such-tool failed"),
        "{content}"
    );
    assert!(
        content.contains("everything.echo"),
        "the error lists the tools: {content}"
    );

    // Arguments the tool rejects: an error result, not an HTTP error.
    let reply = send(
        &server,
        &id,
        json!({"content": r#"{"tool": "everything.get-sum", "arguments": {"a": "x"}}"#}),
    )
    .await;
    assert!(
        reply["content"].as_str().unwrap().contains("failed"),
        "{reply}"
    );

    // With use_tools false the JSON is just text.
    let plain = r#"{"tool": "everything.echo", "arguments": {"message": "hi"}}"#;
    let reply = send(&server, &id, json!({"content": plain, "use_tools": false})).await;
    assert_eq!(reply["content"], plain);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_gets_the_tools_in_its_system_prompt_and_the_results_back_until_the_limit() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    // A model that always asks for the same tool.
    fake.set_behaviour(Behaviour::Reply {
        text: Some(
            r#"Let me check. {"tool": "everything.echo", "arguments": {"message": "again"}}"#
                .to_owned(),
        ),
        delay: std::time::Duration::ZERO,
        chunk_delay: std::time::Duration::ZERO,
    });
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n  llm: {{type: ollama, host: '{}', tool_mode: prompt}}\n",
        fake.url()
    ));
    let server = home.start(&[]);
    with_everything(&server).await;
    let id = session(&server, "llm").await;

    let reply = send(
        &server,
        &id,
        json!({"content": "use a tool", "max_tool_iterations": 2}),
    )
    .await;
    assert_eq!(
        reply["metadata"]["max_tool_iterations_reached"], true,
        "{reply}"
    );
    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 3, "one call and two rounds of tool results");
    // Ollama could take native tools; tool_mode: prompt sends none.
    for chat in &chats {
        assert_eq!(chat.body.get("tools"), None, "{}", chat.body);
    }

    let first = &chats[0].body["messages"];
    assert_eq!(first[0]["role"], "system");
    let system = first[0]["content"].as_str().unwrap();
    assert!(system.contains("\"tool\": \"server.tool\""), "{system}");
    let catalog = server.get_json("/tools").await;
    let catalog = catalog["tools"].as_array().unwrap();
    assert!(catalog.len() > 5, "{catalog:?}");
    for tool in catalog {
        let listed = format!(
            "\"name\": \"everything.{}\"",
            tool["name"].as_str().unwrap()
        );
        assert!(system.contains(&listed), "{listed} is not in {system}");
    }
    let last = chats[2].body["messages"].as_array().unwrap();
    let fed_back = last.last().unwrap();
    assert_eq!(fed_back["role"], "user");
    assert_eq!(
        fed_back["content"],
        "Result of tool everything.echo:\nEcho: again"
    );
    assert_eq!(
        last[last.len() - 2]["role"],
        "assistant",
        "the call is in the history it answered"
    );

    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let tools = messages
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .count();
    assert_eq!(tools, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_reply_shows_each_tool_call_and_result_then_the_answer() {
    let home = TestHome::new();
    let server = home.start(&[]);
    with_everything(&server).await;
    let id = session(&server, "echo").await;

    let response = server
        .post(&format!("/sessions/{id}/message"))
        .json(&json!({
            "content": r#"Adding: {"tool": "everything.get-sum", "arguments": {"a": 20, "b": 22}}"#,
            "stream": true
        }))
        .send()
        .await
        .unwrap();
    let events = testkit::sse::Events::new(response).all().await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    let call_at = names
        .iter()
        .position(|n| *n == "tool_call")
        .expect("a tool_call");
    let result_at = names
        .iter()
        .position(|n| *n == "tool_result")
        .expect("a tool_result");
    assert!(call_at < result_at, "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    // The text before the call streams as text; the call itself does not.
    assert_eq!(names[0], "delta");
    assert_eq!(events[0].1["text"], "Adding: ");
    let call = &events[call_at].1;
    assert_eq!(call["server"], "everything");
    assert_eq!(call["arguments"], json!({"a": 20, "b": 22}));
    let result = &events[result_at].1;
    assert_eq!(result["is_error"], false);
    assert!(
        result["content"].as_str().unwrap().contains("42"),
        "{result}"
    );
    let done = &events.last().unwrap().1;
    assert!(done["content"].as_str().unwrap().contains("42"), "{done}");
    assert_eq!(done["metadata"]["tool_iterations"], 1);
}
