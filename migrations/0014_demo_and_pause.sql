-- 0013_demo_and_pause: tasks made by `fleet demo` are marked (the demo removes only its own),
-- and the fleet-wide switches (`fleet pause`: no admissions, retries or queued spawns while it
-- is set; running agents continue).
ALTER TABLE fleet_tasks ADD COLUMN demo BOOLEAN NOT NULL DEFAULT false;
-- Earlier demos' tasks, known by the idempotency keys `fleet demo` gave them.
UPDATE fleet_tasks SET demo = true
 WHERE idempotency_key ~ '^demo-[0-9]{8}T[0-9]{6}-[0-9]+$' AND agent_type = 'demo';

CREATE TABLE fleet_switches (
    name TEXT PRIMARY KEY,
    set_by TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    set_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT valid_switch_name CHECK (name IN ('paused')),
    CONSTRAINT valid_switch_set_by CHECK (set_by <> ''),
    CONSTRAINT valid_switch_reason CHECK (length(reason) <= 500)
);

-- Everyone sees the switches (they bind every operator); only an admin flips them.
ALTER TABLE fleet_switches ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_switches FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_switches_read ON fleet_switches FOR SELECT USING (true);
CREATE POLICY fleet_switches_admin_insert ON fleet_switches FOR INSERT
    WITH CHECK (current_setting('app.is_admin', true) = 'true');
CREATE POLICY fleet_switches_admin_update ON fleet_switches FOR UPDATE
    USING (current_setting('app.is_admin', true) = 'true')
    WITH CHECK (current_setting('app.is_admin', true) = 'true');
CREATE POLICY fleet_switches_admin_delete ON fleet_switches FOR DELETE
    USING (current_setting('app.is_admin', true) = 'true');

GRANT SELECT, INSERT, UPDATE, DELETE ON fleet_switches TO fleet_engine;
