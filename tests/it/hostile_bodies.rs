//! Property tests: request bodies of valid shape with hostile values (huge, negative and
//! fractional numbers, numbers no machine type holds, deep nesting, long strings, wrong types,
//! unicode, NUL, lone surrogates) and bodies of no shape at all, sent to one real lit-mux per
//! endpoint. Never a 5xx but the 502/503 of a failing peer, never a panic in its stderr, never a
//! request left hanging, and `/health` still answers at the end.
//!
//! The cases come from a fixed seed with no failure files, so every run sends the same bodies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use serde_json::json;

use crate::support::{Server, TestHome};

/// Cases per endpoint: enough to reach every field with every kind of value, a few seconds.
const CASES: u32 = 250;

/// A JSON number as text, including those no `u64`, `i64` or `f64` holds.
fn number() -> BoxedStrategy<String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..100).prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        prop::sample::select(vec![
            "0",
            "-0",
            "-1",
            "0.5",
            "1.0",
            "4294967296",
            "9223372036854775808",
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "1e400",
            "-1e400",
            "1e-400",
        ])
        .prop_map(str::to_owned),
    ]
    .boxed()
}

/// A count as a client would send it, or now and then any number.
fn count() -> BoxedStrategy<String> {
    prop_oneof![4 => (0u64..100).prop_map(|n| n.to_string()), 1 => number()].boxed()
}

/// A fraction as a client would send it, or now and then any number.
fn fraction() -> BoxedStrategy<String> {
    prop_oneof![4 => (0.0f64..1.0).prop_map(|f| f.to_string()), 1 => number()].boxed()
}

/// A JSON string literal, escaped where JSON needs it.
fn string() -> BoxedStrategy<String> {
    let literal = |text: String| serde_json::to_string(&text).unwrap();
    prop_oneof![
        any::<String>().prop_map(literal),
        "[\\x00-\\x1f\"\\\\/]{0,8}".prop_map(literal),
        (0usize..20_000).prop_map(move |n| literal("é".repeat(n))),
        prop::sample::select(vec![
            r#""""#,
            r#""echo""#,
            r#""echo/echo""#,
            r#""\u0000""#,
            r#""a\u0000b""#,
            r#""\ud83d\ude00""#,
            r#""../../etc/passwd""#,
            r#""2.0""#,
            r#""on-failure""#,
        ])
        .prop_map(str::to_owned),
    ]
    .boxed()
}

