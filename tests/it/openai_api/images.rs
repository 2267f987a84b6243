//! Images in a chat completion reach each backend in its own wire's shape, text and images in
//! their order where the wire has order; what a wire cannot take, and content parts lit-mux does
//! not take, are refused with a plain 400 saying what is accepted; a session keeps the text and a
//! description of the images, never their data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::{Server, TestHome};
use serde_json::{Value, json};
use testkit::fake_backends::{FakeBackend, Wire};

use super::{completion, data_lines, session};

/// A 1×1 PNG, base64.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
const PNG_BYTES: u64 = 70;
const URL: &str = "https://images.example.com/cat.jpg";

/// Text, a PNG as a data URL (with `detail`), more text, a remote image.
fn mixed_content() -> Value {
    json!([
        {"type": "text", "text": "compare "},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}"), "detail": "low"}},
        {"type": "text", "text": " with "},
        {"type": "image_url", "image_url": {"url": URL}},
    ])
}

fn data_only_content() -> Value {
    json!([
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}},
    ])
}

fn config_for(wire: Wire, url: &str) -> String {
    let entry = match wire {
        Wire::Ollama => format!("{{type: ollama, host: '{url}'}}"),
        Wire::OpenAi => format!("{{type: openai, base_url: '{url}', api_key: k}}"),
        Wire::Anthropic => format!("{{type: anthropic, base_url: '{url}', api_key: k}}"),
    };
    format!("backends:\n  llm: {entry}\n")
}

async fn lit_mux_on(wire: Wire) -> (FakeBackend, TestHome, Server) {
    let fake = FakeBackend::start(wire).await;
    let home = TestHome::new();
    home.write_config(&config_for(wire, &fake.url()));
    let server = home.start(&[]);
    (fake, home, server)
}

async fn ask(server: &Server, model: &str, content: Value) -> (u16, Value) {
    completion(
        server,
        json!({"model": model, "messages": [{"role": "user", "content": content}]}),
    )
    .await
}

fn last_message(fake: &FakeBackend) -> Value {
    fake.last_chat().body["messages"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_compatible_backends_get_the_parts_as_openai_takes_them() {
    let (fake, _home, server) = lit_mux_on(Wire::OpenAi).await;
    let (status, body) = ask(&server, "llm", mixed_content()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        last_message(&fake)["content"],
        json!([
            {"type": "text", "text": "compare "},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}"), "detail": "low"}},
            {"type": "text", "text": " with "},
            {"type": "image_url", "image_url": {"url": URL}},
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_gets_image_blocks_with_base64_and_url_sources_in_order() {
    let (fake, _home, server) = lit_mux_on(Wire::Anthropic).await;
    let (status, body) = ask(&server, "llm", mixed_content()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        last_message(&fake)["content"],
        json!([
            {"type": "text", "text": "compare "},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "text", "text": " with "},
            {"type": "image", "source": {"type": "url", "url": URL}},
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_gets_base64_images_and_a_url_is_refused_naming_the_backend() {
    let (fake, _home, server) = lit_mux_on(Wire::Ollama).await;
    let (status, body) = ask(&server, "llm", data_only_content()).await;
    assert_eq!(status, 200, "{body}");
    let sent = last_message(&fake);
    assert_eq!(sent["content"], "what is this?");
    assert_eq!(sent["images"], json!([PNG]));

    let chats_before = fake.chat_requests().len();
    let (status, body) = ask(&server, "llm", mixed_content()).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("backend llm: "), "{message}");
    assert!(
        message.contains("send the image as a data URL"),
        "{message}"
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(fake.chat_requests().len(), chats_before, "nothing was sent");

    // Streamed, the same refusal before the stream starts.
    let response = server
        .post("/v1/chat/completions")
        .json(&json!({"model": "llm", "stream": true,
                      "messages": [{"role": "user", "content": mixed_content()}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_describes_each_image_in_place() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let (status, body) = ask(&server, "echo", mixed_content()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("compare [image: image/png, {PNG_BYTES} bytes] with [image: {URL}]")
    );

    let response = server
        .post("/v1/chat/completions")
        .json(&json!({"model": "echo", "stream": true,
                      "messages": [{"role": "user", "content": data_only_content()}]}))
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
    assert_eq!(
        text,
        format!("what is this?[image: image/png, {PNG_BYTES} bytes]")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_images_and_other_part_types_are_refused_in_plain_words() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let image = |url: &str| json!({"type": "image_url", "image_url": {"url": url}});
    let cases = [
        (
            json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
            "messages[2].content[1]: content parts of type \"input_audio\" are not supported; \
             send text and image_url parts",
        ),
        (
            json!({"type": "file", "file": {"file_id": "f"}}),
            "content parts of type \"file\" are not supported",
        ),
        (
            json!({"type": "hologram"}),
            "content parts of type \"hologram\" are not supported",
        ),
        (
            image("data:image/tiff;base64,AAAA"),
            "images of type \"image/tiff\" are not supported; send one of image/png, \
             image/jpeg, image/gif, image/webp",
        ),
        (
            image("data:image/png;base64,not base64!"),
            "not valid base64",
        ),
        (image("file:///etc/passwd"), "must be http(s) or a data URL"),
    ];
    for (part, expected) in cases {
        let (status, body) = completion(
            &server,
            json!({"model": "echo", "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "first"},
                {"role": "user", "content": [{"type": "text", "text": "x"}, part]},
            ]}),
        )
        .await;
        assert_eq!(status, 400, "{part}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{part}: {message}");
        assert!(!message.contains("Some("), "{message}");
    }

    // An image is a user's: an assistant message with one is refused.
    let (status, body) = completion(
        &server,
        json!({"model": "echo", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": data_only_content()},
        ]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "messages[1]: images are accepted in user messages only"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_keeps_the_text_and_describes_the_images_without_their_data() {
    let (fake, _home, server) = lit_mux_on(Wire::OpenAi).await;
    let id = session(&server, "llm").await;
    let (status, body) = completion(
        &server,
        json!({"model": "llm", "session_id": id,
               "messages": [{"role": "user", "content": mixed_content()}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let messages = server.get_json(&format!("/sessions/{id}/messages")).await;
    let question = &messages[0];
    assert_eq!(question["role"], "user");
    assert_eq!(question["content"], "compare  with ");
    assert_eq!(
        question["metadata"]["images"],
        json!([{"media_type": "image/png", "bytes": PNG_BYTES}, {"url": URL}])
    );
    assert!(!messages.to_string().contains(PNG), "no image data stored");

    // The history replayed through the session carries the text only.
    let (status, reply) = server
        .post_json(
            &format!("/sessions/{id}/message"),
            &json!({"content": "and now?"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let replayed = fake.last_chat().body["messages"].clone();
    assert_eq!(replayed[0]["content"], "compare  with ");
    assert!(!replayed.to_string().contains("image_url"), "{replayed}");
}
