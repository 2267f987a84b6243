//! The SQLite store under load and across processes: sessions survive a restart and a SIGKILL right
//! after an answer, in owner-only files; the WAL stays bounded under a steady stream of writes;
//! `storage.url` picks the database file in each of its forms, in WAL mode; and with another
//! process holding the write lock the backend is still asked at once while the answer waits for the
//! question to be stored, and reads go on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::TestHome;
use serde_json::json;
use testkit::fake_backends::{Behaviour, FakeBackend, Wire};

use super::{
    backend_entry, create_session, pairs, roles_and_contents, send, send_in_background,
    start_with_backends,
};

#[tokio::test(flavor = "multi_thread")]
async fn sessions_survive_a_restart_and_a_sigkill_right_after_an_answer() {
    let home = TestHome::new();
    let mut server = home.start(&[]);
    let session = create_session(&server, json!({"backends": ["echo"], "name": "kept"})).await;
    let (status, _) = send(&server, &session, json!({"content": "before restart"})).await;
    assert_eq!(status, 200);
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(6)).is_some());

    let mut server = home.start(&[]);
    let restored = server.get_json(&format!("/sessions/{session}")).await;
    assert_eq!(restored["name"], "kept");
    assert_eq!(restored["message_count"], 2);

    // Acknowledged, then killed at once: every acknowledged message is there afterwards.
    let mut acknowledged = Vec::new();
    for index in 0..20 {
        let text = format!("burst {index}");
        let (status, _) = send(&server, &session, json!({"content": text})).await;
        assert_eq!(status, 200);
        acknowledged.push(text);
    }
    server.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());

    let server = home.start(&[]);
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    let stored = roles_and_contents(&messages);
    assert_eq!(stored.len(), 2 + 2 * acknowledged.len());
    for text in &acknowledged {
        assert!(
            stored.contains(&("assistant".to_owned(), text.clone())),
            "{text} lost"
        );
    }
    assert!(
        default_database(&home).exists(),
        "the database is in the XDG data directory"
    );
    // Every conversation is in there: only its owner may read it, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let database = default_database(&home);
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(database.parent().unwrap()), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", database.display()));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

