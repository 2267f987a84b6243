//! What a client written for the Python (FastAPI) predecessor reads, through the real binary:
//! an answer's model in its metadata (single, broadcast, tool loop, a `/v1` exchange kept in a
//! session), backends listed in the config's order with `echo` last, user messages from
//! `"client"` with the backend they were sent to in their metadata, FastAPI's list of validation
//! errors on a 422, and timestamps that Python 3.9's `datetime.fromisoformat` reads (rows stored
//! with `Z` included).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::mcp::fixture_server;
use crate::support::{Server, TestHome};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

fn reply(text: &str) -> Behaviour {
    Behaviour::Reply {
        text: Some(text.to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::ZERO,
    }
}

async fn create_session(server: &Server, backends: &[&str]) -> String {
    let (status, body) = server
        .post_json("/sessions", &json!({ "backends": backends }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn messages(server: &Server, session: &str) -> Vec<Value> {
    let body = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    body.as_array().unwrap_or_else(|| panic!("{body}")).clone()
}

/// The database of the lit-mux running in `home`.
async fn database(home: &TestHome) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(home.path().join(".local/share/lit-mux/lit-mux.db"));
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_the_model_that_wrote_it_in_its_metadata() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    home.write_config(&format!("backends:\n{}", fake.config_entry("llm", "")));
    let server = home.start(&[]);
    let (status, body) = server
        .post_json("/mcp/servers", &fixture_server("fx", "healthy", &[]))
        .await;
    assert_eq!(status, 200, "{body}");
    let session = create_session(&server, &["llm", "echo"]).await;

    // One answer, then a broadcast, then a tool loop, then a /v1 exchange kept in the session.
    let (status, answer) = server
        .post_json(
            &format!("/sessions/{session}/message"),
            &json!({"content": "hello", "use_tools": false}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["metadata"]["model"], "fake-model", "{answer}");
    assert!(
        answer["metadata"]["duration_ms"].is_u64(),
        "today's metadata stays: {answer}"
    );

    let (status, broadcast) = server
        .post_json(
            &format!("/sessions/{session}/broadcast"),
            &json!({"content": "hello all", "use_tools": false}),
        )
        .await;
    assert_eq!(status, 200, "{broadcast}");
    for response in broadcast["responses"].as_array().unwrap() {
        let message = &response["message"];
        assert_eq!(
            message["metadata"]["model"], message["model"],
            "{broadcast}"
        );
        assert!(message["model"].is_string(), "{broadcast}");
    }

    fake.queue(vec![
        Behaviour::tool_call("fx__echo", json!({"message": "hi"})),
        reply("The tool said hi."),
    ]);
    let (status, answer) = server
        .post_json(
            &format!("/sessions/{session}/message"),
            &json!({"content": "use the tool", "backend": "llm"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], "The tool said hi.");
    assert_eq!(answer["metadata"]["tool_iterations"], 1, "{answer}");
    assert_eq!(answer["metadata"]["model"], "fake-model", "{answer}");

    let (status, completion) = server
        .post_json(
            "/v1/chat/completions",
            &json!({
                "model": "llm/fake-model",
                "session_id": session,
                "messages": [{"role": "user", "content": "via openai"}],
            }),
        )
        .await;
    assert_eq!(status, 200, "{completion}");

    let stored = messages(&server, &session).await;
    let answers: Vec<&Value> = stored.iter().filter(|m| m["role"] == "assistant").collect();
    // hello, 2 broadcast answers, the tool call and the final answer, the /v1 answer.
    assert_eq!(answers.len(), 6, "{stored:?}");
    for answer in answers {
        assert!(answer["model"].is_string(), "{answer}");
        assert_eq!(answer["metadata"]["model"], answer["model"], "{answer}");
    }
    assert!(
        stored
            .iter()
            .any(|m| m["metadata"]["via"] == "/v1/chat/completions"),
        "{stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_are_listed_in_the_config_order_with_echo_last() {
    let home = TestHome::new();
    home.write_config(
        "backends:\n  zeta: {type: echo}\n  mid: {type: echo, enabled: false}\n  alpha: {type: echo}\n",
    );
    let server = home.start(&[]);

    let listed = server.get_json("/backends").await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["zeta", "mid", "alpha", "echo"], "{listed}");

    // /v1/models lists the enabled ones in the same order.
    let models = server.get_json("/v1/models").await;
    let mut owners: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["owned_by"].as_str().unwrap())
        .collect();
    owners.dedup();
    assert_eq!(owners, ["zeta", "alpha", "echo"], "{models}");

    // /models too, in its object's keys.
    let text = server
        .get("/models")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = |name: &str| text.find(&format!("\"{name}\":[")).unwrap();
    assert!(
        at("zeta") < at("alpha") && at("alpha") < at("echo"),
        "{text}"
    );

    // `lit-mux backends` prints what /backends says, in its order.
    let out = home.run(&["backends", "--url", &server.url]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let place = |name: &str| {
        out.stdout
            .lines()
            .position(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {out:?}"))
    };
    assert!(
        place("zeta") < place("mid") && place("mid") < place("alpha"),
        "{out:?}"
    );
    assert!(place("alpha") < place("echo"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn user_messages_come_from_client_and_name_the_backend_they_were_sent_to() {
    let home = TestHome::new();
    home.write_config("backends:\n  other: {type: echo}\n");
    let server = home.start(&[]);
    let session = create_session(&server, &["echo", "other"]).await;

    let url = format!("/sessions/{session}/message");
    let (status, _) = server.post_json(&url, &json!({"content": "first"})).await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post_json(&url, &json!({"content": "second", "backend": "other"}))
        .await;
    assert_eq!(status, 200);
    let (status, broadcast) = server
        .post_json(
            &format!("/sessions/{session}/broadcast"),
            &json!({"content": "third"}),
        )
        .await;
    assert_eq!(status, 200, "{broadcast}");
    assert_eq!(
        broadcast["user_message"]["backend"], "client",
        "{broadcast}"
    );
    // After the broadcast each backend still sees its own answers.
    let (status, answer) = server
        .post_json(&url, &json!({"content": "fourth", "backend": "other"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["backend"], "other");

    let stored = messages(&server, &session).await;
    let users: Vec<&Value> = stored.iter().filter(|m| m["role"] == "user").collect();
    assert_eq!(users.len(), 4, "{stored:?}");
    for user in &users {
        assert_eq!(user["backend"], "client", "{user}");
    }
    assert_eq!(users[0]["metadata"]["addressed_backend"], "echo");
    assert_eq!(users[1]["metadata"]["addressed_backend"], "other");
    assert_eq!(users[2]["metadata"]["broadcast"], json!(["echo", "other"]));
    assert!(users[2]["metadata"].get("addressed_backend").is_none());
    assert_eq!(users[3]["metadata"]["addressed_backend"], "other");
    // Answers still name their backend.
    let answered_by: Vec<&str> = stored
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["backend"].as_str().unwrap())
        .collect();
    assert_eq!(answered_by, ["echo", "other", "echo", "other", "other"]);
}

/// `detail` of a 422 answer: its one validation error.
async fn validation_error(response: reqwest::Response) -> Value {
    let (status, body) = crate::support::status_and_json(response).await;
    assert_eq!(status, 422, "{body}");
    let errors = body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("detail is not a list: {body}"));
    assert_eq!(errors.len(), 1, "{body}");
    let error = errors[0].clone();
    assert!(error["msg"].is_string(), "{body}");
    assert!(error.get("input").is_some(), "{body}");
    error
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_errors_are_fastapi_lists_and_other_errors_stay_strings() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let session = create_session(&server, &["echo"]).await;
    let url = format!("/sessions/{session}/message");

    let missing = validation_error(server.post(&url).json(&json!({})).send().await.unwrap()).await;
    assert_eq!(missing["type"], "missing", "{missing}");
    assert_eq!(missing["loc"], json!(["body", "content"]), "{missing}");
    assert_eq!(missing["input"], json!({}), "{missing}");
    assert!(
        missing["msg"]
            .as_str()
            .unwrap()
            .contains("missing field `content`"),
        "{missing}"
    );

    let wrong_type = validation_error(
        server
            .post(&url)
            .json(&json!({"content": 5}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(wrong_type["type"], "string_type", "{wrong_type}");
    assert_eq!(
        wrong_type["loc"],
        json!(["body", "content"]),
        "{wrong_type}"
    );
    assert_eq!(wrong_type["input"], 5, "{wrong_type}");

    let nested = validation_error(
        server
            .post("/sessions")
            .json(&json!({"backends": ["echo", 7]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(nested["type"], "string_type", "{nested}");
    assert_eq!(nested["loc"], json!(["body", "backends", 1]), "{nested}");

    let malformed = validation_error(
        server
            .post(&url)
            .header("content-type", "application/json")
            .body("{\"content\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(malformed["type"], "json_invalid", "{malformed}");
    assert_eq!(malformed["loc"], json!(["body", 12]), "{malformed}");
    assert!(
        malformed["msg"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON"),
        "{malformed}"
    );

    let bad_query =
        validation_error(server.get("/sessions?limit=many").send().await.unwrap()).await;
    assert_eq!(bad_query["type"], "int_parsing", "{bad_query}");
    assert_eq!(bad_query["loc"], json!(["query", "limit"]), "{bad_query}");
    assert_eq!(bad_query["input"], "many", "{bad_query}");
    let too_big = validation_error(
        server
            .get(&format!("/sessions/{session}/messages?offset=0&limit=5000"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(too_big["type"], "less_than_equal", "{too_big}");
    assert_eq!(too_big["loc"], json!(["query", "limit"]), "{too_big}");

    // A value refused by lit-mux itself: the same list, at the body.
    let empty = validation_error(
        server
            .post(&url)
            .json(&json!({"content": "  "}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(empty["loc"], json!(["body"]), "{empty}");
    assert_eq!(empty["type"], "value_error", "{empty}");

    // Every other status keeps a string.
    let (status, body) = server
        .post_json("/sessions/nope/message", &json!({"content": "hi"}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["detail"].is_string(), "{body}");
    let (status, body) = server
        .post_json(&url, &json!({"content": "hi", "backend": "nowhere"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].is_string(), "{body}");

    // /v1 keeps OpenAI's shape.
    let response = server
        .post("/v1/chat/completions")
        .json(&json!({"model": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::support::status_and_json(response).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body.get("detail").is_none(), "{body}");
}

/// Whether `text` is `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`: what `datetime.fromisoformat` reads
/// in Python 3.9 (it refuses `Z` before 3.11).
fn python39_isoformat(text: &str) -> bool {
    let Some(local) = text.strip_suffix("+00:00") else {
        return false;
    };
    let (seconds, fraction) = local.split_at(local.len().min(19));
    let shape_ok = seconds.len() == 19
        && seconds.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            _ => c.is_ascii_digit(),
        });
    let fraction_ok = fraction.is_empty()
        || (fraction.len() == 7
            && fraction.starts_with('.')
            && fraction[1..].chars().all(|c| c.is_ascii_digit()));
    shape_ok && fraction_ok
}

fn assert_timestamps(session: &Value, messages: &[Value]) {
    for key in ["created_at", "updated_at"] {
        let text = session[key].as_str().unwrap();
        assert!(python39_isoformat(text), "{key} {text:?}");
    }
    for message in messages {
        let text = message["timestamp"].as_str().unwrap();
        assert!(python39_isoformat(text), "timestamp {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_timestamp_reads_in_python_39_also_of_rows_stored_with_z() {
    assert!(python39_isoformat("2026-12-03T11:09:49.123456+00:00"));
    assert!(python39_isoformat("2026-12-03T11:09:49+00:00"));
    assert!(!python39_isoformat("2026-12-03T11:09:49.123456Z"));
    assert!(!python39_isoformat("2026-12-03T11:09:49.123+00:00"));

    let home = TestHome::new();
    let server = home.start(&[]);
    let old = create_session(&server, &["echo"]).await;
    let url = format!("/sessions/{old}/message");
    let (status, answer) = server.post_json(&url, &json!({"content": "one"})).await;
    assert_eq!(status, 200, "{answer}");
    assert!(python39_isoformat(answer["timestamp"].as_str().unwrap()));
    let session = server.get_json(&format!("/sessions/{old}")).await;
    assert_timestamps(&session, &messages(&server, &old).await);
    let health = server.get_json("/health").await;
    assert!(
        python39_isoformat(health["timestamp"].as_str().unwrap()),
        "{health}"
    );

    // Rows as lit-mux stored them before: ending in `Z`.
    let mut db = database(&home).await;
    for statement in [
        "UPDATE messages SET timestamp = substr(timestamp, 1, 26) || 'Z'",
        "UPDATE sessions SET created_at = substr(created_at, 1, 26) || 'Z', \
         updated_at = substr(updated_at, 1, 26) || 'Z'",
    ] {
        sqlx::query(statement).execute(&mut db).await.unwrap();
    }
    let (stored,): (String,) = sqlx::query_as("SELECT created_at FROM sessions")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(stored.ends_with('Z'), "{stored}");
    drop(db);

    let session = server.get_json(&format!("/sessions/{old}")).await;
    assert_timestamps(&session, &messages(&server, &old).await);

    // Old and new rows keep their order: newest session first, messages in order.
    let new = create_session(&server, &["echo"]).await;
    let (status, _) = server.post_json(&url, &json!({"content": "two"})).await;
    assert_eq!(status, 200);
    let listed = server.get_json("/sessions").await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [new.as_str(), old.as_str()], "{listed}");
    for session in listed.as_array().unwrap() {
        assert_timestamps(session, &[]);
    }
    let stored = messages(&server, &old).await;
    assert_timestamps(&server.get_json(&format!("/sessions/{old}")).await, &stored);
    let contents: Vec<&str> = stored
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["one", "one", "two", "two"], "{stored:?}");
    let times: Vec<&str> = stored
        .iter()
        .map(|m| m["timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
}
