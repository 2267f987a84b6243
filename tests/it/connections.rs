//! Connections that send nothing, too little or too slowly: they are closed after the header or
//! body timeout, whatever their protocol, and at `server.max_connections` they make room for new
//! clients, so they can never hold every descriptor and lock out `/health`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Server, TestHome, raw_request};

const KEY: &str = "connections-key-1";

/// HTTP/2's connection preface followed by an empty SETTINGS frame: what an h2c client with
/// prior knowledge sends first.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn address(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; how long that took, or `None` after `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut sink))
        .await
        .ok()
        .map(|_| started.elapsed())
}

/// Asserts the connection is closed by the server one header timeout (1 s) after `since`.
async fn assert_closed_after_one_second(what: &str, stream: &mut tokio::net::TcpStream) {
    let took = closed_within(stream, Duration::from_secs(5)).await;
    let took = took.unwrap_or_else(|| panic!("{what}: still open after 5 s"));
    assert!(
        took < Duration::from_secs(3),
        "{what}: closed after {took:?}"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout_whatever_their_protocol() {
    let home = TestHome::new();
    home.write_config("server:\n  header_read_timeout_secs: 1\n");
    let server = home.start(&[]);
    let address = address(&server);

    // Never sends a byte.
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    // HTTP/2 with prior knowledge: the preface and SETTINGS, then no stream.
    let mut h2_idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    h2_idle.write_all(H2_PREFACE_AND_SETTINGS).await.unwrap();
    // HTTP/1.1 keep-alive: one request answered, then nothing.
    let mut kept_alive = tokio::net::TcpStream::connect(&address).await.unwrap();
    kept_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    kept_alive.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");

    assert_closed_after_one_second("a silent connection", &mut silent).await;
    assert_closed_after_one_second("an idle HTTP/2 connection", &mut h2_idle).await;
    assert_closed_after_one_second("an idle keep-alive connection", &mut kept_alive).await;
    assert_eq!(server.get("/health").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408_after_the_body_timeout() {
    let home = TestHome::new();
    home.write_config(&format!(
        "server:\n  api_key: {KEY}\n  body_read_timeout_secs: 1\n"
    ));
    let server = home.start(&[]);
    let started = Instant::now();
    let declared_but_short = format!(
        "POST /sessions HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"backend\":"
    );
    let (status, body) = raw_request(&server, declared_but_short.as_bytes()).await;
    assert_eq!(status, 408, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("body_read_timeout_secs")),
        "{body}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
}

/// Lets this test process open a few thousand sockets.
fn raise_own_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < 4096 && hard > soft {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
}

/// `/health` on a fresh connection answers 200 within a second.
async fn assert_health_answers_at_once(server: &Server, context: &str) {
    let started = Instant::now();
    let response = server
        .get("/health")
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    let status = response.map(|r| r.status().as_u16());
    assert!(
        matches!(status, Ok(200)),
        "{context}: /health answered {status:?} after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_sockets_cannot_hold_every_descriptor_and_lock_out_health() {
    raise_own_descriptor_limit();
    assert!(which_prlimit(), "this test needs prlimit (util-linux)");
    let home = TestHome::new();
    // Long timeouts: only the cap on connections can save the server here.
    home.write_config("server:\n  header_read_timeout_secs: 600\n");
    let server = home.start_wrapped(&["prlimit", "--nofile=1024:1024"], &[]);
    assert_health_answers_at_once(&server, "at start").await;
    let baseline = server.open_fds();
    let address = address(&server);

    // 1,100 sockets, past the 1,024 descriptors lit-mux may have: most silent, some with half a
    // request head, some HTTP/2 that stop after the preface and SETTINGS.
    let mut sockets = Vec::new();
    for batch in 0..11 {
        for index in 0..100 {
            let mut socket = TcpStream::connect(&address).unwrap();
            match (batch, index % 10) {
                (5.., 0) => socket
                    .write_all(b"GET /health HTTP/1.1\r\nHost: loc")
                    .unwrap(),
                (5.., 1) => socket.write_all(H2_PREFACE_AND_SETTINGS).unwrap(),
                _ => {}
            }
            sockets.push(socket);
        }
        assert_health_answers_at_once(&server, &format!("after {} sockets", sockets.len())).await;
    }
    for probe in 0..3 {
        assert_health_answers_at_once(&server, &format!("probe {probe} at the end")).await;
    }
    // The cap (three quarters of 1,024) holds: lit-mux keeps room for everything else.
    assert!(
        testkit::processes::wait_until(Duration::from_secs(5), || server.open_fds()
            <= baseline + 768),
        "{} descriptors open with the sockets, {baseline} before",
        server.open_fds()
    );

    drop(sockets);
    assert!(
        testkit::processes::wait_until(Duration::from_secs(5), || server.open_fds() <= baseline),
        "{} descriptors open after the sockets closed, {baseline} before",
        server.open_fds()
    );
    assert_health_answers_at_once(&server, "after the sockets closed").await;
}

fn which_prlimit() -> bool {
    std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}
