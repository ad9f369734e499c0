-- Sessions that can be ended: accounts can be disabled, and every login is a session (the
-- family of its refresh tokens) whose access tokens stop working when it is revoked or when
-- its user's session version moves past it (password change, revoke-all, disabling).

ALTER TABLE users ADD COLUMN is_active BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE users ADD COLUMN session_version BIGINT NOT NULL DEFAULT 0;

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    version    BIGINT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Logins from before sessions existed keep working until their tokens expire.
INSERT INTO sessions (id, user_id, version, started_at)
    SELECT family, MIN(user_id), 0, now() FROM refresh_tokens GROUP BY family;
