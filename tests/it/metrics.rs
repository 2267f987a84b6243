//! `GET /metrics` through the real binary: the official prometheus_client parsers (Prometheus
//! text and strict OpenMetrics) accept it, and the counts match what happened — HTTP requests,
//! backend calls, tool calls by outcome, MCP servers by state — with the MCP statistics equal to
//! `/mcp/health`'s.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::mcp::fixture_server;
use crate::support::{Server, TestHome};
use serde_json::{Value, json};
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

/// The exposition parsed by the official parsers: (families name → type, samples).
async fn parsed_metrics(server: &Server) -> (Value, Vec<(String, Value, f64)>) {
    let response = server.get("/metrics").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let output = crate::support::client_script("parse_metrics.py", &text).await;
    assert!(
        output.status.success(),
        "the parsers refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let samples = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s[0].as_str().unwrap().to_owned(),
                s[1].clone(),
                s[2].as_f64().unwrap(),
            )
        })
        .collect();
    (parsed["families"].clone(), samples)
}

/// The value of the sample `name` whose labels include `labels`; 0 when absent.
fn value(samples: &[(String, Value, f64)], name: &str, labels: Value) -> f64 {
    samples
        .iter()
        .filter(|(sample, sample_labels, _)| {
            sample == name
                && labels
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| sample_labels.get(k) == Some(v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_count_what_happened() {
    let fake = FakeBackend::start(Wire::OpenAi).await;
    fake.set_behaviour(Behaviour::Fail {
        status: 500,
        message: "boom".to_owned(),
    });
    let home = TestHome::new();
    home.write_config(&format!(
        "backends:\n  gpt: {{type: openai, base_url: '{}', api_key: k}}\n",
        fake.url()
    ));
    let server = home.start(&[]);
    let (status, body) = server
        .post_json("/mcp/servers", &fixture_server("fx", "healthy", &[]))
        .await;
    assert_eq!(status, 200, "{body}");

    // Three tool calls: one fine, one error result, one to a tool that does not exist.
    let (status, _) = server
        .post_json("/tools/fx/echo", &json!({"message": "hi"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = server.post_json("/tools/fx/fail", &json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = server.post_json("/tools/fx/made-up", &json!({})).await;
    assert_eq!(status, 404);
    // Two backend calls: echo answers, gpt fails.
    for (model, expected) in [("echo", 200), ("gpt", 502)] {
        let (status, body) = crate::support::status_and_json(
            server
                .post("/v1/chat/completions")
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, expected, "{body}");
    }
    let _ = server.get("/no/such/route").send().await.unwrap();
    let (status, body) = server
        .post_json("/mcp/servers/fx/restart", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");

    let (families, samples) = parsed_metrics(&server).await;
    assert_eq!(families["lit_mux_http_requests"], "counter", "{families}");
    assert_eq!(
        families["lit_mux_http_request_duration_seconds"],
        "histogram"
    );
    assert_eq!(families["lit_mux_mcp_servers_by_state"], "gauge");

    let http = |route: &str, status: &str| {
        value(
            &samples,
            "lit_mux_http_requests_total",
            json!({"route": route, "status": status}),
        )
    };
    assert_eq!(http("/tools/{server}/{tool}", "200"), 2.0);
    assert_eq!(http("/tools/{server}/{tool}", "404"), 1.0);
    assert_eq!(http("/v1/chat/completions", "502"), 1.0);
    assert_eq!(http("none", "404"), 1.0, "unknown paths share one label");
    assert!(
        value(
            &samples,
            "lit_mux_http_request_duration_seconds_count",
            json!({"route": "/v1/chat/completions"})
        ) >= 2.0
    );

    let backend = |backend: &str, outcome: &str| {
        value(
            &samples,
            "lit_mux_backend_calls_total",
            json!({"backend": backend, "outcome": outcome}),
        )
    };
    assert_eq!(backend("echo", "ok"), 1.0);
    assert_eq!(backend("gpt", "upstream_error"), 1.0);

    let tool = |tool: &str, outcome: &str| {
        value(
            &samples,
            "lit_mux_tool_calls_total",
            json!({"tool": tool, "outcome": outcome}),
        )
    };
    assert_eq!(tool("echo", "ok"), 1.0);
    assert_eq!(tool("fail", "tool_error"), 1.0);
    assert_eq!(
        tool("_unknown", "unknown"),
        1.0,
        "made-up names are not labels"
    );
    assert_eq!(
        value(
            &samples,
            "lit_mux_tool_call_duration_seconds_count",
            json!({"server": "fx", "tool": "echo"})
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "lit_mux_mcp_servers_by_state",
            json!({"state": "ready"})
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "lit_mux_child_processes", json!({})),
        1.0,
        "the fixture"
    );
    assert!(value(&samples, "lit_mux_open_fds", json!({})) > 0.0);
    assert!(value(&samples, "lit_mux_resident_memory_bytes", json!({})) > 1e6);

    // /mcp/health reports the same counters.
    let health = server.get_json("/mcp/health").await;
    let stats = &health["statistics"];
    for (key, metric) in [
        ("servers_created", "lit_mux_mcp_server_starts_total"),
        ("servers_failed", "lit_mux_mcp_server_start_failures_total"),
        ("servers_removed", "lit_mux_mcp_server_removals_total"),
        ("restarts", "lit_mux_mcp_restarts_total"),
        ("total_requests", "lit_mux_mcp_tool_requests_total"),
        ("failed_requests", "lit_mux_mcp_tool_request_failures_total"),
    ] {
        assert_eq!(
            stats[key].as_f64().unwrap(),
            value(&samples, metric, json!({})),
            "{key} vs {metric}"
        );
    }
    assert_eq!(stats["restarts"], 1);
    assert_eq!(stats["total_requests"], 3);
    assert_eq!(stats["failed_requests"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_the_api_key_when_one_is_set() {
    let home = TestHome::new();
    home.write_config("server:\n  api_key: metrics-key-1\n");
    let server = home.start(&[]);
    let refused = server.get("/metrics").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let allowed = server
        .get("/metrics")
        .bearer_auth("metrics-key-1")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let text = allowed.text().await.unwrap();
    // The refused request was counted too (refused before routing: route "none").
    assert!(
        text.contains(r#"lit_mux_http_requests_total{route="none",method="other",status="401"} 1"#),
        "{text}"
    );
}
