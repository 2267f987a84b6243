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
