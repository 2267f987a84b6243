//! schemathesis (pinned in tests/clients) against the real binary: it reads `/openapi.json`,
//! generates requests valid and invalid by it (examples, boundaries, random data, and sequences
//! following the description's links), and checks every answer against the description: no 5xx,
//! only listed statuses, bodies and headers as described, invalid input refused, valid input
//! accepted, no answer without the key. lit-mux's `mcp.allowed_commands` allows only the MCP
//! fixture in its `healthy` mode, so adding servers through the API is exercised and nothing else
//! can start. Settings and hooks: tests/schemathesis/.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{TestHome, client_python, mcp};

/// Enough to find what a change breaks, within about two minutes on two cores.
const MAX_EXAMPLES: &str = "20";
/// The same requests every run, so that a failure is the change's and can be replayed.
const SEED: &str = "20261203";
const TIME_LIMIT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_answer_that_breaks_the_description() {
    let home = TestHome::new();
    home.write_config(&format!(
        "server:\n  api_key: schemathesis-key\nmcp:\n  allowed_commands:\n    - {{command: '{}', args: [healthy]}}\n",
        mcp::fixture()
    ));
    let server = home.start(&[]);
    let settings = std::fs::read_to_string(settings_dir().join("schemathesis.toml"))
        .unwrap()
        .replace("@API_KEY@", "schemathesis-key")
        .replace("@MCP_FIXTURE@", mcp::fixture());
    let settings_path = home.write("schemathesis.toml", &settings);

    let schemathesis = client_python().with_file_name("schemathesis");
    let run = tokio::process::Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&settings_path)
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        .args(["--workers", "1", "--no-color", "--max-failures", "100"])
        .current_dir(home.path())
        .env("HOME", home.path())
        .env("SCHEMATHESIS_HOOKS", settings_dir().join("hooks.py"))
        .env("LIT_MUX_MCP_FIXTURE", mcp::fixture())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(TIME_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran over {TIME_LIMIT:?}"))
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", schemathesis.display()));
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schemathesis failed:\n{report}");
}

/// The settings and hooks.
fn settings_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis")
}
