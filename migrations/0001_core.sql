-- 0001_core: tasks, notifications, per-operator config, outbox, audit trail; RLS for all.
--
-- Runs as the owner role. The engine connects as `fleet_engine` (LOGIN, NOSUPERUSER,
-- NOBYPASSRLS, owns nothing); every table below has ENABLE + FORCE ROW LEVEL SECURITY,
-- and the tenant is read from the transaction-local settings app.operator_id / app.is_admin
-- (set with set_config(..., true) by fleet_core.db.database.Database.tx).
-- Expand/contract: later migrations only add; a column is dropped one release after the
-- code stops reading it.

CREATE FUNCTION fleet_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE fleet_tasks (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    operator_id       TEXT NOT NULL,
    agent_type        TEXT NOT NULL,
    model             TEXT NOT NULL,
    task_type         TEXT NOT NULL,
    description       TEXT NOT NULL,
    branch            TEXT NOT NULL,
    repository        TEXT NOT NULL,
    base_branch       TEXT,
    worktree_path     TEXT,
    container_id      TEXT,
    tmux_session      TEXT,
    host_id           TEXT,
    status            TEXT NOT NULL DEFAULT 'proposed',
    version           INTEGER NOT NULL DEFAULT 0,
    pr_number         INTEGER,
    ci_status         TEXT,
    review_status     JSONB,
    retry_count       INTEGER NOT NULL DEFAULT 0,
    max_retries       INTEGER NOT NULL DEFAULT 3,
    timeout_minutes   INTEGER NOT NULL DEFAULT 120,
    context_hash      TEXT,
    prompt_hash       TEXT,
    idempotency_key   TEXT,
    context_overrides JSONB NOT NULL DEFAULT '{}'::jsonb,
    failure_context   JSONB,
    agent_identity_id UUID,
    group_id          UUID,
    last_activity_at  TIMESTAMPTZ,
    spawned_at        TIMESTAMPTZ,
    completed_at      TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT valid_operator_id CHECK (operator_id <> ''),
    CONSTRAINT valid_status CHECK (status IN (
        'proposed', 'spawning', 'running', 'pr_created', 'reviewing', 'ready',
        'merged', 'failed', 'retrying', 'abandoned', 'rejected', 'cancelled')),
    CONSTRAINT valid_agent_type CHECK (agent_type IN (
        'claude_code', 'codex', 'gemini', 'aider', 'demo', 'custom')),
    CONSTRAINT valid_task_type CHECK (task_type IN (
        'bug_fix', 'feature', 'refactor', 'review', 'docs')),
    CONSTRAINT valid_retry_count CHECK (retry_count >= 0 AND retry_count <= max_retries),
    CONSTRAINT valid_max_retries CHECK (max_retries >= 0 AND max_retries <= 10),
    CONSTRAINT valid_timeout_minutes CHECK (timeout_minutes BETWEEN 5 AND 480),
    CONSTRAINT valid_ci_status CHECK (ci_status IN ('pending', 'passing', 'failing')),
    CONSTRAINT valid_pr_number CHECK (pr_number > 0),
    CONSTRAINT valid_version CHECK (version >= 0),
    CONSTRAINT valid_branch CHECK (branch <> '' AND length(branch) <= 128),
    CONSTRAINT fleet_tasks_idempotency_key UNIQUE (operator_id, idempotency_key)
);

CREATE INDEX fleet_tasks_operator_idx ON fleet_tasks (operator_id);
CREATE INDEX fleet_tasks_status_idx ON fleet_tasks (status);
CREATE INDEX fleet_tasks_branch_idx ON fleet_tasks (branch);
CREATE INDEX fleet_tasks_created_at_idx ON fleet_tasks (created_at DESC);
CREATE INDEX fleet_tasks_slot_holding_idx ON fleet_tasks (operator_id, status)
    WHERE status IN ('proposed', 'spawning', 'running', 'pr_created', 'reviewing', 'retrying');
CREATE INDEX fleet_tasks_context_hash_idx ON fleet_tasks (context_hash)
    WHERE context_hash IS NOT NULL;
CREATE INDEX fleet_tasks_agent_identity_idx ON fleet_tasks (agent_identity_id)
    WHERE agent_identity_id IS NOT NULL;

CREATE TRIGGER fleet_tasks_updated_at BEFORE UPDATE ON fleet_tasks
    FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

CREATE TABLE fleet_notifications (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id      UUID NOT NULL REFERENCES fleet_tasks (id) ON DELETE CASCADE,
    channel      TEXT NOT NULL,
    payload      JSONB NOT NULL,
    delivered    BOOLEAN NOT NULL DEFAULT false,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    delivered_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT valid_channel CHECK (channel IN ('discord', 'telegram', 'cli')),
    CONSTRAINT valid_attempts CHECK (attempts >= 0)
);

