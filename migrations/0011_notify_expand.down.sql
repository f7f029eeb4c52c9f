-- Reverses 0011_notify_expand. Delivery records without a task are deleted (the old schema
-- needs one).
-- The tables FORCE row-level security, also for their owner: see every row (this transaction only).
SELECT set_config('app.is_admin', 'true', true);

DROP TABLE IF EXISTS fleet_notify_channels;

DROP POLICY IF EXISTS fleet_notifications_tenant ON fleet_notifications;
DROP TRIGGER IF EXISTS fleet_notifications_updated_at ON fleet_notifications;
DROP INDEX IF EXISTS fleet_notifications_dead_idx;
DROP INDEX IF EXISTS fleet_notifications_outbox_channel;
DELETE FROM fleet_notifications WHERE task_id IS NULL OR channel NOT IN ('discord', 'telegram', 'cli');
ALTER TABLE fleet_notifications
    DROP CONSTRAINT valid_channel,
    ADD CONSTRAINT valid_channel CHECK (channel IN ('discord', 'telegram', 'cli')),
    DROP CONSTRAINT fleet_notifications_task_id_fkey,
    ADD CONSTRAINT fleet_notifications_task_id_fkey FOREIGN KEY (task_id)
        REFERENCES fleet_tasks (id) ON DELETE CASCADE,
    ALTER COLUMN task_id SET NOT NULL,
    DROP CONSTRAINT IF EXISTS valid_notification_operator_id,
    DROP COLUMN IF EXISTS updated_at,
    DROP COLUMN IF EXISTS dead_at,
    DROP COLUMN IF EXISTS next_attempt_at,
    DROP COLUMN IF EXISTS last_status,
    DROP COLUMN IF EXISTS event_type,
    DROP COLUMN IF EXISTS operator_id,
    DROP COLUMN IF EXISTS outbox_id;
CREATE POLICY fleet_notifications_tenant ON fleet_notifications
    USING (EXISTS (SELECT 1 FROM fleet_tasks t WHERE t.id = fleet_notifications.task_id))
    WITH CHECK (EXISTS (SELECT 1 FROM fleet_tasks t WHERE t.id = fleet_notifications.task_id));

DROP TRIGGER IF EXISTS fleet_outbox_wake ON fleet_outbox;
DROP FUNCTION IF EXISTS fleet_outbox_wake();
DROP INDEX IF EXISTS fleet_outbox_dead_idx;
DROP INDEX IF EXISTS fleet_outbox_unpublished_idx;
DROP INDEX IF EXISTS fleet_outbox_due_idx;
ALTER TABLE fleet_outbox
    DROP COLUMN IF EXISTS published_at,
    DROP COLUMN IF EXISTS dead_at,
    DROP COLUMN IF EXISTS locked_until,
    DROP COLUMN IF EXISTS locked_by,
    DROP COLUMN IF EXISTS next_attempt_at;
