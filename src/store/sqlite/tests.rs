//! The [`Store`] contract, checked on the SQLite store: atomic appends, write order, pages.

use futures_util::FutureExt;
use serde_json::json;

use super::*;
use crate::store::NewMessage;

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("lit-mux.db"), 1 << 20)
        .await
        .unwrap();
    (dir, store)
}

fn message(content: &str) -> Message {
    Message::unsaved(NewMessage {
        role: "user",
        content,
        backend: None,
        model: None,
        metadata: Map::new(),
    })
}

fn contents(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

async fn new_session(store: &SqliteStore) -> Session {
    store
        .create_session(Some("test"), &["echo".to_owned()], &Map::new(), &Map::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_messages_of_one_append_land_in_order_and_count_in_their_session() {
    let (_dir, store) = open().await;
    let session = new_session(&store).await;
    let step = [message("a"), message("b"), message("c")];
    store.append_messages(&session.id, &step).await.unwrap();

    let stored = store.messages(&session.id, Page::default()).await.unwrap();
    assert_eq!(contents(&stored), ["a", "b", "c"]);
    assert_eq!(store.session(&session.id).await.unwrap().message_count, 3);
    store.close().await;
}

#[tokio::test]
async fn an_append_with_one_bad_message_stores_none_of_them() {
    let (_dir, store) = open().await;
    let session = new_session(&store).await;
    let first = message("first");
    store
        .append_messages(&session.id, std::slice::from_ref(&first))
        .await
        .unwrap();
    // The second message reuses an id: the whole append fails, its first message included.
    let mut duplicate = message("duplicate");
    duplicate.id = first.id.clone();
    let outcome = store
        .append_messages(&session.id, &[message("lost"), duplicate])
        .await;

    assert!(
        matches!(outcome, Err(StoreError::Refused(_))),
        "{outcome:?}"
    );
    let stored = store.messages(&session.id, Page::default()).await.unwrap();
    assert_eq!(contents(&stored), ["first"]);
    store.close().await;
}

#[tokio::test]
async fn an_append_larger_than_one_statement_is_still_one_transaction() {
    let (_dir, store) = open().await;
    let session = new_session(&store).await;
    let many: Vec<Message> = (0..writer::MAX_ROWS + 3)
        .map(|n| message(&n.to_string()))
        .collect();
    store.append_messages(&session.id, &many).await.unwrap();
    assert_eq!(
        store.session(&session.id).await.unwrap().message_count,
        i64::try_from(many.len()).unwrap()
    );

    let others: Vec<Message> = many.iter().map(|m| message(&m.content)).collect();
    let outcome = store.append_messages("no-such-session", &others).await;
    assert!(
        matches!(outcome, Err(StoreError::SessionNotFound(_))),
        "{outcome:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn an_append_to_a_missing_session_is_session_not_found() {
    let (_dir, store) = open().await;
    let outcome = store.append_message(
        "no-such-session",
        NewMessage {
            role: "user",
            content: "hello",
            backend: None,
            model: None,
            metadata: Map::new(),
        },
    );
    match outcome.await {
        Err(StoreError::SessionNotFound(id)) => assert_eq!(id, "no-such-session"),
        other => panic!("{other:?}"),
    }
    store.close().await;
}

#[tokio::test]
async fn an_append_polled_once_then_dropped_still_lands_before_a_later_update() {
    let (_dir, store) = open().await;
    let session = new_session(&store).await;
    let mut question = message("question");
    // One poll issues the write; the caller then stops waiting for it.
    let first_poll = store
        .append_messages(&session.id, std::slice::from_ref(&question))
        .now_or_never();
    assert!(first_poll.is_none(), "committed without waiting");
    store
        .update_message_metadata(
            &mut question,
            Map::from_iter([("status".to_owned(), json!("failed"))]),
        )
        .await
        .unwrap();

    let stored = store.messages(&session.id, Page::default()).await.unwrap();
    assert_eq!(contents(&stored), ["question"]);
    assert_eq!(stored[0].metadata["status"], "failed");
    store.close().await;
}

#[tokio::test]
async fn pages_have_an_optional_limit_and_an_offset() {
    let (_dir, store) = open().await;
    let session = new_session(&store).await;
    let all: Vec<Message> = (0..5).map(|n| message(&n.to_string())).collect();
    store.append_messages(&session.id, &all).await.unwrap();

    let page = |limit, offset| Page { limit, offset };
    let read = |page| store.messages(&session.id, page);
    assert_eq!(
        contents(&read(page(None, 0)).await.unwrap()),
        ["0", "1", "2", "3", "4"]
    );
    assert_eq!(contents(&read(page(None, 3)).await.unwrap()), ["3", "4"]);
    assert_eq!(contents(&read(page(Some(2), 1)).await.unwrap()), ["1", "2"]);
    assert_eq!(
        contents(&read(page(Some(0), 0)).await.unwrap()),
        Vec::<&str>::new()
    );
    assert!(read(page(None, u64::MAX)).await.unwrap().is_empty());

    let sessions = store.list_sessions(page(Some(1), 0)).await.unwrap();
    assert_eq!(sessions.len(), 1);
    store.close().await;
}

#[tokio::test]
async fn the_context_is_the_last_messages_oldest_first_with_their_session() {
    let (_dir, store) = open().await;
    let session = new_session(&store).await;
    let all: Vec<Message> = (0..5).map(|n| message(&n.to_string())).collect();
    store.append_messages(&session.id, &all).await.unwrap();

    let (read, context) = store.session_with_context(&session.id, 2).await.unwrap();
    assert_eq!(read.id, session.id);
    let texts: Vec<&str> = context.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["3", "4"]);
    assert!(matches!(
        store.session_with_context("no-such-session", 2).await,
        Err(StoreError::SessionNotFound(_))
    ));
    store.close().await;
}

#[tokio::test]
async fn after_close_writes_fail_as_closed() {
    let (_dir, store) = open().await;
    let session = new_session(&store).await;
    store.close().await;
    let outcome = store.append_messages(&session.id, &[message("late")]).await;
    assert!(matches!(outcome, Err(StoreError::Closed)), "{outcome:?}");
}

#[tokio::test]
async fn an_answer_settles_its_question_in_its_commit_and_pending_questions_are_interrupted_at_start()
 {
    let (dir, store) = open().await;
    let session = new_session(&store).await;
    let pending = || Map::from_iter([("status".to_owned(), json!("pending"))]);
    let with = |role: &str, content: &str, metadata: Map<String, Value>| {
        Message::unsaved(NewMessage {
            role,
            content,
            backend: None,
            model: None,
            metadata,
        })
    };
    let answered = with("user", "answered", pending());
    let in_flight = with("user", "in flight", pending());
    // Not a question: never touched, whatever its metadata says.
    let odd_answer = with("assistant", "odd", pending());
    store
        .append_messages(&session.id, &[answered.clone(), in_flight, odd_answer])
        .await
        .unwrap();
    store
        .append_settling(
            &session.id,
            &[with("assistant", "the answer", Map::new())],
            &answered.id,
            &Map::from_iter([("kept".to_owned(), json!(true))]),
        )
        .await
        .unwrap();
    store.close().await;

    let store = SqliteStore::open(&dir.path().join("lit-mux.db"), 1 << 20)
        .await
        .unwrap();
    assert_eq!(store.interrupt_pending().await.unwrap(), 1);
    assert_eq!(store.interrupt_pending().await.unwrap(), 0);
    let stored = store.messages(&session.id, Page::default()).await.unwrap();
    let status = |at: usize| stored[at].metadata.get("status").cloned();
    assert_eq!(
        contents(&stored),
        ["answered", "in flight", "odd", "the answer"]
    );
    assert_eq!(status(0), None);
    assert_eq!(stored[0].metadata.get("kept"), Some(&json!(true)));
    assert_eq!(status(1), Some(json!("interrupted")));
    assert!(stored[1].metadata.contains_key("error"));
    assert_eq!(status(2), Some(json!("pending")));
    let context = store.context_messages(&session.id, 10).await.unwrap();
    assert!(context[1].interrupted && !context[1].failed);
    assert!(!context[0].interrupted && !context[2].interrupted);
    store.close().await;
}