CREATE INDEX fleet_notifications_task_idx ON fleet_notifications (task_id);
CREATE INDEX fleet_notifications_undelivered_idx ON fleet_notifications (delivered, created_at)
    WHERE delivered = false;

CREATE TABLE fleet_config (
    operator_id             TEXT PRIMARY KEY,
    discord_webhook_url     TEXT,
    telegram_bot_token      TEXT,
    telegram_chat_id        TEXT,
    notify_on_spawn         BOOLEAN NOT NULL DEFAULT true,
    notify_on_complete      BOOLEAN NOT NULL DEFAULT true,
    notify_on_failure       BOOLEAN NOT NULL DEFAULT true,
    default_max_retries     INTEGER NOT NULL DEFAULT 3,
    default_timeout_minutes INTEGER NOT NULL DEFAULT 120,
    preferred_model         TEXT,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT valid_config_operator_id CHECK (operator_id <> ''),
    CONSTRAINT valid_default_max_retries CHECK (default_max_retries BETWEEN 0 AND 10),
    CONSTRAINT valid_default_timeout_minutes CHECK (default_timeout_minutes BETWEEN 5 AND 480)
);

CREATE TRIGGER fleet_config_updated_at BEFORE UPDATE ON fleet_config
    FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

CREATE TABLE fleet_outbox (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    operator_id  TEXT NOT NULL,
    event_type   VARCHAR(64) NOT NULL,
    payload      JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at TIMESTAMPTZ,
    retry_count  INTEGER NOT NULL DEFAULT 0,
    dedup_key    VARCHAR(128),
    error        TEXT,
    CONSTRAINT valid_outbox_operator_id CHECK (operator_id <> ''),
    CONSTRAINT fleet_outbox_dedup_key UNIQUE (dedup_key)
);

CREATE INDEX fleet_outbox_pending_idx ON fleet_outbox (created_at ASC)
    WHERE processed_at IS NULL;

-- Append-only trail (INV-016): the engine may insert and read, never change or delete.
-- No foreign key: the trail outlives the task row.
CREATE TABLE fleet_audit (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id       UUID,
    operator_id   TEXT NOT NULL,
    resource_type TEXT NOT NULL DEFAULT 'fleet',
    event_type    TEXT NOT NULL,
    from_status   TEXT,
    to_status     TEXT,
    detail        JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT valid_audit_operator_id CHECK (operator_id <> ''),
    CONSTRAINT valid_audit_event_type CHECK (event_type LIKE 'fleet.%')
);

CREATE INDEX fleet_audit_task_idx ON fleet_audit (task_id, created_at);
CREATE INDEX fleet_audit_operator_idx ON fleet_audit (operator_id, created_at DESC);

-- Row-level security -----------------------------------------------------------------------

ALTER TABLE fleet_tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_tasks_tenant ON fleet_tasks
    USING (operator_id = current_setting('app.operator_id', true)
           OR current_setting('app.is_admin', true) = 'true')
    WITH CHECK (operator_id = current_setting('app.operator_id', true)
                OR current_setting('app.is_admin', true) = 'true');

ALTER TABLE fleet_notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_notifications FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_notifications_tenant ON fleet_notifications
    USING (EXISTS (SELECT 1 FROM fleet_tasks t WHERE t.id = fleet_notifications.task_id))
    WITH CHECK (EXISTS (SELECT 1 FROM fleet_tasks t WHERE t.id = fleet_notifications.task_id));

ALTER TABLE fleet_config ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_config FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_config_tenant ON fleet_config
    USING (operator_id = current_setting('app.operator_id', true)
           OR current_setting('app.is_admin', true) = 'true')
    WITH CHECK (operator_id = current_setting('app.operator_id', true)
                OR current_setting('app.is_admin', true) = 'true');

ALTER TABLE fleet_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_outbox_tenant ON fleet_outbox
    USING (operator_id = current_setting('app.operator_id', true)
           OR current_setting('app.is_admin', true) = 'true')
    WITH CHECK (operator_id = current_setting('app.operator_id', true)
                OR current_setting('app.is_admin', true) = 'true');

ALTER TABLE fleet_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_audit FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_audit_tenant ON fleet_audit
    USING (operator_id = current_setting('app.operator_id', true)
           OR current_setting('app.is_admin', true) = 'true')
    WITH CHECK (operator_id = current_setting('app.operator_id', true)
                OR current_setting('app.is_admin', true) = 'true');

-- The engine's privileges --------------------------------------------------------------------

GRANT SELECT, INSERT, UPDATE, DELETE ON fleet_tasks, fleet_notifications, fleet_config,
    fleet_outbox TO fleet_engine;
GRANT SELECT, INSERT ON fleet_audit TO fleet_engine;
