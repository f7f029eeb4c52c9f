-- 0002_admission: the spawn queue, an operator's stored tier, and the admission gate's helpers.
--
-- A queued spawn is a row here, not a task: it holds no slot. Its order is its id (assigned
-- under the operator's lock; created_at is the time its transaction began). Admission takes the oldest entry
-- of an operator under the same advisory lock as a direct spawn, deletes it and inserts the
-- task in one transaction, so each entry becomes a task exactly once, whichever engine does it.

CREATE TABLE fleet_spawn_queue (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operator_id     TEXT NOT NULL,
    tier            TEXT NOT NULL,
    request         JSONB NOT NULL,
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT valid_queue_operator_id CHECK (operator_id <> ''),
    CONSTRAINT valid_queue_tier CHECK (tier IN (
        'observer', 'participant', 'builder', 'architect', 'sovereign')),
    CONSTRAINT fleet_spawn_queue_idempotency_key UNIQUE (operator_id, idempotency_key)
);

CREATE INDEX fleet_spawn_queue_order_idx ON fleet_spawn_queue (operator_id, id);

ALTER TABLE fleet_spawn_queue ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_spawn_queue FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_spawn_queue_tenant ON fleet_spawn_queue
    USING (operator_id = current_setting('app.operator_id', true)
           OR current_setting('app.is_admin', true) = 'true')
    WITH CHECK (operator_id = current_setting('app.operator_id', true)
                OR current_setting('app.is_admin', true) = 'true');

GRANT SELECT, INSERT, DELETE ON fleet_spawn_queue TO fleet_engine;

-- Set by an admin: the highest tier the operator may act with, whatever a token or the local
-- config claims. The gate reads it inside its own transaction (a downgrade binds at once).
ALTER TABLE fleet_config ADD COLUMN tier TEXT;
ALTER TABLE fleet_config ADD CONSTRAINT valid_config_tier CHECK (tier IN (
    'observer', 'participant', 'builder', 'architect', 'sovereign'));

-- Slot-holding tasks of every operator. RLS would show a tenant only its own rows; the global
-- cap needs them all, and this function reveals nothing but the count.
-- (A function-level `SET app.is_admin` needs superuser for a placeholder setting, so the
-- function sets it transaction-locally and puts the caller's value back.)
CREATE FUNCTION fleet_active_total(statuses TEXT[]) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    caller TEXT := coalesce(current_setting('app.is_admin', true), '');
    n BIGINT;
BEGIN
    PERFORM set_config('app.is_admin', 'true', true);
    SELECT count(*) INTO n FROM fleet_tasks WHERE status = ANY(statuses);
    PERFORM set_config('app.is_admin', caller, true);
    RETURN n;
END;
$$;

GRANT EXECUTE ON FUNCTION fleet_active_total(TEXT[]) TO fleet_engine;

-- The admission gate's first step, in one round trip: the operator's advisory lock (held to the
-- end of the transaction), then, under it, the operator's slot-holding and queued counts and
-- stored tier; with p_global, the global lock and the fleet-wide count as well. Each query in a
-- VOLATILE function takes a new snapshot, so under READ COMMITTED the counts see every
-- admission committed by whoever held the lock before.
CREATE FUNCTION fleet_admission_state(p_operator TEXT, p_statuses TEXT[], p_global BOOLEAN)
RETURNS TABLE (active BIGINT, queued BIGINT, stored_tier TEXT, total BIGINT)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(17996, hashtext(p_operator));
    active := (SELECT count(*) FROM fleet_tasks
                WHERE operator_id = p_operator AND status = ANY(p_statuses));
    queued := (SELECT count(*) FROM fleet_spawn_queue WHERE operator_id = p_operator);
    stored_tier := (SELECT c.tier FROM fleet_config c WHERE c.operator_id = p_operator);
    IF p_global THEN
        PERFORM pg_advisory_xact_lock(17997, 0);
        total := fleet_active_total(p_statuses);
    END IF;
    RETURN NEXT;
END;
$$;

GRANT EXECUTE ON FUNCTION fleet_admission_state(TEXT, TEXT[], BOOLEAN) TO fleet_engine;
