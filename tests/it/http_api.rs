//! The HTTP skeleton over a real socket: health, auth, error shapes, CORS, shutdown, logging.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::{Server, TestHome, raw_request, status_and_json};
use nix::sys::signal::Signal;
use serde_json::json;

const KEY: &str = "test-key-0123456789";

fn keyed_server() -> (TestHome, Server) {
    let home = TestHome::new();
    home.write_config(&format!("server:\n  api_key: {KEY}\n"));
    let server = home.start(&[]);
    (home, server)
}

#[tokio::test]
async fn health_reports_status_time_and_version_without_a_key() {
    let (_home, server) = keyed_server();
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (status, body) = status_and_json(server.get("/health").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let timestamp = chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap())
        .expect("RFC 3339 timestamp");
    assert!(timestamp >= before && timestamp <= chrono::Utc::now() + chrono::Duration::seconds(1));
    assert_eq!(body["checks"], serde_json::json!({"storage": "ok"}));
    assert_eq!(
        body.as_object().unwrap().len(),
        4,
        "the predecessor's fields and the checks: {body}"
    );
}

#[tokio::test]
async fn every_route_but_health_needs_the_key_in_either_header() {
    let (_home, server) = keyed_server();
    let missing = status_and_json(server.get("/anything").send().await.unwrap()).await;
    assert_eq!(missing.0, 401);
    assert!(
        missing.1["detail"]
            .as_str()
            .unwrap()
            .contains("Missing API key"),
        "{}",
        missing.1
    );

    for wrong in [
        ("X-API-Key", "nope".to_owned()),
        ("X-API-Key", format!("{KEY}x")),
        ("Authorization", format!("Bearer {}", &KEY[..KEY.len() - 1])),
        ("Authorization", format!("Basic {KEY}")),
    ] {
        let (status, body) = status_and_json(
            server
                .get("/anything")
                .header(wrong.0, &wrong.1)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 401, "{wrong:?}");
        assert!(body["detail"].is_string(), "{body}");
    }

    for right in [
        ("X-API-Key", KEY.to_owned()),
        ("Authorization", format!("Bearer {KEY}")),
    ] {
        let (status, body) = status_and_json(
            server
                .get("/anything")
                .header(right.0, &right.1)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body),
            (404, json!({"detail": "Not Found"})),
            "{right:?}"
        );
    }

    // 401 also for a wrong method or a big body: nothing is revealed before authentication.
    let post_health_unauthenticated = server.post("/anything").body("x").send().await.unwrap();
    assert_eq!(post_health_unauthenticated.status(), 401);
    let challenge = server.get("/anything").send().await.unwrap();
    assert!(challenge.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn errors_are_json_detail_with_the_right_status() {
    let (_home, server) = keyed_server();
    let authed = |request: reqwest::RequestBuilder| request.header("X-API-Key", KEY).send();

    let not_found = status_and_json(authed(server.get("/no/such/route")).await.unwrap()).await;
    assert_eq!(not_found, (404, json!({"detail": "Not Found"})));

    let wrong_method = authed(server.post("/health").json(&json!({})))
        .await
        .unwrap();
    let allow = wrong_method
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        status_and_json(wrong_method).await,
        (405, json!({"detail": "Method Not Allowed"}))
    );
    assert!(
        allow.unwrap_or_default().contains("GET"),
        "405 names the allowed methods"
    );

    // Refused on the declared length, before the body is sent.
    let declared = format!(
        "POST /health HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\n\r\n",
        4 * 1024 * 1024 + 1
    );
    let (status, body) = raw_request(&server, declared.as_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(
        body["detail"],
        "Request body too large: the limit is 4194304 bytes"
    );
}

#[tokio::test]
async fn the_body_limit_comes_from_the_config() {
    let home = TestHome::new();
    home.write_config("server:\n  max_body_bytes: 1000\n");
    let server = home.start(&[]);
    let over = b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1001\r\n\r\n";
    let (status, body) = raw_request(&server, over).await;
    assert_eq!(status, 413);
    assert_eq!(
        body["detail"],
        "Request body too large: the limit is 1000 bytes"
    );
    // At the limit it passes the size check and reaches routing.
    let at_limit = server
        .post("/x")
        .body(vec![b'{'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(at_limit.status(), 404);
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let home = TestHome::new();
    home.write_config(&format!(
        "server:\n  api_key: {KEY}\n  cors_origins: [\"http://app.test:3000\"]\n"
    ));
    let server = home.start(&[]);
    let preflight = |origin: &str| {
        server
            .http
            .request(reqwest::Method::OPTIONS, server.url("/anything"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "x-api-key, content-type")
            .send()
    };
    let allowed = preflight("http://app.test:3000").await.unwrap();
    assert!(
        allowed.status().is_success(),
        "preflight needs no key: {}",
        allowed.status()
    );
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://app.test:3000"
    );
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed_headers.contains("x-api-key") && allowed_headers.contains("authorization"));

    let denied = preflight("http://evil.test").await.unwrap();
    assert!(!denied.headers().contains_key("access-control-allow-origin"));

    // A foreign page's POST is refused even with a key; a configured origin's goes through.
    let from = |origin: &str| {
        server
            .post("/anything")
            .header("Origin", origin)
            .header("X-API-Key", KEY)
            .json(&json!({}))
            .send()
    };
    let (status, body) = status_and_json(from("http://evil.test").await.unwrap()).await;
    assert_eq!(status, 403);
    assert!(
        body["detail"].as_str().unwrap().contains("cors_origins"),
        "{body}"
    );
    let ok = from("http://app.test:3000").await.unwrap();
    assert_eq!(ok.status(), 404);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://app.test:3000"
    );
}

#[tokio::test]
async fn without_a_key_only_local_pages_and_host_names_are_served() {
    let home = TestHome::new();
    let server = home.start(&[]);
    // DNS rebinding: a foreign name resolving to 127.0.0.1 arrives with that name in Host.
    let rebound = server
        .get("/health")
        .header("Host", "attacker.test:8000")
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(rebound).await;
    assert_eq!(status, 403);
    assert!(
        body["detail"].as_str().unwrap().contains("loopback"),
        "{body}"
    );
    let local = server
        .get("/health")
        .header("Host", "localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200);
    // A page on another site cannot make the open server act.
    let cross_site = server
        .post("/anything")
        .header("Origin", "http://attacker.test")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
}

#[tokio::test]
async fn sigterm_and_sigint_stop_the_server_with_exit_0() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let home = TestHome::new();
        let mut server = home.start(&[]);
        assert_eq!(server.get("/health").send().await.unwrap().status(), 200);
        server.signal(signal);
        let (status, took) = server
            .wait_exit(Duration::from_secs(6))
            .unwrap_or_else(|| panic!("still running 6 s after {signal}"));
        assert_eq!(
            status.code(),
            Some(0),
            "{signal}: {status:?}\n{}",
            server.stderr()
        );
        assert!(took < Duration::from_secs(2), "{signal} took {took:?}");
        assert!(
            server.stderr().contains("shutting down"),
            "{}",
            server.stderr()
        );
    }
}

