//! RFC 9112 §3.2: an HTTP/1.1 request without `Host`, with several, or with an invalid one is
//! answered 400 before the access checks; HTTP/1.0 may omit it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::{TestHome, raw_request};

const KEY: &str = "host-header-key-1";

#[tokio::test]
async fn missing_repeated_or_invalid_host_headers_are_answered_400_before_auth() {
    let home = TestHome::new();
    home.write_config(&format!("server:\n  api_key: {KEY}\n"));
    let server = home.start(&[]);
    let refused: [(&str, &str); 5] = [
        ("no Host", "GET /sessions HTTP/1.1\r\n\r\n"),
        (
            "two Host lines",
            "GET /sessions HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
        ),
        (
            "a space in Host",
            "GET /sessions HTTP/1.1\r\nHost: local host\r\n\r\n",
        ),
        (
            "userinfo in Host",
            "GET /sessions HTTP/1.1\r\nHost: me@localhost\r\n\r\n",
        ),
        ("an empty Host", "GET /health HTTP/1.1\r\nHost: \r\n\r\n"),
    ];
    for (what, request) in refused {
        let (status, body) = raw_request(&server, request.as_bytes()).await;
        // 400 even without the key: the Host rule comes first.
        assert_eq!(status, 400, "{what}: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains("Host")),
            "{what}: {body}"
        );
    }

    let (status, body) = raw_request(&server, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "HTTP/1.0 without Host: {body}");
    let with_key =
        format!("GET /sessions HTTP/1.1\r\nHost: localhost:8000\r\nX-API-Key: {KEY}\r\n\r\n");
    let (status, body) = raw_request(&server, with_key.as_bytes()).await;
    assert_eq!(status, 200, "one valid Host: {body}");
}