/// Any JSON value, nested a few levels.
fn value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        prop::sample::select(vec!["null", "true", "false"]).prop_map(str::to_owned),
        number(),
        string(),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|items| array(&items)),
            prop::collection::vec((string(), inner), 0..6).prop_map(|pairs| {
                let fields: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
    .boxed()
}

/// Nesting deeper than any parser's recursion limit, and text that is no JSON at all.
fn malformed() -> BoxedStrategy<String> {
    prop_oneof![
        (1usize..5_000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        (1usize..5_000).prop_map(|depth| format!(
            "{}1{}",
            "{\"a\":".repeat(depth),
            "}".repeat(depth)
        )),
        (1usize..5_000).prop_map(|depth| "[".repeat(depth)),
        // Lone surrogates: escapes JSON allows and UTF-8 cannot hold.
        prop::sample::select(vec![
            r#"{"content":"\ud800","model":"\udfff\ud800"}"#,
            r#"{"name":"\ud800","command":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"\udc00"}"#,
        ])
        .prop_map(str::to_owned),
        any::<String>(),
        value(),
    ]
    .boxed()
}

fn array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

/// An object with each of `fields` or not (a plausible value nine times in ten, else any
/// value) and now and then a key of no field; or, one time in ten, a body of no shape at all.
fn body(fields: Vec<(&'static str, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
    let members: Vec<BoxedStrategy<Option<String>>> = fields
        .into_iter()
        .map(|(name, plausible)| {
            let member = prop_oneof![9 => plausible, 1 => value()]
                .prop_map(move |value| format!("\"{name}\":{value}"));
            prop::option::weighted(0.85, member).boxed()
        })
        .collect();
    let strangers = prop::collection::vec(
        (string(), value()).prop_map(|(key, value)| format!("{key}:{value}")),
        0..2,
    );
    let object = (members, strangers).prop_map(|(members, strangers)| {
        let all: Vec<String> = members.into_iter().flatten().chain(strangers).collect();
        format!("{{{}}}", all.join(","))
    });
    prop_oneof![9 => object, 1 => malformed()].boxed()
}

/// A plausible value, or now and then any string.
fn mostly(text: &'static str) -> BoxedStrategy<String> {
    prop_oneof![3 => one_of(&[text]), 1 => string()].boxed()
}

fn one_of(texts: &[&'static str]) -> BoxedStrategy<String> {
    prop::sample::select(texts.to_vec())
        .prop_map(str::to_owned)
        .boxed()
}

fn boolean() -> BoxedStrategy<String> {
    one_of(&["true", "false"])
}

fn strings() -> BoxedStrategy<String> {
    prop::collection::vec(string(), 0..4)
        .prop_map(|items| array(&items))
        .boxed()
}

/// Sends every generated body with `send`, each answer read whole within 10 s; then checks the
/// server's stderr and `/health`.
fn assert_never_a_server_error(
    server: &Server,
    strategy: BoxedStrategy<String>,
    send: impl Fn(String) -> reqwest::RequestBuilder,
) {
    assert_answers(server, strategy, send, |_, _| Ok(()));
}

/// Like [`assert_never_a_server_error`], and every answer also passes `rule`.
fn assert_answers(
    server: &Server,
    strategy: BoxedStrategy<String>,
    send: impl Fn(String) -> reqwest::RequestBuilder,
    rule: impl Fn(u16, &str) -> Result<(), String>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: CASES,
            failure_persistence: None,
            // A failed case may leave state behind (a server stuck `starting`), so a smaller
            // body would not fail the same way: the failing body is reported as generated.
            max_shrink_iters: 0,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let outcome = runner.run(&strategy, |body| {
        let answer = runtime.block_on(async {
            let exchange = async {
                let response = send(body.clone()).send().await?;
                let status = response.status().as_u16();
                Ok::<_, reqwest::Error>((status, response.text().await?))
            };
            tokio::time::timeout(Duration::from_secs(10), exchange).await
        });
        let shown: String = body.chars().take(300).collect();
        let Ok(answer) = answer else {
            return Err(TestCaseError::fail(format!(
                "no answer within 10 s to {shown}"
            )));
        };
        let (status, text) = answer.map_err(|err| TestCaseError::fail(format!("{err}")))?;
        prop_assert!(
            status < 500 || status == 502 || status == 503,
            "{} for {}: {}",
            status,
            shown,
            text.chars().take(300).collect::<String>()
        );
        rule(status, &text).map_err(|why| TestCaseError::fail(format!("{why} for {shown}")))?;
        Ok(())
    });
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(reason, body)) => panic!(
            "{reason}\nbody: {}\nstderr:\n{}",
            body.chars().take(2000).collect::<String>(),
            server.stderr()
        ),
        Err(TestError::Abort(reason)) => panic!("{reason}"),
    }
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let health = runtime.block_on(async { server.get("/health").send().await.unwrap().status() });
    assert_eq!(health, 200);
}

fn json_post(server: &Server, path: &str, body: String) -> reqwest::RequestBuilder {
    server
        .post(path)
        .header("content-type", "application/json")
        .body(body)
}

#[test]
fn hostile_mcp_server_bodies_never_get_a_server_error() {
    let home = TestHome::new();
    // Of what a body names, only `true` may be started: it exits at once, so the server fails
    // its handshake (502), but the start with the body's numbers is attempted.
    home.write_config("mcp:\n  allowed_commands: [\"true\"]\n");
    let server = home.start(&[]);
    let env = prop::collection::vec((string(), string()), 0..4)
        .prop_map(|pairs| {
            let fields: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", fields.join(","))
        })
        .boxed();
    let strategy = body(vec![
        ("name", mostly("\"ok-name\"")),
        ("command", mostly("\"true\"")),
        ("args", strings()),
        ("env", env),
        ("timeout", number()),
        ("restart", one_of(&["\"never\"", "\"on-failure\""])),
    ]);
    assert_never_a_server_error(&server, strategy, |body| {
        json_post(&server, "/mcp/servers", body)
    });
}

#[test]
fn hostile_message_bodies_never_get_a_server_error() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let session: serde_json::Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (status, session) = server
            .post_json("/sessions", &json!({"backends": ["echo"]}))
            .await;
        assert_eq!(status, 200, "{session}");
        session
    });
    let path = format!("/sessions/{}/message", session["id"].as_str().unwrap());
    let strategy = body(vec![
        ("content", string()),
        ("stream", boolean()),
        ("backend", mostly("\"echo\"")),
        ("model", string()),
        ("use_tools", boolean()),
        ("max_tool_iterations", count()),
    ]);
    assert_never_a_server_error(&server, strategy, |body| json_post(&server, &path, body));
}

