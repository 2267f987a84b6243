//! What the model read, replayed exactly: calls over the per-answer limit are skipped and the
//! notice telling the model so is stored and replayed where it read it, natively or in prompt mode;
//! and a prompt-mode loop (a truncated result, an error result) is replayed exactly as the model
//! read it while the session keeps the whole result.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, FakeToolCall, Wire};

use super::{home_with, messages, reply, roles, send, session, with_fixture};

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
