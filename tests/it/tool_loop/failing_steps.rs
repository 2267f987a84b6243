//! Steps of the loop that fail: a tool that times out and a server that dies mid-call are error
//! results the loop goes on with (and the server is told to stop), while a step the store cannot
//! keep ends the answer, streamed or not, as lit-mux's failure (not the backend's), with what was
//! reached kept and marked incomplete or failed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::TestHome;
use serde_json::json;
use testkit::fake_backends::{Behaviour, FakeBackend, Wire, call_and_result};
use testkit::processes::eventually;

use super::{home_with, messages, reply, roles, send, session, with_fixture};

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
            // A write the database refuses is lit-mux's own failure (500), never the backend's
            // (502): the response keeps its details to the log, the stream's event tells them.
            if streamed {
                let events = testkit::sse::Events::new(response).all().await;
                let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
                if let Some(tool_event) = tool_event {
                    assert!(names.contains(&tool_event), "{case}: {names:?}");
                }
                assert_eq!(names.last(), Some(&"error"), "{case}");
                let error = &events.last().unwrap().1;
                assert_eq!(error["status"], 500, "{case}: {error}");
                let detail = error["detail"].as_str().unwrap();
                assert!(detail.contains("could not be stored"), "{case}: {detail}");
            } else {
                let (status, body) = crate::support::status_and_json(response).await;
                assert_eq!(status, 500, "{case}: {body}");
            }

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
