//! `lit-mux send` on a streamed answer: it prints the answer as it streams and fails loudly, its
//! first token reaches stdout before the backend has finished, and on a terminal a spinner turns
//! until the first token and is then cleared.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::TestHome;
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

use super::config_for;

#[test]
fn the_cli_prints_the_answer_as_it_streams_and_fails_loudly() {
    let fake = FakeBackend::start_blocking(Wire::Ollama);
    fake.set_behaviour(Behaviour::Reply {
        text: None,
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(20),
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Ollama)]));
    let server = home.start(&[]);
    let url = server.url("");

    let sent = home.run(&["send", "stream to me", "--backend", "llm", "--url", &url]);
    assert_eq!(sent.code(), Some(0), "{sent:?}");
    assert_eq!(sent.stdout.trim(), "ollama says: stream to me");
    assert_eq!(fake.last_chat().body["stream"], true);

    fake.set_behaviour(Behaviour::Fail {
        status: 404,
        message: "model \"fake-model\" not found, try pulling it first".to_owned(),
    });
    let failed = home.run(&["send", "again", "--backend", "llm", "--url", &url]);
    assert_eq!(failed.code(), Some(1), "{failed:?}");
    assert!(
        failed.stderr.contains("try pulling it first"),
        "{}",
        failed.stderr
    );
}

#[test]
fn the_cli_prints_the_first_token_before_the_backend_has_finished() {
    use std::io::Read;

    let fake = FakeBackend::start_blocking(Wire::Ollama);
    let text = "one two three four five six seven eight";
    // Eight chunks 250 ms apart: the last leaves the fake 1.75 s after the first.
    fake.set_behaviour(Behaviour::Reply {
        text: Some(text.to_owned()),
        delay: Duration::ZERO,
        chunk_delay: Duration::from_millis(250),
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Ollama)]));
    let server = home.start(&[]);
    let url = server.url("");

    let mut child = home
        .command(&["send", "count", "--backend", "llm", "--url", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Reads below block: a CLI that hangs is killed, which ends them.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (finished, watchdog) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watchdog.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut first = vec![0; 256];
    let read = stdout.read(&mut first).unwrap();
    // Checked the moment the first bytes are in: the backend is still answering.
    let answered_by_then = fake.answered_requests();
    first.truncate(read);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let _ = finished.send(());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();

    assert!(status.success(), "{status}: {stderr}");
    let first = String::from_utf8(first).unwrap();
    assert!(
        !first.is_empty() && text.starts_with(&first),
        "first bytes {first:?}"
    );
    assert_eq!(
        answered_by_then, 0,
        "the first token ({first:?}) reached stdout only after the backend had finished"
    );
    assert_eq!(fake.answered_requests(), 1);
    assert_eq!(
        format!("{first}{}", String::from_utf8(rest).unwrap()),
        format!("{text}\n")
    );
    // Not a terminal: no spinner.
    assert!(!stderr.contains("waiting for the model"), "{stderr:?}");
}

#[test]
fn on_a_terminal_the_cli_spins_until_the_first_token_then_clears_the_spinner() {
    let helper = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/stderr_on_pty.py"
    );
    let fake = FakeBackend::start_blocking(Wire::Ollama);
    // The spinner draws a frame every 80 ms while the backend thinks.
    fake.set_behaviour(Behaviour::Reply {
        text: None,
        delay: Duration::from_millis(600),
        chunk_delay: Duration::ZERO,
    });
    let home = TestHome::new();
    home.write_config(&config_for(&[("llm", &fake, Wire::Ollama)]));
    let server = home.start(&[]);
    let url = server.url("");

    let sent = home.run_wrapped(
        &["python3", helper],
        &["send", "spin for me", "--backend", "llm", "--url", &url],
    );
    assert_eq!(sent.code(), Some(0), "{sent:?}");
    // stdout is not the terminal: it holds the answer alone.
    assert_eq!(sent.stdout, "ollama says: spin for me\n");
    let shown = &sent.stderr;
    let frames: std::collections::BTreeSet<char> = shown
        .match_indices(" waiting for the model")
        .filter_map(|(at, _)| shown[..at].chars().next_back())
        .collect();
    assert!(
        frames.len() >= 2 && frames.iter().all(|f| "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏".contains(*f)),
        "the spinner did not turn: {shown:?}"
    );
    let last_frame = shown.rfind("waiting for the model").unwrap();
    assert!(
        shown[last_frame..].contains("\r\x1b[2K"),
        "the spinner's line was not erased after its last frame: {shown:?}"
    );
}