#[test]
fn hostile_chat_completion_bodies_never_get_a_server_error() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let role = prop_oneof![
        one_of(&[
            "\"system\"",
            "\"developer\"",
            "\"user\"",
            "\"assistant\"",
            "\"tool\""
        ]),
        string(),
    ];
    let content = prop_oneof![
        string(),
        prop::collection::vec(
            (one_of(&["\"text\"", "\"image_url\""]), string())
                .prop_map(|(kind, text)| format!("{{\"type\":{kind},\"text\":{text}}}")),
            0..3
        )
        .prop_map(|parts| array(&parts)),
    ];
    let calls = prop_oneof![
        2 => Just("[]".to_owned()),
        2 => prop::collection::vec(
            (string(), string(), string()).prop_map(|(id, name, arguments)| {
                format!(
                    "{{\"id\":{id},\"type\":\"function\",\"function\":{{\"name\":{name},\"arguments\":{arguments}}}}}"
                )
            }),
            1..3
        )
        .prop_map(|items| array(&items)),
        1 => value(),
    ];
    let message = (role, content, string(), calls).prop_map(|(role, content, id, calls)| {
        format!(
            "{{\"role\":{role},\"content\":{content},\"tool_call_id\":{id},\"tool_calls\":{calls}}}"
        )
    });
    let messages = prop::collection::vec(message, 0..4)
        .prop_map(|items| array(&items))
        .boxed();
    let tools = prop::collection::vec(
        (string(), value())
            .prop_map(|(name, parameters)| {
                format!(
                    "{{\"type\":\"function\",\"function\":{{\"name\":{name},\"parameters\":{parameters}}}}}"
                )
            }),
        0..3,
    )
    .prop_map(|items| array(&items))
    .boxed();
    let lit_mux = (boolean(), count())
        .prop_map(|(use_tools, rounds)| {
            format!("{{\"use_tools\":{use_tools},\"max_tool_iterations\":{rounds}}}")
        })
        .boxed();
    let strategy = body(vec![
        ("model", one_of(&["\"echo\"", "\"echo/echo\"", "\"echo/\""])),
        ("messages", messages),
        ("stream", boolean()),
        (
            "stream_options",
            boolean()
                .prop_map(|b| format!("{{\"include_usage\":{b}}}"))
                .boxed(),
        ),
        ("tools", tools),
        ("session_id", string()),
        ("lit_mux", lit_mux),
        ("temperature", fraction()),
        ("top_p", fraction()),
        ("n", prop_oneof![3 => one_of(&["1"]), 1 => count()].boxed()),
        ("max_tokens", count()),
        ("max_completion_tokens", count()),
    ]);
    assert_never_a_server_error(&server, strategy, |body| {
        json_post(&server, "/v1/chat/completions", body)
    });
}

#[test]
fn hostile_json_rpc_to_mcp_never_gets_a_server_error() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let params = prop::collection::vec(
        (
            one_of(&[
                "\"protocolVersion\"",
                "\"capabilities\"",
                "\"clientInfo\"",
                "\"name\"",
                "\"arguments\"",
                "\"cursor\"",
                "\"_meta\"",
                "\"uri\"",
            ]),
            value(),
        ),
        0..5,
    )
    .prop_map(|pairs| {
        let fields: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!("{{{}}}", fields.join(","))
    })
    .boxed();
    let message = body(vec![
        ("jsonrpc", mostly("\"2.0\"")),
        ("id", prop_oneof![count(), string()].boxed()),
        (
            "method",
            one_of(&[
                "\"initialize\"",
                "\"notifications/initialized\"",
                "\"ping\"",
                "\"tools/list\"",
                "\"tools/call\"",
                "\"resources/list\"",
                "\"prompts/get\"",
                "\"logging/setLevel\"",
                "\"notifications/cancelled\"",
                "\"completion/complete\"",
            ]),
        ),
        ("params", params),
    ]);
    // Single messages and batches: without a session id, with an open session's, with a made-up
    // one.
    let session = open_mcp_session(&server);
    let strategy = (
        prop_oneof![
            4 => message.clone(),
            1 => prop::collection::vec(message, 0..4).prop_map(|items| array(&items)),
        ],
        prop_oneof![Just(String::new()), Just(session), "[!-~]{1,40}"],
    )
        .prop_map(|(body, session)| format!("{session}\n{body}"))
        .boxed();
    let json_rpc_errors = |status: u16, text: &str| {
        // The body is declared JSON, so a 415 would be rmcp's refusal of the body itself.
        if status == 415 {
            return Err(format!("415 rather than a JSON-RPC error: {text}"));
        }
        Ok(())
    };
    assert_answers(
        &server,
        strategy,
        |line_and_body| {
            let (session, body) = line_and_body
                .split_once('\n')
                .unwrap_or(("", &line_and_body));
            let mut request = json_post(&server, "/mcp", body.to_owned())
                .header("accept", "application/json, text/event-stream");
            if !session.is_empty() {
                request = request.header("mcp-session-id", session);
            }
            request
        },
        json_rpc_errors,
    );
}

