//! The backends' streaming side (used by the streaming endpoints), driven through lit-mux's own
//! backend clients against fake servers speaking each provider's real stream format over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::StreamExt;
use lit_mux::backends::{
    Backend, BackendError, BackendRegistry, ChatEvent, ChatMessage, ChatRequest, Role,
};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

fn client(fake: &FakeBackend, wire: Wire) -> std::sync::Arc<dyn Backend> {
    let entry = match wire {
        Wire::Ollama => format!("{{type: ollama, host: '{}'}}", fake.url()),
        Wire::OpenAi => format!("{{type: openai, base_url: '{}', api_key: k}}", fake.url()),
        Wire::Anthropic => format!(
            "{{type: anthropic, base_url: '{}', api_key: k}}",
            fake.url()
        ),
    };
    let entries: yaml_serde::Mapping = yaml_serde::from_str(&format!("llm: {entry}")).unwrap();
    let configs = lit_mux::config::backends::parse_all(&entries, &mut Vec::new()).unwrap();
    BackendRegistry::new(&configs)
        .unwrap()
        .client("llm")
        .unwrap()
}

fn request(text: &str) -> ChatRequest {
    ChatRequest {
        model: "fake-model".to_owned(),
        system: Some("sys".to_owned()),
        messages: vec![ChatMessage::text(Role::User, text)],
        tools: Vec::new(),
        options: Default::default(),
    }
}

/// Collects a stream: the text, the final event, or the error that ended it.
async fn collect(
    backend: &dyn Backend,
    text: &str,
) -> (String, Result<ChatEvent, BackendError>, usize) {
    let mut stream = backend
        .chat_stream(request(text))
        .await
        .expect("stream starts");
    let mut joined = String::new();
    let mut deltas = 0;
    while let Some(event) = stream.next().await {
        match event {
            Ok(ChatEvent::Delta(delta)) => {
                deltas += 1;
                joined.push_str(&delta);
            }
            Ok(ChatEvent::ToolCall(call)) => panic!("no tools were offered, got {call:?}"),
            Ok(done @ ChatEvent::Done { .. }) => {
                assert!(stream.next().await.is_none(), "nothing after Done");
                return (joined, Ok(done), deltas);
            }
            Err(err) => {
                assert!(stream.next().await.is_none(), "nothing after an error");
                return (joined, Err(err), deltas);
            }
        }
    }
    panic!("the stream ended without Done or an error");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_wire_format_streams_deltas_then_done() {
    for (wire, name) in [
        (Wire::Ollama, "ollama"),
        (Wire::OpenAi, "openai"),
        (Wire::Anthropic, "anthropic"),
    ] {
        let fake = FakeBackend::start(wire).await;
        let backend = client(&fake, wire);
        let (text, done, deltas) = collect(backend.as_ref(), "stream this answer").await;
        assert_eq!(text, format!("{name} says: stream this answer"), "{wire:?}");
        assert!(deltas > 1, "{wire:?}: the answer came in {deltas} piece(s)");
        match done {
            Ok(ChatEvent::Done { model, .. }) => assert_eq!(model, "fake-model"),
            other => panic!("{wire:?}: {other:?}"),
        }
        assert_eq!(fake.last_chat().body["stream"], true, "{wire:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_off_midway_is_an_error_not_a_short_answer() {
    for wire in [Wire::Ollama, Wire::OpenAi, Wire::Anthropic] {
        let fake = FakeBackend::start(wire).await;
        fake.set_behaviour(Behaviour::DropMidStream);
        let backend = client(&fake, wire);
        let (_, ended, _) = collect(backend.as_ref(), "a long answer that breaks").await;
        assert!(
            matches!(ended, Err(BackendError::InvalidResponse { .. })),
            "{wire:?}: {ended:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_errors_before_the_first_byte_carry_the_upstream_status() {
    let fake = FakeBackend::start(Wire::Anthropic).await;
    fake.set_behaviour(Behaviour::Fail {
        status: 529,
        message: "Overloaded".to_owned(),
    });
    let backend = client(&fake, Wire::Anthropic);
    let Err(err) = backend.chat_stream(request("x")).await else {
        panic!("the stream must not start");
    };
    match err {
        BackendError::Upstream {
            status, message, ..
        } => {
            assert_eq!(status, 529);
            assert!(message.contains("Overloaded"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    fake.set_behaviour(Behaviour::RateLimited {
        retry_after_secs: 3,
    });
    match backend.chat_stream(request("x")).await.err() {
        Some(BackendError::RateLimited { retry_after, .. }) => {
            assert_eq!(retry_after.as_deref(), Some("3"));
        }
        other => panic!("{other:?}"),
    }
}
