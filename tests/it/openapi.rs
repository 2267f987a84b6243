//! `/openapi.json` and `/docs` through the real binary: the document validates as OpenAPI 3
//! (openapi-spec-validator, pinned in tests/clients), and its routes are exactly the routes the
//! README's endpoint table lists, each of which the server answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use crate::support::TestHome;
use serde_json::Value;

/// `(METHOD, /path)` pairs in the README's endpoint table (`` `GET /a`, `DELETE /a` `` cells).
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("### Endpoints")
        .nth(1)
        .unwrap()
        .split("\n### ")
        .next()
        .unwrap();
    let mut routes = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split(" | ").next().unwrap();
        for code in first_cell.split('`').skip(1).step_by(2) {
            if let Some((method, path)) = code.split_once(' ') {
                let path = path.split('?').next().unwrap();
                routes.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    routes
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_description_validates_and_covers_every_route() {
    let home = TestHome::new();
    home.write_config("server:\n  api_key: docs-key-1\n");
    let server = home.start(&[]);

    // Open without the key, like /health.
    let response = server.get("/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let spec: Value = serde_json::from_str(&text).unwrap();

    let output = crate::support::client_script("validate_openapi.py", &text).await;
    assert!(
        output.status.success(),
        "not valid OpenAPI: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("3."));

    let mut described = BTreeSet::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            described.insert((method.to_uppercase(), path.clone()));
        }
    }
    let documented: BTreeSet<_> = readme_routes()
        .into_iter()
        // The description does not describe itself.
        .filter(|(_, path)| path != "/openapi.json" && path != "/docs")
        .collect();
    assert!(documented.len() >= 18, "{documented:?}");
    assert_eq!(
        described, documented,
        "openapi.json vs the README's endpoint table"
    );

    // Every described route exists: no 404 or 405 from the router (with the key, dummy ids).
    for (method, path) in &described {
        let concrete = path
            .replace("{id}", "no-such-session")
            .replace("{name}", "no-such-server")
            .replace("{server}", "no-such-server")
            .replace("{tool}", "t");
        let response = server
            .http
            .request(method.parse().unwrap(), server.url(&concrete))
            .bearer_auth("docs-key-1")
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            status != 404 || !body.contains("\"Not Found\""),
            "{method} {path}: the router does not know it"
        );
    }

    // The interactive page.
    let page = server.get("/docs/").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    // Everything else still needs the key.
    assert_eq!(server.get("/sessions").send().await.unwrap().status(), 401);
}

/// The API description is a contract with every generated client: it changes only on purpose.
/// `tests/snapshots/openapi.json` holds it byte for byte; after a deliberate change, write the
/// new one there (`curl -s http://127.0.0.1:8000/openapi.json > tests/snapshots/openapi.json`).
#[tokio::test(flavor = "multi_thread")]
async fn the_api_description_is_the_committed_one_byte_for_byte() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let response = server.get("/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let served = response.text().await.unwrap();
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/snapshots/openapi.json"
    ))
    .unwrap();
    assert!(
        served == committed,
        "/openapi.json differs from tests/snapshots/openapi.json ({} bytes served, {} committed)",
        served.len(),
        committed.len()
    );
}