/// `initialize` and `notifications/initialized`; the session id the answer named.
fn open_mcp_session(server: &Server) -> String {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "hostile-bodies", "version": "1"}}});
        let response = server
            .post("/mcp")
            .header("accept", "application/json, text/event-stream")
            .json(&initialize)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let session = response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        response.text().await.unwrap();
        let initialized = server
            .post("/mcp")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await
            .unwrap();
        assert_eq!(initialized.status(), 202);
        session
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_no_json_rpc_message_gets_a_json_rpc_error() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let cases = [
        ("{\"jsonrpc\": ", -32700, json!(null)),
        ("[1, 2]", -32600, json!(null)),
        ("\"ping\"", -32600, json!(null)),
        (
            "{\"jsonrpc\": \"2.0\", \"id\": 7, \"method\": \"tools/list\", \"params\": [1]}",
            -32600,
            json!(7),
        ),
        (
            "{\"jsonrpc\": \"2.0\", \"id\": \"a\", \"method\": {\"x\": 1}}",
            -32600,
            json!("a"),
        ),
    ];
    for (body, code, id) in cases {
        let response = json_post(&server, "/mcp", body.to_owned())
            .header("accept", "application/json, text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["jsonrpc"], "2.0", "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        assert_eq!(answer["id"], id, "{body}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
}

/// A refusal of `/mcp` is a JSON-RPC error: `{"jsonrpc": "2.0", "id", "error": {"code", "message"}}`.
fn json_rpc_refusal(status: u16, text: &str) -> Result<(), String> {
    if status == 415 {
        return Err(format!("415 for a body declared JSON: {text}"));
    }
    if status < 400 {
        return Ok(());
    }
    let body: serde_json::Value =
        serde_json::from_str(text).map_err(|_| format!("{status} that is not JSON: {text}"))?;
    let well_formed = body["jsonrpc"] == "2.0"
        && body.get("id").is_some()
        && body["error"]["code"].is_i64()
        && body["error"]["message"].is_string();
    if !well_formed {
        return Err(format!("{status} that is no JSON-RPC error: {text}"));
    }
    Ok(())
}

#[test]
fn any_json_body_to_mcp_is_answered_with_json_rpc_never_415() {
    let home = TestHome::new();
    let server = home.start(&[]);
    // JSON-RPC's fields with values of any type, besides any JSON at all and bodies of no shape.
    let message = body(vec![
        ("jsonrpc", mostly("\"2.0\"")),
        ("id", value()),
        (
            "method",
            prop_oneof![one_of(&["\"ping\"", "\"initialize\""]), value()].boxed(),
        ),
        ("params", value()),
        ("result", value()),
        ("error", value()),
    ]);
    let strategy = prop_oneof![
        2 => message.clone(),
        1 => prop::collection::vec(message, 0..3).prop_map(|items| array(&items)),
        2 => value(),
        1 => malformed(),
    ]
    .boxed();
    // Each with a protocol version (none, the session's, the sessionless one, nonsense), an
    // `Accept` (mostly right) and a spelling of the JSON content type, as
    // `version\naccept\ncontent type\nbody`.
    let strategy = (
        one_of(&["", "2025-11-25", "2026-07-28", "1999-01-01"]),
        prop_oneof![
            4 => one_of(&["application/json, text/event-stream"]),
            1 => one_of(&["", "application/json", "text/event-stream", "*/*"]),
        ],
        one_of(&[
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ]),
        strategy,
    )
        .prop_map(|(version, accept, content_type, body)| {
            format!("{version}\n{accept}\n{content_type}\n{body}")
        })
        .boxed();
    let session = open_mcp_session(&server);
    assert_answers(
        &server,
        strategy,
        |case| {
            let mut parts = case.splitn(4, '\n');
            let mut next = || parts.next().unwrap_or_default();
            let (version, accept, content_type) = (next(), next(), next());
            let body = next().to_owned();
            let mut request = server
                .post("/mcp")
                .header("content-type", content_type)
                .header("mcp-session-id", &session)
                .body(body);
            if !version.is_empty() {
                request = request.header("mcp-protocol-version", version);
            }
            if !accept.is_empty() {
                request = request.header("accept", accept);
            }
            request
        },
        json_rpc_refusal,
    );
    // Without a session too, where rmcp refuses other things first.
    let scalar_or_container = prop_oneof![value(), malformed()].boxed();
    assert_answers(
        &server,
        scalar_or_container,
        |body| {
            json_post(&server, "/mcp", body).header("accept", "application/json, text/event-stream")
        },
        |status, text| {
            json_rpc_refusal(status, text)?;
            // Nothing here is an `initialize` that could open a session.
            if status != 400 {
                return Err(format!("{status} rather than 400: {text}"));
            }
            Ok(())
        },
    );
}
