-- 0003_signing_keys: the ES256 keys that sign and verify the API's tokens (engine-wide).
--
-- kid is the RFC 7638 thumbprint of the public key. The private key is PKCS8, encrypted with
-- AES-256-GCM under the engine's master key (nonce || ciphertext, the kid as associated data).
-- Exactly one key signs (signing_until IS NULL); on rotation it stops signing at once and
-- keeps verifying until verify_until (now + the overlap). Only admin transactions see the rows.

CREATE TABLE fleet_signing_keys (
    kid             TEXT PRIMARY KEY,
    public_jwk      JSONB NOT NULL,
    private_key_enc BYTEA NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    not_before      TIMESTAMPTZ NOT NULL DEFAULT now(),
    signing_until   TIMESTAMPTZ,
    verify_until    TIMESTAMPTZ,
    CONSTRAINT valid_signing_key_kid CHECK (kid <> ''),
    CONSTRAINT valid_signing_key_window CHECK (
        verify_until IS NULL OR signing_until IS NULL OR verify_until >= signing_until)
);

-- At most one key signs at a time.
CREATE UNIQUE INDEX fleet_signing_keys_one_signer ON fleet_signing_keys ((true))
    WHERE signing_until IS NULL;

ALTER TABLE fleet_signing_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_signing_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_signing_keys_admin ON fleet_signing_keys
    USING (current_setting('app.is_admin', true) = 'true')
    WITH CHECK (current_setting('app.is_admin', true) = 'true');

GRANT SELECT, INSERT, UPDATE, DELETE ON fleet_signing_keys TO fleet_engine;
