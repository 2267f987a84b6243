//! A small client of lit-mux's own API, used by the CLI's client commands (`status`, `send`,
//! `mcp …`). It turns transport failures and `{"detail"}` errors into one-line messages.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Why a call to the server did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach lit-mux at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Connected, but the answer did not come in time.
    #[error("lit-mux at {url} did not answer within {secs} s (--request-timeout)")]
    TimedOut { url: String, secs: u64 },
    /// The server answered with an error status; `detail` is its message.
    #[error("{status}: {detail}")]
    Api { status: StatusCode, detail: String },
    #[error("unexpected answer from {url}: {reason}")]
    BadAnswer { url: String, reason: String },
}

/// Where the server is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base_url: String,
    timeout: Duration,
    api_key: Option<String>,
    http: reqwest::Client,
    /// For event streams: no bound on the whole answer, only on each wait for more of it.
    streaming: reqwest::Client,
}

/// Most bytes of one event held while it arrives.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Server-Sent Events read off a response as they arrive.
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    url: String,
}

impl EventStream {
    /// The next event's name and JSON data; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<(String, Value)>, ClientError> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&block);
                let mut name = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if data.is_empty() {
                    // A keep-alive comment.
                    continue;
                }
                let value = serde_json::from_str(&data).map_err(|err| ClientError::BadAnswer {
                    url: self.url.clone(),
                    reason: format!("an event is not JSON: {err}"),
                })?;
                return Ok(Some((name, value)));
            }
            if self.buffer.len() > MAX_EVENT_BYTES {
                return Err(ClientError::BadAnswer {
                    url: self.url.clone(),
                    reason: format!("an event is over {MAX_EVENT_BYTES} bytes"),
                });
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(err) => {
                    return Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        reason: describe(&err),
                    });
                }
            }
        }
    }
}

impl ApiClient {
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let http = crate::outgoing::client_builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .build()
            .map_err(|err| ClientError::Unreachable {
                url: base_url.clone(),
                reason: chain(&err),
            })?;
        let streaming = crate::outgoing::client_builder()
            .read_timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .build()
            .map_err(|err| ClientError::Unreachable {
                url: base_url.clone(),
                reason: chain(&err),
            })?;
        Ok(Self {
            base_url,
            timeout,
            api_key,
            http,
            streaming,
        })
    }

    /// POSTs `body` asking for Server-Sent Events; an error status is returned as an error.
    pub async fn post_events(&self, path: &str, body: &Value) -> Result<EventStream, ClientError> {
        let url = format!("{}{}", self.base_url, path);
        let mut request = self
            .streaming
            .post(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(body);
        if let Some(key) = &self.api_key {
            request = request.header("X-API-Key", key);
        }
        let response = request
            .send()
            .await
            .map_err(|err| self.transport_error(&err))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(api_error(status, &bytes));
        }
        Ok(EventStream {
            response,
            buffer: Vec::new(),
            url,
        })
    }

    /// A failed exchange: the server could not be reached, or it was and did not answer in time.
    fn transport_error(&self, err: &reqwest::Error) -> ClientError {
        if err.is_timeout() && !err.is_connect() {
            return ClientError::TimedOut {
                url: self.base_url.clone(),
                secs: self.timeout.as_secs(),
            };
        }
        ClientError::Unreachable {
            url: self.base_url.clone(),
            reason: describe(err),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::DELETE, path, None).await
    }

    /// Sends one request and returns the JSON answer of a 2xx response.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{}", self.base_url, path);
        let mut request = self.http.request(method, &url);
        if let Some(key) = &self.api_key {
            request = request.header("X-API-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| self.transport_error(&err))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|err| self.transport_error(&err))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        value.ok_or_else(|| ClientError::BadAnswer {
            url,
            reason: "the body is not JSON".to_owned(),
        })
    }
}

/// The error for an error status: the body's `detail` (the `msg`s of a 422's list of
/// validation errors), else the body itself.
fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let value: Option<Value> = serde_json::from_slice(bytes).ok();
    let detail = value
        .as_ref()
        .and_then(|v| v.get("detail"))
        .map(|d| match d {
            Value::String(text) => text.clone(),
            Value::Array(errors) => errors
                .iter()
                .map(|e| {
                    e["msg"]
                        .as_str()
                        .map_or_else(|| e.to_string(), str::to_owned)
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        })
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).trim().to_owned());
    ClientError::Api { status, detail }
}

/// A one-line reason for a transport failure ("connection refused", "timed out").
pub fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    // The innermost cause is the one a person recognises (e.g. "Connection refused").
    let mut source: &dyn std::error::Error = err;
    while let Some(next) = source.source() {
        source = next;
    }
    let innermost = source.to_string();
    if err.is_connect() {
        let lower = innermost.to_lowercase();
        if lower.contains("connection refused") {
            return "connection refused (is `lit-mux start` running?)".to_owned();
        }
        return format!("cannot connect: {innermost}");
    }
    chain(err)
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