#[tokio::test]
async fn shutdown_does_not_wait_forever_for_an_open_request() {
    use tokio::io::AsyncWriteExt;
    let home = TestHome::new();
    home.write_config("server:\n  shutdown_grace_secs: 1\n");
    let mut server = home.start(&[]);
    // A request whose headers never finish keeps its connection busy.
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    assert_eq!(server.get("/health").send().await.unwrap().status(), 200);
    server.signal(Signal::SIGTERM);
    let (status, took) = server
        .wait_exit(Duration::from_secs(6))
        .expect("exits after the grace period");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(
        server.stderr().contains("grace period"),
        "{}",
        server.stderr()
    );
}

#[tokio::test]
async fn json_logs_and_rust_log_override() {
    let home = TestHome::new();
    let server = home.start(&["--log-format", "json"]);
    server.get("/health").send().await.unwrap();
    // Logs are written by a thread of their own: the request's line follows its answer.
    testkit::processes::wait_until(std::time::Duration::from_secs(5), || {
        server.stderr().contains("\"status\":200")
    });
    drop(server);
    let log_files: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("lit-mux-stderr-")
        })
        .collect();
    let text = std::fs::read_to_string(log_files[0].path()).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert!(
        lines.len() >= 3,
        "config, listening and request lines: {text}"
    );
    for line in &lines {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            record["level"].is_string() && record["fields"].is_object(),
            "{line}"
        );
    }
    assert!(
        text.contains("\"status\":200"),
        "requests are logged: {text}"
    );

    let quiet = TestHome::new().env("RUST_LOG", "error");
    let server = quiet.start(&[]);
    server.get("/health").send().await.unwrap();
    assert_eq!(
        server.stderr().trim(),
        "",
        "RUST_LOG=error hides info lines"
    );
}

/// A stderr nobody reads (a full pipe: a stalled log collector, a paused `| less`) must not stop
/// the server. With logs written straight from the runtime threads it stopped after ~120 debug-
/// level requests, once the pipe's 64 KiB were full; logs now go through a queue that drops lines
/// rather than wait.
#[tokio::test]
async fn a_stderr_that_nobody_reads_never_stops_the_server() {
    let home = TestHome::new().env("RUST_LOG", "debug");
    let (unread, stderr) = std::io::pipe().unwrap();
    let server = home.start_with_stderr(&[], stderr.into());
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    // Each request logs about 500 bytes at debug level: 2000 of them are 1 MB, 15 pipes' worth.
    for i in 0..2000 {
        let response = client
            .get(server.url("/health"))
            .send()
            .await
            .unwrap_or_else(|err| panic!("request {i}: {err}"));
        assert_eq!(response.status(), 200, "request {i}");
    }
    // What did not fit the queue was dropped, and counted.
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("lit_mux_log_lines_dropped "))
        .unwrap_or_else(|| panic!("no lit_mux_log_lines_dropped in {metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(dropped > 0, "{metrics}");
    drop(unread);
}

#[tokio::test]
async fn log_level_from_the_config() {
    let home = TestHome::new();
    home.write_config("server:\n  log_level: WARNING\n");
    let server = home.start(&[]);
    server.get("/health").send().await.unwrap();
    let stderr = server.stderr();
    assert!(!stderr.contains("INFO"), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("api_key"),
        "the open-API warning stays: {stderr}"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let home = TestHome::new();
    home.write_config("server:\n  header_read_timeout_secs: 1\n");
    let server = home.start(&[]);
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "the connection is still open after 5 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    // Others are served meanwhile and afterwards.
    assert_eq!(server.get("/health").send().await.unwrap().status(), 200);
}
