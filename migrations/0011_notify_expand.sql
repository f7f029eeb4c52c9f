-- 0011_notify_expand: the outbox worker's columns, per-channel delivery records, and the
-- operators' channel settings (secrets encrypted with the master key).
--
-- Expand step of expand / copy / contract: nothing is dropped here. 0012 copies the plaintext
-- fleet_config.discord_webhook_url / telegram_* values into fleet_notify_channels (to be
-- sealed by the engine at start), 0013 drops the plaintext columns.
-- The tables FORCE row-level security, also for their owner: see every row (this transaction only).
SELECT set_config('app.is_admin', 'true', true);

-- The outbox: when a row is next due, who holds it (a lease: an engine that dies releases it
-- when the lease runs out, or at its own restart), and when it was given up (dead-lettered).
-- `published_at`: when the event reached NATS JetStream (published in order, by one engine at
-- a time; NULL while NATS is not configured or down).
ALTER TABLE fleet_outbox
    ADD COLUMN next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN locked_by       TEXT,
    ADD COLUMN locked_until    TIMESTAMPTZ,
    ADD COLUMN dead_at         TIMESTAMPTZ,
    ADD COLUMN published_at    TIMESTAMPTZ;

CREATE INDEX fleet_outbox_unpublished_idx ON fleet_outbox (created_at, id)
    WHERE published_at IS NULL;

CREATE INDEX fleet_outbox_due_idx ON fleet_outbox (next_attempt_at, created_at)
    WHERE processed_at IS NULL AND dead_at IS NULL;
CREATE INDEX fleet_outbox_dead_idx ON fleet_outbox (dead_at) WHERE dead_at IS NOT NULL;

-- A new row wakes the workers (LISTEN fleet_outbox); they poll as well.
CREATE FUNCTION fleet_outbox_wake() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fleet_outbox', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER fleet_outbox_wake AFTER INSERT ON fleet_outbox
    FOR EACH ROW EXECUTE FUNCTION fleet_outbox_wake();

-- Delivery records: one per (outbox event, channel); they outlive a deleted task.
ALTER TABLE fleet_notifications
    ADD COLUMN outbox_id       UUID REFERENCES fleet_outbox (id) ON DELETE CASCADE,
    ADD COLUMN operator_id     TEXT,
    ADD COLUMN event_type      TEXT,
    ADD COLUMN last_status     INTEGER,
    ADD COLUMN next_attempt_at TIMESTAMPTZ,
    ADD COLUMN dead_at         TIMESTAMPTZ,
    ADD COLUMN updated_at      TIMESTAMPTZ NOT NULL DEFAULT now();

UPDATE fleet_notifications n SET operator_id = t.operator_id
  FROM fleet_tasks t WHERE t.id = n.task_id;

ALTER TABLE fleet_notifications
    ALTER COLUMN operator_id SET NOT NULL,
    ADD CONSTRAINT valid_notification_operator_id CHECK (operator_id <> ''),
    ALTER COLUMN task_id DROP NOT NULL,
    DROP CONSTRAINT fleet_notifications_task_id_fkey,
    ADD CONSTRAINT fleet_notifications_task_id_fkey FOREIGN KEY (task_id)
        REFERENCES fleet_tasks (id) ON DELETE SET NULL,
    DROP CONSTRAINT valid_channel,
    ADD CONSTRAINT valid_channel CHECK (channel IN ('discord', 'telegram', 'desktop', 'cli', 'nats'));

CREATE UNIQUE INDEX fleet_notifications_outbox_channel
    ON fleet_notifications (outbox_id, operator_id, channel)
    WHERE outbox_id IS NOT NULL;
CREATE INDEX fleet_notifications_dead_idx ON fleet_notifications (dead_at)
    WHERE dead_at IS NOT NULL;

CREATE TRIGGER fleet_notifications_updated_at BEFORE UPDATE ON fleet_notifications
    FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- The operator's own rows (a record without a task is still theirs).
DROP POLICY fleet_notifications_tenant ON fleet_notifications;
CREATE POLICY fleet_notifications_tenant ON fleet_notifications
    USING (operator_id = current_setting('app.operator_id', true)
           OR current_setting('app.is_admin', true) = 'true')
    WITH CHECK (operator_id = current_setting('app.operator_id', true)
                OR current_setting('app.is_admin', true) = 'true');

-- Each operator's channels. `secret_enc` is nonce (12 bytes) || AES-256-GCM ciphertext of the
-- Discord webhook URL or the Telegram bot token, with "operator NUL notify.<channel>" as
-- associated data; `target` is what is not secret (the Telegram chat id). `events`: the event
-- types this channel sends (NULL: the defaults, what needs the operator).
CREATE TABLE fleet_notify_channels (
    operator_id TEXT NOT NULL,
    channel     TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT true,
    target      TEXT,
    secret_enc  BYTEA,
    events      TEXT[],
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT fleet_notify_channels_pkey PRIMARY KEY (operator_id, channel),
    CONSTRAINT valid_notify_operator_id CHECK (operator_id <> ''),
    CONSTRAINT valid_notify_channel CHECK (channel IN ('discord', 'telegram', 'desktop', 'cli')),
    CONSTRAINT valid_notify_secret CHECK (secret_enc IS NULL OR octet_length(secret_enc) > 28),
    CONSTRAINT valid_notify_target CHECK (target IS NULL OR length(target) BETWEEN 1 AND 200)
);

CREATE TRIGGER fleet_notify_channels_updated_at BEFORE UPDATE ON fleet_notify_channels
    FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

ALTER TABLE fleet_notify_channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_notify_channels FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_notify_channels_tenant ON fleet_notify_channels
    USING (operator_id = current_setting('app.operator_id', true)
           OR current_setting('app.is_admin', true) = 'true')
    WITH CHECK (operator_id = current_setting('app.operator_id', true)
                OR current_setting('app.is_admin', true) = 'true');

GRANT SELECT, INSERT, UPDATE, DELETE ON fleet_notify_channels TO fleet_engine;
