//! Every failure is an error in OpenAI's shape with the right status: unknown or disabled models,
//! malformed bodies, no messages, an unknown session, a backend failure, a rate limit with
//! Retry-After, and a stream cut off midway carrying an error chunk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::{TestHome, raw_request, status_and_json};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

use super::{completion, data_lines};

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

const KEY: &str = "v1-errors-key";

/// The `error` of a body in OpenAI's shape: all four keys present, the message a string, the
/// type one of OpenAI's, and no `detail`.
fn openai_error(status: u16, body: &Value) -> Value {
    let error = &body["error"];
    for key in ["message", "type", "param", "code"] {
        assert!(error.get(key).is_some(), "{status}: no {key} in {body}");
    }
    assert!(error["message"].is_string(), "{status}: {body}");
    assert!(body.get("detail").is_none(), "{status}: {body}");
    let expected_type = match status {
        429 => "rate_limit_error",
        403 => "permission_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    assert_eq!(error["type"], expected_type, "{status}: {body}");
    error.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_from_every_layer_are_in_openai_shape_under_v1_only() {
    let home = TestHome::new();
    home.write_config(&format!(
        "server:\n  api_key: {KEY}\n  max_body_bytes: 4096\n  body_read_timeout_secs: 1\n"
    ));
    let server = home.start(&[]);
    let user = json!([{"role": "user", "content": "hi"}]);

    // 401 from the access checks, without a key and with a wrong one.
    for key in [None, Some("wrong")] {
        let mut request = server.get("/v1/models");
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert!(response.headers().contains_key("www-authenticate"));
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(openai_error(status, &body)["code"], "invalid_api_key");
    }

    // 404 for a path no route has, as OpenAI words it.
    let (status, body) = status_and_json(
        server
            .get("/v1/nope")
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        openai_error(status, &body)["message"],
        "Invalid URL (GET /v1/nope)"
    );

    // 405 keeps its Allow.
    let response = server
        .get("/v1/chat/completions")
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 405, "{body}");
    openai_error(status, &body);

    // 413, declared and undeclared (chunked) length.
    let big = format!("{{\"model\": \"echo\", \"pad\": \"{}\"}}", "x".repeat(8192));
    let (status, body) = status_and_json(
        server
            .post("/v1/chat/completions")
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        openai_error(status, &body)["message"]
            .as_str()
            .unwrap()
            .contains("4096"),
        "{body}"
    );
    let chunked =
        reqwest::Body::wrap_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(big)]));
    let (status, body) = status_and_json(
        server
            .post("/v1/chat/completions")
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(chunked)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    openai_error(status, &body);

    // 415 for a body that is not declared JSON.
    let (status, body) = status_and_json(
        server
            .post("/v1/chat/completions")
            .bearer_auth(KEY)
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    openai_error(status, &body);

    // 422 from the extractor, naming the field at fault when there is one.
    for (raw, param) in [
        ("{\"model\": ".to_owned(), Value::Null),
        ("[1, 2]".to_owned(), Value::Null),
        (
            json!({"model": 3, "messages": user}).to_string(),
            json!("model"),
        ),
        (json!({"model": "echo"}).to_string(), json!("messages")),
        (
            json!({"model": "echo", "messages": user, "temperature": "hot"}).to_string(),
            json!("temperature"),
        ),
    ] {
        let (status, body) = status_and_json(
            server
                .post("/v1/chat/completions")
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body(raw.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 422, "{raw}: {body}");
        assert_eq!(openai_error(status, &body)["param"], param, "{raw}: {body}");
    }

    // 400 for a value no model takes, naming it.
    for (field, value) in [("temperature", json!(5)), ("n", json!(3))] {
        let mut request = json!({"model": "echo", "messages": user});
        request[field] = value;
        let (status, body) = status_and_json(
            server
                .post("/v1/chat/completions")
                .bearer_auth(KEY)
                .json(&request)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(openai_error(status, &body)["param"], field, "{body}");
    }
    let (status, body) = status_and_json(
        server
            .post("/v1/chat/completions")
            .bearer_auth(KEY)
            .json(&json!({"model": "echo", "messages": []}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(openai_error(status, &body)["param"], "messages");

    // 400 from the Host rule, before anything else.
    let (status, body) = raw_request(
        &server,
        format!("GET /v1/models HTTP/1.1\r\nHost: a b\r\nX-API-Key: {KEY}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    openai_error(status, &body);

    // 408 for a body that never arrives, answered outside the router.
    let (status, body) = raw_request(
        &server,
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 408, "{body}");
    openai_error(status, &body);

    // The rest of the API keeps {"detail"} for the same refusals.
    let (status, body) =
        status_and_json(server.get("/sessions/no-such").send().await.unwrap()).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"].is_string() && body.get("error").is_none(),
        "{body}"
    );
    let (status, body) = status_and_json(
        server
            .get("/sessions/no-such")
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["detail"].is_string(), "{body}");
    let (status, body) =
        status_and_json(server.get("/nope").bearer_auth(KEY).send().await.unwrap()).await;
    assert_eq!((status, body), (404, json!({"detail": "Not Found"})));
    let (status, body) = status_and_json(
        server
            .post("/sessions")
            .bearer_auth(KEY)
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    assert!(body["detail"].is_string(), "{body}");
}

/// A route under `/v1` that panics or answers 503, under the real layer stack (in process: the
/// binary has no such route).
#[tokio::test]
async fn a_panic_and_a_503_under_v1_are_in_openai_shape() {
    use axum::body::Body;
    use tower::ServiceExt;

    #[allow(clippy::panic)]
    async fn panicking() -> &'static str {
        panic!("a bug in a handler")
    }
    let routes = axum::Router::new()
        .route("/v1/panics", axum::routing::get(panicking))
        .route(
            "/v1/busy",
            axum::routing::get(|| async {
                lit_mux::http::error::ApiError::ServiceUnavailable("storage is busy".to_owned())
            }),
        )
        .route("/panics", axum::routing::get(panicking));
    let app = lit_mux::http::with_layers(routes, &lit_mux::config::ServerConfig::default());
    let call = |path: &'static str| {
        let app = app.clone();
        async move {
            let response = app
                .oneshot(
                    axum::http::Request::get(path)
                        .header("host", "localhost")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (status, body) = call("/v1/panics").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        openai_error(status, &body)["message"],
        "Internal server error"
    );
    let (status, body) = call("/v1/busy").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(openai_error(status, &body)["message"], "storage is busy");
    let (status, body) = call("/panics").await;
    assert_eq!(
        (status, body),
        (500, json!({"detail": "Internal server error"}))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_client_parses_every_error() {
    let limited = FakeBackend::start(Wire::OpenAi).await;
    limited.set_behaviour(Behaviour::RateLimited {
        retry_after_secs: 7,
    });
    let broken = FakeBackend::start(Wire::OpenAi).await;
    broken.set_behaviour(Behaviour::Fail {
        status: 500,
        message: "the GPU caught fire".to_owned(),
    });
    let home = TestHome::new();
    home.write_config(&format!(
        "server:\n  api_key: {KEY}\nbackends:\n  \
         limited: {{type: openai, base_url: '{}', api_key: k}}\n  \
         broken: {{type: openai, base_url: '{}', api_key: k}}\n",
        limited.url(),
        broken.url()
    ));
    let server = home.start(&[]);
    let output = tokio::process::Command::new(crate::support::client_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/openai_errors.py"
        ))
        .arg(server.url(""))
        .arg(KEY)
        .output()
        .await
        .unwrap();
    let seen = crate::support::client_json(&output);
    let case = |name: &str, class: &str, status: u16| {
        let error = &seen[name];
        assert_eq!(error["class"], class, "{name}: {seen}");
        assert_eq!(error["status"], status, "{name}: {seen}");
        let message = error["message"].as_str().unwrap();
        // The SDK quotes the body's message, so it found one.
        assert!(
            message.starts_with(&format!("Error code: {status} - ")) && message.len() > 20,
            "{name}: {message}"
        );
        error.clone()
    };
    let wrong_key = case("wrong_key", "AuthenticationError", 401);
    assert_eq!(wrong_key["code"], "invalid_api_key");
    assert_eq!(wrong_key["type"], "invalid_request_error");
    assert_eq!(
        case("unknown_model", "NotFoundError", 404)["code"],
        "model_not_found"
    );
    assert!(
        case("unknown_path", "NotFoundError", 404)["message"]
            .as_str()
            .unwrap()
            .ends_with("Invalid URL (GET /v1/nope)")
    );
    assert_eq!(
        case("wrong_method", "APIStatusError", 405)["type"],
        "invalid_request_error"
    );
    assert_eq!(
        case("wrong_type", "UnprocessableEntityError", 422)["param"],
        "model"
    );
    assert_eq!(
        case("bad_value", "BadRequestError", 400)["param"],
        "temperature"
    );
    let rate_limited = case("rate_limited", "RateLimitError", 429);
    assert_eq!(rate_limited["code"], "rate_limit_exceeded");
    assert_eq!(rate_limited["retry_after"], "7");
    let failed = case("backend_failed", "InternalServerError", 502);
    assert_eq!(failed["type"], "server_error");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("the GPU caught fire"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_use_tools_header_that_is_neither_yes_nor_no_is_refused_naming_the_values() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let request = json!({"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]});
    let ask = |value: &'static str| {
        server
            .post("/v1/chat/completions")
            .header("X-Lit-Mux-Use-Tools", value)
            .json(&request)
            .send()
    };

    let (status, body) = status_and_json(ask("ture").await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("X-Lit-Mux-Use-Tools")
            && message.contains("\"ture\"")
            && ["true", "false", "1", "0", "yes", "no"]
                .iter()
                .all(|value| message.contains(value)),
        "{message}"
    );
    // Any case, and no as well as yes.
    for value in ["FALSE", "No", "0", "Yes", "TRUE"] {
        let (status, body) = status_and_json(ask(value).await.unwrap()).await;
        assert_eq!(status, 200, "{value}: {body}");
    }
}
