-- 0004_tokens: every API token issued, by its jti, so that a token can be revoked and a
-- token that was never recorded (issued before this table existed) is refused.
--
-- Written when a token is issued (before it is handed out); `revoked_at` set once by an admin.
-- Servers read a token's row (with the operator's stored tier) at most every few tens of
-- seconds per token, so a revocation or a downgrade binds on every server within a minute.
-- Only admin transactions see or change the rows.

CREATE TABLE fleet_tokens (
    jti         TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL,
    tier        TEXT NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ,
    CONSTRAINT valid_token_jti CHECK (jti <> '' AND length(jti) <= 128),
    CONSTRAINT valid_token_operator_id CHECK (operator_id <> ''),
    CONSTRAINT valid_token_tier CHECK (tier IN (
        'observer', 'participant', 'builder', 'architect', 'sovereign')),
    CONSTRAINT valid_token_lifetime CHECK (expires_at > issued_at)
);

CREATE INDEX fleet_tokens_issued_idx ON fleet_tokens (issued_at DESC);

ALTER TABLE fleet_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_tokens_admin ON fleet_tokens
    USING (current_setting('app.is_admin', true) = 'true')
    WITH CHECK (current_setting('app.is_admin', true) = 'true');

GRANT SELECT, INSERT, UPDATE, DELETE ON fleet_tokens TO fleet_engine;
