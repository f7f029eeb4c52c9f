-- 0006_secrets: each operator's secrets for their agents, and the master key's fingerprint.
--
-- A secret's value is encrypted with AES-256-GCM under the engine's master key
-- (FLEET_KEY_ENCRYPTION_KEY, else <data_dir>/keys/master.key), with "operator_id NUL name" as
-- associated data, so a row copied to another operator or name does not decrypt. Every engine
-- that shares the database reads them (a retry on another host gets the same values); the
-- fingerprint of the key first used is stored once, and an engine with another key is refused.

CREATE TABLE fleet_secrets (
    operator_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    set_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT fleet_secrets_pkey PRIMARY KEY (operator_id, name),
    CONSTRAINT valid_secret_operator_id CHECK (operator_id <> ''),
    CONSTRAINT valid_secret_name CHECK (name ~ '^[A-Z_][A-Z0-9_]{0,127}$'),
    CONSTRAINT valid_secret_nonce CHECK (octet_length(nonce) = 12),
    CONSTRAINT valid_secret_ciphertext CHECK (octet_length(ciphertext) > 16)
);

CREATE TRIGGER fleet_secrets_updated_at BEFORE UPDATE ON fleet_secrets
    FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

ALTER TABLE fleet_secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_secrets_tenant ON fleet_secrets
    USING (operator_id = current_setting('app.operator_id', true)
           OR current_setting('app.is_admin', true) = 'true')
    WITH CHECK (operator_id = current_setting('app.operator_id', true)
                OR current_setting('app.is_admin', true) = 'true');

GRANT SELECT, INSERT, UPDATE, DELETE ON fleet_secrets TO fleet_engine;

-- One row: the fingerprint (truncated SHA-256) of the master key the data was encrypted with.
CREATE TABLE fleet_master_key (
    id          BOOLEAN PRIMARY KEY DEFAULT true,
    fingerprint TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT one_master_key CHECK (id),
    CONSTRAINT valid_master_key_fingerprint CHECK (fingerprint ~ '^[0-9a-f]{16}$')
);

ALTER TABLE fleet_master_key ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_master_key FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_master_key_admin ON fleet_master_key
    USING (current_setting('app.is_admin', true) = 'true')
    WITH CHECK (current_setting('app.is_admin', true) = 'true');

GRANT SELECT, INSERT ON fleet_master_key TO fleet_engine;
