//! The session endpoints' contract with their callers: bad input (no backends, unknown ones, a body
//! that is not an object, malformed JSON, unknown ids, a backend outside the session) is refused
//! with a clear error and stores nothing; sessions are listed newest first in pages; a conversation
//! is listed whole unless a limit is asked; and the CLI sends, lists and shows sessions, refusing
//! usage errors before anything is sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::TestHome;
use serde_json::json;
use testkit::fake_backends::{FakeBackend, Wire};

use super::{backend_entry, create_session, send, start_with_backends};

#[tokio::test(flavor = "multi_thread")]
async fn session_endpoints_answer_bad_input_with_clear_errors() {
    let fake = FakeBackend::start(Wire::Ollama).await;
    let home = TestHome::new();
    let server = start_with_backends(
        &home,
        &[backend_entry("local", &fake, Wire::Ollama, "")],
        "",
    );

    let (status, body) = server
        .post_json("/sessions", &json!({"backends": []}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post_json(
            "/sessions",
            &json!({"backends": ["echo", "ghost", "phantom"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("ghost") && detail.contains("phantom"),
        "{detail}"
    );
    let (status, body) = server.post_json("/sessions", &json!({"name": "x"})).await;
    assert_eq!(status, 422, "{body}");
    // Only an object is a body: not an array of the fields in order, nor any other value.
    for not_an_object in [
        json!([["echo"], "named", {}]),
        json!([]),
        json!("echo"),
        json!(1),
    ] {
        let (status, body) = server.post_json("/sessions", &not_an_object).await;
        assert_eq!(status, 422, "{not_an_object}: {body}");
        assert_eq!(
            body["detail"][0]["msg"], "Invalid request body: expected a JSON object",
            "{not_an_object}"
        );
    }
    assert_eq!(
        server.get_json("/sessions").await,
        json!([]),
        "a session was made"
    );
    let response = server
        .post("/sessions")
        .header("content-type", "application/json")
        .body("{\"backends\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);

    let unknown = "00000000-0000-0000-0000-000000000000";
    for path in [
        format!("/sessions/{unknown}"),
        format!("/sessions/{unknown}/messages"),
    ] {
        let response = server.get(&path).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 404, "{path}");
    }
    let (status, body) = send(&server, unknown, json!({"content": "hi"})).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["detail"].as_str().unwrap().contains(unknown));
    let (status, _) = server.delete_json(&format!("/sessions/{unknown}")).await;
    assert_eq!(status, 404);

    let session = create_session(&server, json!({"backends": ["echo"], "name": "s"})).await;
    let (status, body) = send(&server, &session, json!({"content": "  "})).await;
    assert_eq!(status, 422, "{body}");
    // A configured backend the session does not have, and one configured nowhere.
    let (status, body) = send(
        &server,
        &session,
        json!({"content": "x", "backend": "local"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["detail"],
        "backend(s) \"local\" not in this session (its backends: echo)"
    );
    assert!(fake.chat_requests().is_empty(), "{:?}", fake.requests());
    let (status, body) = send(
        &server,
        &session,
        json!({"content": "x", "backend": "ollama"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("\"ollama\""),
        "{body}"
    );
    let (status, body) = send(&server, &session, json!({"text": "wrong field"})).await;
    assert_eq!(status, 422, "{body}");
    // Nothing of the rejected requests was stored.
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    assert_eq!(messages, json!([]));

    let response = server.get("/sessions?limit=abc").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 422);

    let (status, body) = server.delete_json(&format!("/sessions/{session}")).await;
    assert_eq!(status, 200, "{body}");
    let response = server
        .get(&format!("/sessions/{session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_listed_newest_first_in_pages() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let mut ids = Vec::new();
    for index in 0..5 {
        ids.push(
            create_session(
                &server,
                json!({"backends": ["echo"], "name": format!("s{index}")}),
            )
            .await,
        );
    }
    let listed = server.get_json("/sessions").await;
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);

    let page = server.get_json("/sessions?limit=2&offset=1").await;
    let page: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, newest_first[1..3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_longer_than_a_page_is_listed_whole_unless_a_limit_is_asked() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let (status, session) = server
        .post_json("/sessions", &json!({"backends": ["echo"]}))
        .await;
    assert_eq!(status, 200, "{session}");
    let id = session["id"].as_str().unwrap();
    let exchanges = 501; // 1002 messages: more than the largest page.
    for index in 0..exchanges {
        let (status, body) = server
            .post_json(
                &format!("/sessions/{id}/message"),
                &json!({"content": format!("message {index}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let all = server.get_json(&format!("/sessions/{id}/messages")).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2 * exchanges);
    assert_eq!(all[0]["content"], "message 0");
    assert_eq!(
        all[all.len() - 1]["content"],
        format!("message {}", exchanges - 1)
    );
    assert_eq!(all[all.len() - 1]["role"], "assistant");

    let page = server
        .get_json(&format!("/sessions/{id}/messages?limit=2&offset=1000"))
        .await;
    assert_eq!(page.as_array().unwrap().as_slice(), &all[1000..]);
    let response = server
        .get(&format!("/sessions/{id}/messages?limit=1001"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}

#[test]
fn the_cli_sends_lists_and_shows_sessions() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let url = server.url("");
    let sent = home.run(&["send", "hello from the cli", "--url", &url]);
    assert_eq!(sent.code(), Some(0), "{sent:?}");
    assert_eq!(sent.stdout.trim(), "hello from the cli");
    let session = sent
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("session "))
        .expect("the new session's id on stderr")
        .trim()
        .to_owned();

    let again = home.run(&["send", "second", "--session", &session, "--url", &url]);
    assert_eq!(again.stdout.trim(), "second", "{again:?}");

    let listed = home.run(&["sessions", "--url", &url]);
    assert_eq!(listed.code(), Some(0), "{listed:?}");
    assert!(listed.stdout.contains(&session), "{}", listed.stdout);
    assert!(listed.stdout.lines().next().unwrap().starts_with("ID"));

    let shown = home.run(&["sessions", "show", &session, "--url", &url]);
    assert_eq!(shown.code(), Some(0), "{shown:?}");
    let order: Vec<usize> = ["hello from the cli", "second"]
        .iter()
        .map(|text| shown.stdout.find(text).expect("message shown"))
        .collect();
    assert!(order[0] < order[1], "{}", shown.stdout);

    let missing = home.run(&["sessions", "show", "nope", "--url", &url]);
    assert_ne!(missing.code(), Some(0));
    assert!(missing.stderr.contains("not found"), "{missing:?}");

    let backends = home.run(&["backends", "--url", &url]);
    assert!(backends.stdout.contains("echo") && backends.stdout.contains("healthy"));

    // Usage errors (exit 2), found before anything is sent: an empty message makes no session.
    for bad in [
        vec!["send", "", "--url", &url],
        vec!["send", "  ", "--url", &url],
        vec!["send", "hi", "--url", "not a url"],
        vec!["send", "hi", "--request-timeout", "0", "--url", &url],
    ] {
        let out = home.run(&bad);
        assert_eq!(out.code(), Some(2), "{bad:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{bad:?}: {out:?}");
    }
    let listed_after = home.run(&["sessions", "--url", &url]);
    assert_eq!(listed_after.stdout, listed.stdout, "a session was made");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_query_parameter_is_a_422_naming_it() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let session = create_session(&server, json!({"backends": ["echo"]})).await;

    for path in [
        "/sessions?limit=1&limit=2".to_owned(),
        format!("/sessions/{session}/messages?offset=0&offset=1"),
    ] {
        let response = server.get(&path).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 422, "{path}: {text}");
        let name = if path.contains("limit") {
            "limit"
        } else {
            "offset"
        };
        assert!(
            text.contains(name) && text.contains("more than once"),
            "{path}: {text}"
        );
    }
}
