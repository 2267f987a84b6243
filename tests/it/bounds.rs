//! Every number from outside is range-checked where it comes in: a config value out of range
//! stops `start` with exit 2 naming the key and the range; an API value out of range is refused
//! naming the field and the range, before anything uses it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use crate::support::TestHome;

#[test]
fn config_numbers_out_of_range_name_the_key_and_the_range() {
    let cases: &[(&str, &[&str])] = &[
        (
            "server:\n  max_body_bytes: 2000000000\n",
            &["server.max_body_bytes", "from 1 to 1073741824"],
        ),
        (
            "server:\n  shutdown_grace_secs: 18446744073709551615\n",
            &["server.shutdown_grace_secs", "from 0 to 3600"],
        ),
        (
            "storage:\n  max_wal_mb: 18446744073709551615\n",
            &["storage.max_wal_mb", "from 1 to 65536"],
        ),
        (
            "context:\n  max_messages: 100000000\n",
            &["context.max_messages", "from 1 to 10000"],
        ),
        (
            "backends:\n  o: {type: ollama, timeout_secs: 18446744073709551615}\n",
            &["backends.o.timeout_secs", "from 1 to 86400"],
        ),
        (
            "backends:\n  o: {type: ollama, connect_timeout_secs: 0}\n",
            &["backends.o.connect_timeout_secs", "from 1 to 86400"],
        ),
        (
            "backends:\n  c: {type: anthropic, api_key: k, max_tokens: 4294967295}\n",
            &["backends.c.max_tokens", "from 1 to 1000000"],
        ),
    ];
    for (yaml, needles) in cases {
        let home = TestHome::new();
        let path = home.write("bad.yaml", yaml);
        let out = home.run(&["start", "--port", "0", "--config", path.to_str().unwrap()]);
        assert_eq!(out.code(), Some(2), "{yaml:?} → {out:?}");
        for needle in needles.iter() {
            assert!(
                out.stderr.contains(needle),
                "{yaml:?}: error should contain {needle:?}:\n{}",
                out.stderr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sampling_numbers_out_of_range_are_refused_naming_field_and_range() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            json!({"temperature": 5}),
            "temperature must be from 0 to 2, got 5",
        ),
        (
            json!({"temperature": -0.5}),
            "temperature must be from 0 to 2",
        ),
        (json!({"top_p": 1.5}), "top_p must be from 0 to 1"),
        (
            json!({"presence_penalty": -3}),
            "presence_penalty must be from -2 to 2",
        ),
        (
            json!({"frequency_penalty": 1e300}),
            "frequency_penalty must be from -2 to 2",
        ),
        (json!({"n": 3}), "n must be 1"),
        (json!({"max_tokens": 0}), "max_tokens must be from 1 to"),
        (
            json!({"max_completion_tokens": 18446744073709551615u64}),
            "max_completion_tokens must be from 1 to",
        ),
    ];
    for (extra, message) in cases {
        let mut body = json!({"model": "echo", "messages": user});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, answer) = server.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 400, "{extra}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
        let text = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{extra}: {answer}");
    }
    // Values a usual client sends are accepted (echo ignores them; `sampling_options` checks what
    // the other backends receive).
    let usual = json!({"model": "echo", "messages": user, "temperature": 0.7, "top_p": 1,
        "n": 1, "max_tokens": 256, "presence_penalty": 0, "frequency_penalty": 0});
    let (status, answer) = server.post_json("/v1/chat/completions", &usual).await;
    assert_eq!(status, 200, "{answer}");
}
