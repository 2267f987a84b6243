//! Request bodies and failures under the real layer stack, in process, with routes that only a
//! test has: a JSON endpoint (the first real ones arrive with the MCP and sessions issues, all
//! through this extractor and these layers), a panicking handler, axum's own extractors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{Request, header};
use axum::routing::post;
use lit_mux::config::ServerConfig;
use lit_mux::http::extract::ApiJson;
use lit_mux::http::with_layers;
use serde_json::{Value, json};
use tower::ServiceExt;

#[derive(Debug, serde::Deserialize)]
struct NewThing {
    name: String,
    tags: Vec<String>,
}

fn app(max_body_bytes: usize) -> Router {
    let routes = Router::new()
        .route(
            "/things",
            post(|ApiJson(thing): ApiJson<NewThing>| async move {
                axum::Json(json!({"name": thing.name, "tags": thing.tags}))
            }),
        )
        .route("/panics", axum::routing::get(panicking_handler))
        .route("/text", post(|text: String| async move { text }))
        .route(
            "/items/{id}",
            axum::routing::get(|Path(id): Path<u32>| async move { id.to_string() }),
        );
    with_layers(
        routes,
        &ServerConfig {
            max_body_bytes,
            ..ServerConfig::default()
        },
    )
}

#[allow(clippy::panic)]
async fn panicking_handler() -> &'static str {
    panic!("a bug in a handler")
}

async fn post_things(app: Router, content_type: Option<&str>, body: Body) -> (u16, Value) {
    send(app, "POST", "/things", content_type, body).await
}

async fn send(
    app: Router,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: Body,
) -> (u16, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "localhost");
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let response = app.oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        content_type.as_ref().map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "every answer is JSON"
    );
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn detail(value: &Value) -> &str {
    // A 422's detail is FastAPI's list of validation errors: the first one's `msg`.
    value["detail"]
        .as_str()
        .or_else(|| value["detail"][0]["msg"].as_str())
        .unwrap_or_else(|| panic!("no detail in {value}"))
}

#[tokio::test]
async fn a_valid_body_reaches_the_handler() {
    let (status, body) = post_things(
        app(1024),
        Some("application/json"),
        Body::from(r#"{"name":"a","tags":["x"]}"#),
    )
    .await;
    assert_eq!((status, body), (200, json!({"name": "a", "tags": ["x"]})));
    // No Content-Type at all is read as JSON, as FastAPI does for scripts that post a string.
    let (status, _) = post_things(app(1024), None, Body::from(r#"{"name":"a","tags":[]}"#)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn malformed_json_is_422_with_the_parser_message() {
    let (status, body) = post_things(
        app(1024),
        Some("application/json"),
        Body::from(r#"{"name": "a", "#),
    )
    .await;
    assert_eq!(status, 422);
    assert!(detail(&body).starts_with("Invalid JSON"), "{body}");
    assert!(detail(&body).contains("line 1 column"), "{body}");
}

#[tokio::test]
async fn a_wrong_field_type_is_422_naming_the_field() {
    let (status, body) = post_things(
        app(1024),
        Some("application/json"),
        Body::from(r#"{"name": "a", "tags": [1]}"#),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        detail(&body).contains("tags[0]") && detail(&body).contains("expected a string"),
        "{body}"
    );
    let (status, body) = post_things(
        app(1024),
        Some("application/json"),
        Body::from(r#"{"tags": []}"#),
    )
    .await;
    assert_eq!(status, 422);
    assert!(detail(&body).contains("missing field `name`"), "{body}");
}

#[tokio::test]
async fn an_empty_body_is_422() {
    let (status, body) = post_things(app(1024), Some("application/json"), Body::empty()).await;
    assert_eq!(status, 422);
    assert!(detail(&body).contains("empty"), "{body}");
}

#[tokio::test]
async fn another_content_type_is_415() {
    let (status, body) = post_things(
        app(1024),
        Some("text/plain"),
        Body::from(r#"{"name":"a","tags":[]}"#),
    )
    .await;
    assert_eq!(status, 415);
    assert!(detail(&body).contains("application/json"), "{body}");
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_413() {
    // No Content-Length: the limit is enforced while reading.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok(format!(r#"{{"name":"{}"#, "a".repeat(600))),
        Ok(format!(r#"{}","tags":[]}}"#, "b".repeat(600))),
    ];
    let body = Body::from_stream(chunk_stream(chunks));
    let (status, body) = post_things(app(1024), Some("application/json"), body).await;
    assert_eq!(status, 413);
    assert_eq!(
        detail(&body),
        "Request body too large: the limit is 1024 bytes"
    );
}

fn chunk_stream(
    items: Vec<Result<String, std::io::Error>>,
) -> impl tokio_stream::Stream<Item = Result<String, std::io::Error>> + Send + 'static {
    tokio_stream::iter(items)
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_and_the_server_goes_on() {
    let app = app(1024);
    let (status, body) = send(app.clone(), "GET", "/panics", None, Body::empty()).await;
    assert_eq!(
        (status, body),
        (500, json!({"detail": "Internal server error"}))
    );
    let (status, _) = post_things(app, None, Body::from(r#"{"name":"a","tags":[]}"#)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn rejections_of_axums_own_extractors_are_json_too() {
    // A path parameter of the wrong type: axum answers 400 in plain text by itself.
    let (status, body) = send(app(1024), "GET", "/items/abc", None, Body::empty()).await;
    assert_eq!((status, body), (400, json!({"detail": "Bad Request"})));
    // A String body over the limit: axum's own 413.
    let (status, body) = send(
        app(16),
        "POST",
        "/text",
        Some("text/plain"),
        Body::from_stream(chunk_stream(vec![Ok("x".repeat(40))])),
    )
    .await;
    assert_eq!(
        (status, body),
        (413, json!({"detail": "Payload Too Large"}))
    );
}
