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

/// The description served by a fresh lit-mux with `config` (YAML, may be empty).
async fn served_description(config: &str) -> Value {
    let home = TestHome::new();
    if !config.is_empty() {
        home.write_config(config);
    }
    let server = home.start(&[]);
    let response = server.get("/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Every `(METHOD, path, operation)` of the description.
fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            all.push((method.to_uppercase(), path.clone(), operation.clone()));
        }
    }
    all
}

/// A component schema by name, with `$ref`s left as they are.
fn component<'a>(spec: &'a Value, name: &str) -> &'a Value {
    let schema = &spec["components"]["schemas"][name];
    assert!(schema.is_object(), "no component {name}");
    schema
}

#[tokio::test(flavor = "multi_thread")]
async fn the_description_declares_both_key_headers_and_401_wherever_a_key_applies() {
    let spec = served_description("server:\n  api_key: docs-key-2\n").await;

    let schemes = &spec["components"]["securitySchemes"];
    let kinds: BTreeSet<String> = schemes
        .as_object()
        .unwrap()
        .values()
        .map(|scheme| match scheme["type"].as_str().unwrap() {
            "http" => format!("http {}", scheme["scheme"].as_str().unwrap()),
            "apiKey" => format!(
                "apiKey {} {}",
                scheme["in"].as_str().unwrap(),
                scheme["name"].as_str().unwrap()
            ),
            other => other.to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "http bearer".to_owned(),
            "apiKey header X-API-Key".to_owned()
        ])
    );
    // Either one is enough.
    let required = spec["security"].as_array().unwrap();
    assert_eq!(required.len(), 2, "{required:?}");
    assert!(required.iter().all(|r| r.as_object().unwrap().len() == 1));

    for (method, path, operation) in operations(&spec) {
        let responses = operation["responses"].as_object().unwrap();
        if path == "/health" {
            assert_eq!(operation["security"], serde_json::json!([]), "{path}");
            assert!(!responses.contains_key("401"), "{path}");
            continue;
        }
        assert!(operation.get("security").is_none(), "{method} {path}");
        assert!(responses.contains_key("401"), "{method} {path}: no 401");
        assert!(responses.contains_key("403"), "{method} {path}: no 403");
        if operation.get("requestBody").is_some() && path != "/mcp" {
            for status in ["413", "415", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: no {status}"
                );
            }
        }
        let expected_error = if path.starts_with("/v1/") {
            "#/components/schemas/OpenAiErrorBody"
        } else {
            "#/components/schemas/ErrorBody"
        };
        if path != "/mcp" {
            assert_eq!(
                responses["401"]["content"]["application/json"]["schema"]["$ref"], expected_error,
                "{method} {path}"
            );
        }
    }
    let unprocessable = &spec["paths"]["/sessions"]["post"]["responses"]["422"];
    assert_eq!(
        unprocessable["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ValidationErrorBody"
    );
    let item = &component(&spec, "ValidationErrorBody")["properties"]["detail"]["items"];
    assert_eq!(item["required"], serde_json::json!(["type", "loc", "msg"]));

    // What the description says is what the server does: 401 without the key, /health open.
    assert_eq!(
        crate::support::TestHome::new()
            .start(&[])
            .get("/health")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_description_declares_the_constraints_the_server_enforces() {
    let spec = served_description("").await;

    let page = spec["paths"]["/sessions"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let parameter = |name: &str| {
        page.iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {page:?}"))["schema"]
            .clone()
    };
    assert_eq!(parameter("limit")["minimum"], 0);
    assert_eq!(parameter("limit")["maximum"], 1000);
    assert_eq!(parameter("offset")["minimum"], 0);

    let create = component(&spec, "CreateSession");
    assert_eq!(create["properties"]["backends"]["minItems"], 1);
    assert_eq!(create["example"]["backends"][0], "echo");
    for name in ["SendMessage", "BroadcastMessage"] {
        let body = component(&spec, name);
        assert_eq!(body["properties"]["content"]["minLength"], 1, "{name}");
        assert_eq!(
            body["properties"]["max_tool_iterations"]["maximum"], 100,
            "{name}"
        );
        assert_eq!(body["example"]["content"], "Hello", "{name}");
    }
    assert_eq!(
        component(&spec, "BroadcastMessage")["properties"]["backends"]["minItems"],
        1
    );

    let add = &component(&spec, "AddServer")["properties"];
    assert_eq!(add["name"]["pattern"], "^[A-Za-z0-9_-]{1,64}$");
    assert_eq!(add["timeout"]["minimum"], 1);
    assert_eq!(add["timeout"]["maximum"], 3600);
    assert_eq!(add["args"]["maxItems"], 256);
    assert_eq!(
        component(&spec, "RestartPolicy")["enum"],
        serde_json::json!(["never", "on-failure"])
    );
    let env = component(&spec, "ServerEnvironment");
    assert_eq!(env["maxProperties"], 256);

    let request = &component(&spec, "ChatCompletionRequest")["properties"];
    assert_eq!(request["temperature"]["maximum"], 2);
    assert_eq!(request["top_p"]["maximum"], 1);
    assert_eq!(request["n"]["maximum"], 1);
    assert_eq!(request["messages"]["minItems"], 1);
    assert_eq!(
        request["lit_mux"]["properties"]["max_tool_iterations"]["maximum"],
        100
    );
    let completions = &spec["paths"]["/v1/chat/completions"]["post"];
    assert_eq!(
        completions["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ChatCompletionRequest"
    );
    let answers = &completions["responses"]["200"]["content"];
    assert_eq!(
        answers["application/json"]["schema"]["$ref"],
        "#/components/schemas/ChatCompletion"
    );
    assert_eq!(
        answers["text/event-stream"]["schema"]["$ref"],
        "#/components/schemas/ChatCompletionStreamEvent"
    );
    let events = spec["paths"]["/sessions/{id}/message"]["post"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"]["$ref"]
        .clone();
    assert_eq!(events, "#/components/schemas/SessionStreamEvent");
    let names: BTreeSet<String> = component(&spec, "SessionStreamEvent")["anyOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            event["properties"]["event"]["const"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        ["delta", "done", "error", "tool_call", "tool_result"]
            .map(str::to_owned)
            .into()
    );

    // Stateful clients can follow a created session or server to the operations on it.
    let links = &spec["paths"]["/sessions"]["post"]["responses"]["200"]["links"];
    assert_eq!(
        links["GetSession"]["parameters"]["id"],
        "$response.body#/id"
    );
    let links = &spec["paths"]["/mcp/servers"]["post"]["responses"]["200"]["links"];
    assert_eq!(links["RemoveServer"]["operationId"], "remove_server");
}
