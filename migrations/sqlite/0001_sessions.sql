-- Sessions and their messages. JSON values (backends, metadata) are stored as text;
-- timestamps as RFC 3339 UTC text with microseconds, which sorts in time order.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT,
    backends      TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX sessions_newest_first ON sessions (created_at DESC);

CREATE TABLE messages (
    -- Insertion order: the conversation's order, even for equal timestamps.
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    backend    TEXT,
    model      TEXT,
    timestamp  TEXT NOT NULL,
    metadata   TEXT NOT NULL
);

CREATE INDEX messages_by_session ON messages (session_id, seq);
