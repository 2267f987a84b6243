//! `/mcp/health` only reports: a GET changes nothing, so a dead server stays listed with its
//! `last_error` however often the page is loaded, and only `POST /mcp/health/cleanup` removes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;
use testkit::processes::eventually;

use crate::support::TestHome;
use crate::support::mcp::fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_server_stays_in_mcp_health_until_a_post_cleans_it_up() {
    let home = TestHome::new();
    home.write_config(&format!(
        "mcp:\n  servers:\n    - name: broken\n      command: {}\n      args: [exit-at-once]\n      timeout: 5\n",
        fixture()
    ));
    let server = home.start(&[]);
    let failed = eventually(Duration::from_secs(5), || async {
        server.get_json("/mcp/servers/broken").await["state"] == "failed"
    })
    .await;
    assert!(failed, "the configured server fails to start");

    for _ in 0..2 {
        let health = server.get_json("/mcp/health").await;
        let broken = &health["servers"]["broken"];
        assert_eq!(broken["state"], "failed", "{health}");
        let last_error = broken["last_error"].as_str().unwrap_or_default();
        assert!(last_error.contains("exit"), "{health}");
        assert_eq!(health["cleaned_up"], json!([]), "{health}");
    }
    let listed = server.get_json("/mcp/servers/broken").await;
    assert!(listed["last_error"].is_string(), "{listed}");

    let (status, cleaned) = server.post_json("/mcp/health/cleanup", &json!({})).await;
    assert_eq!(status, 200, "{cleaned}");
    assert_eq!(cleaned["cleaned_up"], json!(["broken"]));
    let gone = server.get("/mcp/servers/broken").send().await.unwrap();
    assert_eq!(gone.status(), 404);
    let health = server.get_json("/mcp/health").await;
    assert_eq!(health["servers"], json!({}), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_is_refused_from_a_foreign_page_and_without_the_key() {
    let home = TestHome::new();
    home.write_config("server:\n  api_key: k-1\n");
    let server = home.start(&[]);
    let without_key = server.post("/mcp/health/cleanup").send().await.unwrap();
    assert_eq!(without_key.status(), 401);
    let foreign = server
        .post("/mcp/health/cleanup")
        .header("x-api-key", "k-1")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let allowed = server
        .post("/mcp/health/cleanup")
        .header("x-api-key", "k-1")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
}
