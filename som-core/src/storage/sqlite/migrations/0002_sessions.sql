-- Sessions that can be ended: accounts can be disabled, and every login is a session (the
-- family of its refresh tokens) whose access tokens stop working when it is revoked or when
-- its user's session version moves past it (password change, revoke-all, disabling).

ALTER TABLE users ADD COLUMN is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1));
ALTER TABLE users ADD COLUMN session_version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    version    INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Logins from before sessions existed keep working until their tokens expire.
INSERT INTO sessions (id, user_id, version, started_at)
    SELECT family, MIN(user_id), 0, CAST(strftime('%s', 'now') AS INTEGER) * 1000000
    FROM refresh_tokens GROUP BY family;
