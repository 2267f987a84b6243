//! What every answer carries whichever the wire, and the hand-off to the wire's own shape for
//! answers, tool calls and errors.

use std::io;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::answer::Reply;
use super::text::{all_message_text, count_words};
use super::{FakeToolCall, Wire, anthropic, ollama, openai};

impl Reply<'_> {
    /// The non-streamed answer.
    pub(super) fn complete(&self, wire: Wire, text: &str) -> Value {
        match wire {
            Wire::Ollama => ollama::complete(self, text),
            Wire::OpenAi => openai::complete(self, text),
            Wire::Anthropic => anthropic::complete(self, text),
        }
    }

    /// The content type and the body chunks of the streamed answer: the preamble goes with the
    /// first text chunk, each further text chunk is its own body chunk, then the ending.
    pub(super) fn stream(
        &self,
        wire: Wire,
        chunks: &[String],
        include_usage: bool,
    ) -> (&'static str, Vec<String>) {
        let frames = match wire {
            Wire::Ollama => ollama::stream(self, chunks),
            Wire::OpenAi => openai::stream(self, chunks, include_usage),
            Wire::Anthropic => anthropic::stream(self, chunks),
        };
        (wire.stream_content_type(), frames)
    }
}

/// An answer holding tool calls, streamed or not, in `wire`'s shape.
pub(super) fn tool_call_answer(
    wire: Wire,
    body: &Value,
    model: &str,
    text: Option<&str>,
    calls: &[FakeToolCall],
    stream: bool,
) -> Response {
    let text = text.unwrap_or("");
    let reply = Reply {
        model,
        prompt_tokens: count_words(&all_message_text(body)).max(1),
        completion_tokens: 7,
    };
    if !stream {
        let answer = match wire {
            Wire::Ollama => ollama::tool_calls(&reply, text, calls),
            Wire::OpenAi => openai::tool_calls(&reply, text, calls),
            Wire::Anthropic => anthropic::tool_calls(&reply, text, calls),
        };
        return json_response(200, answer);
    }
    let frames = match wire {
        Wire::Ollama => ollama::tool_calls_stream(&reply, text, calls),
        Wire::OpenAi => {
            let include_usage = body["stream_options"]["include_usage"] == true;
            openai::tool_calls_stream(&reply, text, calls, include_usage)
        }
        Wire::Anthropic => anthropic::tool_calls_stream(&reply, text, calls),
    };
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(
        frames.into_iter().map(Ok::<_, io::Error>),
    )));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire.stream_content_type()),
    );
    response
}

/// The provider's error body for `status`.
pub(super) fn error(wire: Wire, status: u16, message: &str) -> Response {
    let body = match wire {
        Wire::Ollama => ollama::error_body(message),
        Wire::OpenAi => openai::error_body(status, message),
        Wire::Anthropic => anthropic::error_body(status, message),
    };
    json_response(status, body)
}

pub(super) fn rate_limited(wire: Wire) -> Response {
    let message = match wire {
        Wire::Ollama => ollama::RATE_LIMIT_MESSAGE,
        Wire::OpenAi => openai::RATE_LIMIT_MESSAGE,
        Wire::Anthropic => anthropic::RATE_LIMIT_MESSAGE,
    };
    error(wire, 429, message)
}

pub(super) fn not_found_message(wire: Wire, method: &Method, path: &str) -> String {
    match wire {
        Wire::Ollama => ollama::not_found_message(method, path),
        Wire::OpenAi => openai::not_found_message(method, path),
        Wire::Anthropic => anthropic::not_found_message(method, path),
    }
}

pub(super) fn json_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).expect("valid HTTP status");
    (status, axum::Json(body)).into_response()
}
