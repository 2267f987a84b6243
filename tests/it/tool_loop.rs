//! The tool loop through the real binary: models (the `echo` backend, fake providers) call the
//! real `server-everything` tools and our fixture's, mostly by writing the prompt protocol's JSON
//! in their answer; tool failures, timeouts, a dead server, a client that leaves mid-call (streamed
//! or not), calls over the per-answer limit, and how each ends up in the history that is replayed
//! to the model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::mcp::{everything, fixture_server};
use crate::support::{Server, TestHome};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, FakeToolCall, Wire, call_and_result};
use testkit::processes::eventually;

async fn with_everything(server: &Server) {
    let (status, body) = server
        .post_json(
            "/mcp/servers",
            &json!({"name": "everything", "command": everything(), "args": ["stdio"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Our fixture MCP server as `fx`, with the tool-call `timeout` in seconds.
async fn with_fixture(server: &Server, timeout: u64) {
    let mut body = fixture_server("fx", "healthy", &[]);
    body["timeout"] = json!(timeout);
    let (status, body) = server.post_json("/mcp/servers", &body).await;
    assert_eq!(status, 200, "{body}");
}

/// A HOME whose backend `llm` is `fake`, with `extra` config keys for it (`, tool_mode: prompt`).
fn home_with(fake: &FakeBackend, wire: Wire, extra: &str) -> TestHome {
    let home = TestHome::new();
    let url = fake.url();
    let entry = match wire {
        Wire::Ollama => format!("{{type: ollama, host: '{url}'{extra}}}"),
        Wire::OpenAi => format!("{{type: openai, base_url: '{url}', api_key: k{extra}}}"),
        Wire::Anthropic => format!("{{type: anthropic, base_url: '{url}', api_key: k{extra}}}"),
    };
    home.write_config(&format!("backends:\n  llm: {entry}\n"));
    home
}

fn reply(text: &str) -> Behaviour {
    Behaviour::Reply {
        text: Some(text.to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::ZERO,
    }
}

async fn messages(server: &Server, id: &str) -> Vec<Value> {
    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    messages.as_array().unwrap().clone()
}

fn roles(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect()
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

/// The model on `wire` calls `fx__sleep` for 20 s; the client asks (`streamed` or not) and
/// leaves once the call runs in the fixture. Then what is stored, and that the next message
/// replays the question with the call and its cancelled result, which the API accepts.
async fn a_client_leaves_mid_call_then_comes_back(wire: Wire, streamed: bool) {
    let case = format!("{wire:?}, streamed: {streamed}");
    let fake = FakeBackend::start(wire).await;
    fake.queue(vec![Behaviour::tool_call(
        "fx__sleep",
        json!({"ms": 20000}),
    )]);
    let home = home_with(&fake, wire, "");
    let server = home.start(&[]);
    with_fixture(&server, 30).await;
    let id = session(&server, "llm").await;

    let request = server
        .post(&format!("/sessions/{id}/message"))
        .json(&json!({"content": "sleep a while", "stream": streamed}))
        .send();
    // Streamed, the events are read up to the call; not streamed, the request is a task of its
    // own, aborted (its connection closed) to leave.
    let (events, pending) = if streamed {
        let mut events = testkit::sse::Events::new(request.await.unwrap());
        loop {
            let (name, _) = events.next().await.expect("a tool_call event");
            if name == "tool_call" {
                break;
            }
        }
        (Some(events), None)
    } else {
        (None, Some(tokio::spawn(request)))
    };
    // Leave once the call is running in the child: leaving earlier rightly runs no call.
    let logs = || async {
        let logs = server.get_json("/mcp/servers/fx/logs").await;
        logs["logs"].as_str().unwrap_or_default().to_owned()
    };
    let started = eventually(Duration::from_secs(10), || async {
        logs().await.contains("sleeping 20000 ms")
    })
    .await;
    assert!(started, "{case}: the tool call never reached the server");
    drop(events);
    if let Some(pending) = pending {
        pending.abort();
        assert!(pending.await.unwrap_err().is_cancelled(), "{case}");
    }

    let cancelled = eventually(Duration::from_secs(5), || async {
        logs().await.contains("cancelled")
    })
    .await;
    assert!(cancelled, "{case}: the tool call was not cancelled");
    let stored = eventually(Duration::from_secs(5), || async {
        let history = messages(&server, &id).await;
        history.len() == 3 && history[1]["metadata"]["status"] == "incomplete"
    })
    .await;
    let history = messages(&server, &id).await;
    assert!(stored, "{case}: {history:?}");
    assert_eq!(roles(&history), ["user", "assistant", "tool"]);
    let answer = &history[1]["metadata"];
    assert_eq!(answer["tool_calls"][0]["id"], "call_1", "{answer}");
    assert_eq!(answer["status"], "incomplete", "{answer}");
    let result = &history[2];
    assert_eq!(result["content"], "cancelled: client disconnected");
    let metadata = &result["metadata"];
    assert_eq!(metadata["is_error"], true, "{metadata}");
    assert_eq!(metadata["status"], "incomplete", "{metadata}");
    assert_eq!(metadata["tool_call_id"], "call_1", "{metadata}");
    assert_eq!(
        (&metadata["server"], &metadata["tool"]),
        (&json!("fx"), &json!("sleep"))
    );
    // The user's message was answered as far as it went: not marked failed, so it stays in the
    // context with the steps that answer it.
    assert_eq!(
        history[0]["metadata"].get("status"),
        None,
        "{case}: {history:?}"
    );

    // The next message replays the question, the call and its cancelled result, which the API
    // accepts.
    let next = send(&server, &id, json!({"content": "are you there?"})).await;
    assert_eq!(
        next["content"],
        format!("{} says: are you there?", wire.name())
    );
    let replayed = fake.last_chat();
    let sent = replayed.body["messages"].as_array().unwrap();
    assert_eq!(sent[0]["role"], "user", "{case}: {sent:?}");
    assert!(
        sent[0].to_string().contains("sleep a while"),
        "{case}: the question is replayed before its steps: {sent:?}"
    );
    let (name, arguments, content, is_error) = call_and_result(wire, &replayed, "call_1");
    assert_eq!(name, "fx__sleep");
    assert_eq!(arguments, json!({"ms": 20000}));
    assert_eq!(content, "cancelled: client disconnected");
    if wire == Wire::Anthropic {
        assert_eq!(is_error, Some(true));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_a_stream_cancels_the_running_call_stored_as_cancelled_and_replayed() {
    // The APIs that refuse a call without its result.
    for wire in [Wire::OpenAi, Wire::Anthropic] {
        a_client_leaves_mid_call_then_comes_back(wire, true).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_a_plain_request_mid_call_leaves_the_same_history_as_a_stream() {
    // Not streamed, axum drops the handler when the client leaves: the loop is cancelled too.
    for wire in [Wire::OpenAi, Wire::Anthropic] {
        a_client_leaves_mid_call_then_comes_back(wire, false).await;
    }
}

/// Makes the database of the lit-mux running in `home` refuse the messages `when` (an SQL
/// condition on `NEW`) holds for, with a trigger: a store that cannot keep one step, the one store
/// failure a test can cause at will (the other steps are stored and marked as usual).
async fn refuse_messages(home: &TestHome, when: &str) {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(home.path().join(".local/share/lit-mux/lit-mux.db"));
    let mut db = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    for statement in [
        "DROP TRIGGER IF EXISTS refuse_messages".to_owned(),
        format!(
            "CREATE TRIGGER refuse_messages BEFORE INSERT ON messages WHEN {when} \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut db)
            .await
            .unwrap();
    }
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_that_cannot_be_stored_marks_the_answer_incomplete_streamed_or_not() {
    let home = TestHome::new();
    let server = home.start(&[]);
    with_fixture(&server, 5).await;

    // The answer holding the call, the call's result, the final answer after it: what is kept,
    // the tool event streamed, and the message marked.
    let cases = [
        (
            "json_extract(NEW.metadata, '$.tool_calls') IS NOT NULL",
            &["user"][..],
            None,
            (0, "failed"),
        ),
        (
            "NEW.role = 'tool'",
            &["user", "assistant"][..],
            Some("tool_call"),
            (1, "incomplete"),
        ),
        (
            "json_extract(NEW.metadata, '$.tool_iterations') IS NOT NULL",
            &["user", "assistant", "tool"][..],
            Some("tool_result"),
            (1, "incomplete"),
        ),
    ];
    for (refused, kept, tool_event, (marked_at, status)) in cases {
        refuse_messages(&home, refused).await;
        for streamed in [false, true] {
            let case = format!("{refused}, streamed: {streamed}");
            let id = session(&server, "echo").await;
            let response = server
                .post(&format!("/sessions/{id}/message"))
                .json(&json!({
                    "content": r#"{"tool": "fx.echo", "arguments": {"message": "hi"}}"#,
                    "stream": streamed,
                }))
                .send()
                .await
                .unwrap();
            let detail = if streamed {
                let events = testkit::sse::Events::new(response).all().await;
                let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
                if let Some(tool_event) = tool_event {
                    assert!(names.contains(&tool_event), "{case}: {names:?}");
                }
                assert_eq!(names.last(), Some(&"error"), "{case}");
                events.last().unwrap().1["detail"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            } else {
                let (status, body) = crate::support::status_and_json(response).await;
                assert_eq!(status, 502, "{case}: {body}");
                body["detail"].as_str().unwrap().to_owned()
            };
            assert!(detail.contains("could not be stored"), "{case}: {detail}");

            // What the loop got to is kept, and marked as after any failure of a step: the
            // answer holding the call incomplete (the question then stays in the context), or
            // the question failed when nothing answering it is stored.
            let history = messages(&server, &id).await;
            assert_eq!(roles(&history), kept, "{case}");
            let marked = &history[marked_at]["metadata"];
            assert_eq!(marked["status"], status, "{case}: {marked}");
            assert!(
                marked["error"]
                    .as_str()
                    .is_some_and(|error| error.contains("refused by the test")),
                "{case}: {marked}"
            );
            if marked_at > 0 {
                assert_eq!(marked["tool_calls"][0]["tool"], "fx.echo", "{case}");
                assert_eq!(history[0]["metadata"].get("status"), None, "{case}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_over_the_limit_are_skipped_and_the_notice_replays_as_the_model_read_it() {
    let notice = "Only the first 16 tool calls of an answer are run; 2 more were skipped.";
    // Native and streamed, then in prompt mode and not streamed.
    for (wire, extra, streamed) in [
        (Wire::OpenAi, "", true),
        (Wire::Ollama, ", tool_mode: prompt", false),
    ] {
        let fake = FakeBackend::start(wire).await;
        // Eighteen calls in one answer, natively or written as the prompt protocol's JSON.
        let calls = if wire == Wire::OpenAi {
            Behaviour::ToolCalls {
                text: None,
                calls: (1..=18)
                    .map(|n| FakeToolCall {
                        id: format!("call_{n}"),
                        name: "fx__echo".to_owned(),
                        arguments: json!({"message": format!("m{n}")}),
                    })
                    .collect(),
            }
        } else {
            let written: Vec<String> = (1..=18)
                .map(|n| format!(r#"{{"tool": "fx.echo", "arguments": {{"message": "m{n}"}}}}"#))
                .collect();
            reply(&written.join(" "))
        };
        fake.queue(vec![calls, reply("Sixteen echoes.")]);
        let home = home_with(&fake, wire, extra);
        let server = home.start(&[]);
        with_fixture(&server, 30).await;
        let id = session(&server, "llm").await;

        let ask = json!({"content": "echo eighteen times", "stream": streamed});
        let answer = if streamed {
            let response = server
                .post(&format!("/sessions/{id}/message"))
                .json(&ask)
                .send()
                .await
                .unwrap();
            let events = testkit::sse::Events::new(response).all().await;
            let (name, done) = events.last().cloned().unwrap();
            assert_eq!(name, "done", "{events:?}");
            done
        } else {
            send(&server, &id, ask).await
        };
        assert_eq!(answer["content"], "Sixteen echoes.", "{wire:?}");
        send(&server, &id, json!({"content": "and now?"})).await;

        let chats = fake.chat_requests();
        assert_eq!(chats.len(), 3, "{wire:?}");
        let in_loop = chats[1].body["messages"].as_array().unwrap();
        let results = in_loop
            .iter()
            .filter(|m| {
                m["role"] == "tool"
                    || m["content"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("Result of tool fx.echo:"))
            })
            .count();
        assert_eq!(results, 16, "{wire:?}: {in_loop:?}");
        assert_eq!(
            in_loop.last().unwrap(),
            &json!({"role": "user", "content": notice}),
            "{wire:?}: the model is told after the results"
        );

        let replayed = chats[2].body["messages"].as_array().unwrap();
        assert_eq!(replayed.len(), in_loop.len() + 2, "{wire:?}: {replayed:?}");
        assert!(
            replayed[..in_loop.len()] == in_loop[..],
            "{wire:?}: the replay differs from what the model read:\n{:?}\n{:?}",
            &replayed[..in_loop.len()],
            in_loop
        );
        assert_eq!(
            replayed[in_loop.len()..],
            [
                json!({"role": "assistant", "content": "Sixteen echoes."}),
                json!({"role": "user", "content": "and now?"})
            ]
        );

        // The notice is stored with the last result of the answer.
        let history = messages(&server, &id).await;
        let stored: Vec<&Value> = history.iter().filter(|m| m["role"] == "tool").collect();
        assert_eq!(stored.len(), 16, "{wire:?}");
        assert_eq!(stored[15]["metadata"]["notice"], notice, "{wire:?}");
        assert_eq!(stored[15]["content"], "Echo: m16");
        assert!(
            stored[..15]
                .iter()
                .all(|m| m["metadata"].get("notice").is_none())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_mode_loop_replays_exactly_as_the_model_read_it() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    // A result over the 32 KiB the model is sent, and an error result.
    fake.queue(vec![
        reply(
            r#"Two calls. {"tool": "fx.big", "arguments": {"bytes": 40000}} {"tool": "fx.fail", "arguments": {}}"#,
        ),
        reply("Both done."),
    ]);
    let home = home_with(&fake, Wire::Ollama, ", tool_mode: prompt");
    let server = home.start(&[]);
    with_fixture(&server, 30).await;
    let id = session(&server, "llm").await;

    let first = send(&server, &id, json!({"content": "call two tools"})).await;
    assert_eq!(first["content"], "Both done.");
    send(&server, &id, json!({"content": "and now?"})).await;

    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 3);
    let in_loop = chats[1].body["messages"].as_array().unwrap();
    assert_eq!(
        roles(in_loop),
        ["system", "user", "assistant", "user", "user"]
    );
    let big = in_loop[3]["content"].as_str().unwrap();
    assert!(
        big.starts_with("Result of tool fx.big:\nxxx") && big.ends_with("x\n[result truncated]"),
        "{}",
        &big[..60]
    );
    assert_eq!(
        in_loop[4]["content"],
        "Tool fx.fail failed:\nthis tool always fails"
    );

    let replayed = chats[2].body["messages"].as_array().unwrap();
    assert_eq!(replayed.len(), in_loop.len() + 2);
    assert!(
        replayed[..in_loop.len()] == in_loop[..],
        "the replay differs from what the model read:\n{:?}\n{:?}",
        &replayed[..in_loop.len()],
        in_loop
    );
    assert_eq!(
        replayed[in_loop.len()..],
        [
            json!({"role": "assistant", "content": "Both done."}),
            json!({"role": "user", "content": "and now?"})
        ]
    );
    // The session keeps the whole result.
    let history = messages(&server, &id).await;
    assert_eq!(history[2]["content"].as_str().unwrap().len(), 40000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_that_times_out_is_an_error_result_and_the_loop_goes_on() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    fake.queue(vec![
        reply(r#"{"tool": "fx.sleep", "arguments": {"ms": 10000}}"#),
        reply("It took too long."),
    ]);
    let home = home_with(&fake, Wire::Ollama, ", tool_mode: prompt");
    let server = home.start(&[]);
    with_fixture(&server, 1).await;
    let id = session(&server, "llm").await;

    let answer = send(&server, &id, json!({"content": "sleep"})).await;
    assert_eq!(answer["content"], "It took too long.");
    assert_eq!(answer["metadata"]["tool_iterations"], 1);

    let history = messages(&server, &id).await;
    assert_eq!(roles(&history), ["user", "assistant", "tool", "assistant"]);
    let result = &history[2];
    assert_eq!(result["metadata"]["is_error"], true, "{result}");
    assert_eq!(
        result["content"],
        "MCP server 'fx' did not answer within 1 s"
    );
    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 2);
    let fed_back = chats[1].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        fed_back,
        json!({"role": "user", "content": "Tool fx.sleep failed:\nMCP server 'fx' did not answer within 1 s"})
    );
    // The server was told to stop (the notification reaches its stderr a moment later).
    let told = eventually(Duration::from_secs(5), || async {
        let logs = server.get_json("/mcp/servers/fx/logs").await;
        logs["logs"]
            .as_str()
            .unwrap_or_default()
            .contains("cancelled")
    })
    .await;
    assert!(told, "{}", server.get_json("/mcp/servers/fx/logs").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_dies_mid_call_is_an_error_result_and_the_loop_goes_on() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    fake.queue(vec![
        Behaviour::tool_call("fx__crash", json!({})),
        reply("The tool died."),
    ]);
    let home = home_with(&fake, Wire::OpenAi, "");
    let server = home.start(&[]);
    with_fixture(&server, 30).await;
    let id = session(&server, "llm").await;

    let answer = send(&server, &id, json!({"content": "crash it"})).await;
    assert_eq!(answer["content"], "The tool died.");
    assert_eq!(answer["metadata"]["tool_iterations"], 1);

    let history = messages(&server, &id).await;
    assert_eq!(roles(&history), ["user", "assistant", "tool", "assistant"]);
    let result = &history[2];
    assert_eq!(result["metadata"]["is_error"], true, "{result}");
    let content = result["content"].as_str().unwrap();
    assert!(
        content.starts_with("MCP server 'fx' exited (exit code 3)"),
        "{content}"
    );
    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 2);
    let (name, _, fed_back, _) = call_and_result(Wire::OpenAi, &chats[1], "call_1");
    assert_eq!(name, "fx__crash");
    assert_eq!(fed_back, content);
}
