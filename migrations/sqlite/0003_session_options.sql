-- A session's default generation options (temperature, max_tokens, stop...) as a JSON object:
-- every message of the session starts from them, and overrides them option by option.
ALTER TABLE sessions ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
