-- Appending a message updates its session in the same statement, so that an append is one
-- statement (one round trip to the database) instead of a four-statement transaction.
CREATE TRIGGER messages_touch_session AFTER INSERT ON messages
BEGIN
    UPDATE sessions
    SET updated_at = NEW.timestamp, message_count = message_count + 1
    WHERE id = NEW.session_id;
END;