/// The default database of `home`.
fn default_database(home: &TestHome) -> std::path::PathBuf {
    home.path().join(".local/share/lit-mux/lit-mux.db")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wal_stays_bounded_under_a_steady_stream_of_messages() {
    // A checkpoint only lets SQLite start the WAL over once it has caught up with the writes;
    // one running beside a steady stream of them never does, and the WAL then grew by every
    // commit (~45 KB a message here: 70 MB for these 1,500). lit-mux starts it over once it
    // holds `max_wal_mb`.
    let home = TestHome::new();
    home.write_config("storage:\n  max_wal_mb: 4\n");
    let server = home.start(&[]);
    let mut clients = Vec::new();
    for client in 0..2 {
        let session = create_session(&server, json!({"backends": ["echo"]})).await;
        let url = server.url(&format!("/sessions/{session}/message"));
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for index in 0..750 {
                let response = http
                    .post(&url)
                    .json(&json!({"content": format!("client {client} message {index}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
            session
        }));
    }
    let mut sessions = Vec::new();
    for client in clients {
        sessions.push(client.await.unwrap());
    }
    for session in &sessions {
        let stored = server.get_json(&format!("/sessions/{session}")).await;
        assert_eq!(stored["message_count"], 1500, "{stored}");
    }
    let wal = default_database(&home).with_extension("db-wal");
    let size = std::fs::metadata(&wal).unwrap().len();
    assert!(
        size < 16 << 20,
        "the WAL grew to {size} bytes over 3,000 messages"
    );
}

/// Another process (python3's sqlite3) that takes SQLite's write lock on `home`'s database and
/// holds it until its stdin is closed; it then rolls back and exits 0.
fn hold_write_lock(home: &TestHome) -> std::process::Child {
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             db.execute('BEGIN IMMEDIATE')\n\
             print('locked', flush=True)\n\
             sys.stdin.readline()\n\
             db.execute('ROLLBACK')\n",
        )
        .arg(default_database(home))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut said,
    )
    .unwrap();
    assert_eq!(said.trim(), "locked");
    holder
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_is_asked_while_the_question_is_written_and_the_answer_waits_for_it() {
    // The user's message is committed while the backend works on it; the client hears back
    // only once both are stored, and a failure is marked on a message that exists by then.
    let fake = FakeBackend::start(Wire::OpenAi).await;
    let home = TestHome::new();
    let server = start_with_backends(&home, &[backend_entry("fake", &fake, Wire::OpenAi, "")], "");
    let session = create_session(&server, json!({"backends": ["fake"]})).await;
    for (round, fails) in [(0, false), (1, true)] {
        fake.clear_requests();
        fake.set_behaviour(if fails {
            Behaviour::Fail {
                status: 500,
                message: "the model crashed".to_owned(),
            }
        } else {
            Behaviour::default()
        });
        let mut holder = hold_write_lock(&home);
        let sending = send_in_background(
            &server,
            &session,
            json!({"content": format!("question {round}")}),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while fake.chat_requests().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the backend was not asked while the write lock was held"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The backend has answered (or failed); the question is not committed yet.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !sending.is_finished(),
            "answered before the question was stored"
        );
        drop(holder.stdin.take());
        let (status, answer) = sending.await.unwrap();
        assert!(holder.wait().unwrap().success());
        let messages = server
            .get_json(&format!("/sessions/{session}/messages"))
            .await;
        let question = messages
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["content"] == format!("question {round}"))
            .unwrap_or_else(|| panic!("question {round} was not stored: {messages}"));
        if fails {
            assert_eq!(status, 502, "{answer}");
            assert_eq!(question["metadata"]["status"], "failed", "{question}");
        } else {
            assert_eq!(status, 200, "{answer}");
            assert_eq!(question["metadata"].get("status"), None, "{question}");
        }
    }
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    assert_eq!(
        roles_and_contents(&messages),
        pairs(&[
            ("user", "question 0"),
            ("assistant", "openai says: question 0"),
            ("user", "question 1"),
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_waits_for_another_process_holding_the_write_lock() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let session = create_session(&server, json!({"backends": ["echo"]})).await;
    let (status, _) = send(&server, &session, json!({"content": "before the lock"})).await;
    assert_eq!(status, 200);

    let mut holder = hold_write_lock(&home);
    let sending = send_in_background(&server, &session, json!({"content": "while locked"}));
    // Reads need no lock in WAL mode: the session is readable meanwhile.
    let during = server.get_json(&format!("/sessions/{session}")).await;
    assert_eq!(during["message_count"], 2, "{during}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !sending.is_finished(),
        "the message did not wait for the lock"
    );

    let released = Instant::now();
    drop(holder.stdin.take()); // readline returns: the holder rolls back and exits.
    let (status, answer) = sending.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], "while locked");
    assert!(released.elapsed() < Duration::from_secs(3));
    assert!(holder.wait().unwrap().success());
    let messages = server
        .get_json(&format!("/sessions/{session}/messages"))
        .await;
    assert_eq!(
        roles_and_contents(&messages),
        pairs(&[
            ("user", "before the lock"),
            ("assistant", "before the lock"),
            ("user", "while locked"),
            ("assistant", "while locked"),
        ])
    );
}

/// The database file's journal mode as its header records it: bytes 18 and 19 are 2 in WAL mode
/// (1 with a rollback journal).
fn header_journal_bytes(path: &std::path::Path) -> [u8; 2] {
    let bytes = std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    assert!(bytes.len() >= 100, "{} has no header", path.display());
    [bytes[18], bytes[19]]
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_url_chooses_the_database_file_in_each_form_and_it_is_in_wal_mode() {
    for form in ["path", "sqlite://", "sqlite:"] {
        let home = TestHome::new();
        let file = home.path().join(format!("elsewhere/{}.db", form.len()));
        let url = match form {
            "path" => file.display().to_string(),
            prefix => format!("{prefix}{}", file.display()),
        };
        home.write_config(&format!("storage:\n  url: '{url}'\n"));
        let mut server = home.start(&[]);
        let session = create_session(&server, json!({"backends": ["echo"], "name": form})).await;
        let (status, _) = send(&server, &session, json!({"content": "kept here"})).await;
        assert_eq!(status, 200);
        let wal = file.with_extension("db-wal");
        assert!(
            file.exists() && wal.exists(),
            "{url}: {} and its -wal file",
            file.display()
        );
        server.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(server.wait_exit(Duration::from_secs(10)).is_some());
        assert_eq!(header_journal_bytes(&file), [2, 2], "{url}: WAL mode");
        assert!(
            !default_database(&home).exists(),
            "{url}: the default database was created too"
        );

        let server = home.start(&[]);
        let restored = server.get_json(&format!("/sessions/{session}")).await;
        assert_eq!(restored["name"], form, "{url}");
        let messages = server
            .get_json(&format!("/sessions/{session}/messages"))
            .await;
        assert_eq!(
            roles_and_contents(&messages),
            pairs(&[("user", "kept here"), ("assistant", "kept here")]),
            "{url}"
        );
    }
}
